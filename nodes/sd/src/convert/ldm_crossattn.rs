//! The YAML side of CompVis' cross-attention LDMs, the text-to-image model
//! (`txt2img-1p4B-eval.yaml`: a BERTEmbedder) and the ImageNet model
//! (`cin256-v2.yaml`: a ClassEmbedder): the cond stage's parameters and the
//! diffusers `UNet2DConditionModel` config of their spatial-transformer
//! `openaimodel.UNetModel`.
use super::ldm::Conditioning;
use super::ldm_bert::BertArch;
use super::yaml::{boolean, get, int, ints, object, target};
use serde_json::{json, Map, Value};

pub const BERT_EMBEDDER: &str = "ldm.modules.encoders.modules.BERTEmbedder";

pub const CLASS_EMBEDDER: &str = "ldm.modules.encoders.modules.ClassEmbedder";

/// `cond_stage_config` of a `crossattn` model: a BERTEmbedder (defaults
/// vocab_size 30522, max_seq_len 77) or a ClassEmbedder (default n_classes
/// 1000).
pub fn cond_stage(params: &Map<String, Value>) -> Result<Conditioning, String> {
    let (t, p) = target(
        object(params, "cond_stage_config", "model.params")?,
        "cond_stage_config",
    )?;
    let at = "cond_stage_config.params";
    match t {
        BERT_EMBEDDER => Ok(Conditioning::Text(BertArch {
            n_embed: int(&p, "n_embed", None, at)?,
            n_layer: int(&p, "n_layer", None, at)?,
            vocab_size: int(&p, "vocab_size", Some(30522), at)?,
            max_seq_len: int(&p, "max_seq_len", Some(77), at)?,
        })),
        CLASS_EMBEDDER => Ok(Conditioning::ClassEmbedder {
            n_classes: int(&p, "n_classes", Some(1000), at)?,
            embed_dim: int(&p, "embed_dim", None, at)?,
        }),
        t => Err(format!(
            "cond_stage_config.target `{t}`: with conditioning_key crossattn, .ckpt loading builds \
             {BERT_EMBEDDER} (text to image) and {CLASS_EMBEDDER} (the ImageNet model)"
        )),
    }
}

/// The diffusers config fields `unet_config.params` fixes, as
/// `openaimodel.UNetModel.__init__` builds the network: level l has
/// `model_channels × channel_mult[l]` channels and cross-attention when
/// its downsampling factor 2^l is in `attention_resolutions` (the up path
/// mirrors it); the middle block always has it. Heads per level are
/// `num_heads`, or channels / `num_head_channels` when that is set (with or
/// without `legacy`, the spatial transformer gets that many heads);
/// diffusers names the head count `attention_head_dim`.
pub fn unet_reference(u: &Map<String, Value>) -> Result<Value, String> {
    let at = "unet_config.params";
    if !boolean(u, "use_spatial_transformer", false, at)? {
        return Err(format!(
            "{at}.use_spatial_transformer is not set: a crossattn model needs the spatial transformer"
        ));
    }
    for k in ["num_classes", "n_embed"] {
        if get(u, k).is_some() {
            return Err(format!(
                "{at}.{k} is not built together with the spatial transformer"
            ));
        }
    }
    if int(u, "dims", Some(2), at)? != 2 || !boolean(u, "conv_resample", true, at)? {
        return Err(format!(
            "{at}: only dims 2 with conv_resample true are built"
        ));
    }
    let model_channels = int(u, "model_channels", None, at)?;
    let channels: Vec<i64> = ints(u, "channel_mult", &[1, 2, 4, 8], at)?
        .iter()
        .map(|m| m * model_channels)
        .collect();
    let attention = ints(u, "attention_resolutions", &[], at)?;
    let with_attention: Vec<bool> = (0..channels.len())
        .map(|level| attention.contains(&(1i64 << level)))
        .collect();
    let num_heads = int(u, "num_heads", Some(-1), at)?;
    let num_head_channels = int(u, "num_head_channels", Some(-1), at)?;
    let heads = channels
        .iter()
        .map(|&ch| match (num_head_channels, num_heads) {
            (-1, -1) => Err(format!("{at}: set num_heads or num_head_channels")),
            (-1, n) => Ok(n),
            (c, _) if c > 0 && ch % c == 0 => Ok(ch / c),
            (c, _) => Err(format!(
                "{at}.num_head_channels {c} does not divide the {ch} channels of a level"
            )),
        })
        .collect::<Result<Vec<i64>, String>>()?;
    let down: Vec<&str> = with_attention
        .iter()
        .map(|&a| match a {
            true => "CrossAttnDownBlock2D",
            false => "DownBlock2D",
        })
        .collect();
    let up: Vec<&str> = with_attention
        .iter()
        .rev()
        .map(|&a| match a {
            true => "CrossAttnUpBlock2D",
            false => "UpBlock2D",
        })
        .collect();
    let context_dim = match get(u, "context_dim") {
        Some(Value::Array(a)) if a.len() == 1 => a[0].clone(),
        Some(v) if v.is_i64() => v.clone(),
        _ => {
            return Err(format!(
                "{at}.context_dim: expected the text encoder's width"
            ))
        }
    };
    Ok(json!({
        "sample_size": int(u, "image_size", None, at)?,
        "in_channels": int(u, "in_channels", None, at)?,
        "out_channels": int(u, "out_channels", None, at)?,
        "block_out_channels": channels,
        "layers_per_block": int(u, "num_res_blocks", None, at)?,
        "down_block_types": down,
        "up_block_types": up,
        "attention_head_dim": heads,
        "transformer_layers_per_block": int(u, "transformer_depth", Some(1), at)?,
        "cross_attention_dim": context_dim,
        "use_linear_projection": boolean(u, "use_linear_in_transformer", false, at)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// txt2img-1p4B-eval.yaml's unet_config.params.
    fn txt2img() -> Map<String, Value> {
        serde_json::from_str(
            r#"{"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
                "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
                "num_heads": 8, "use_spatial_transformer": true, "transformer_depth": 1,
                "context_dim": 1280, "use_checkpoint": true, "legacy": false}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_papers_text_to_image_unet_is_the_diffusers_one() {
        // CompVis/ldm-text2im-large-256's unet/config.json, field by field.
        let r = unet_reference(&txt2img()).unwrap();
        assert_eq!(r["block_out_channels"], json!([320, 640, 1280, 1280]));
        assert_eq!(
            r["down_block_types"],
            json!([
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D"
            ])
        );
        assert_eq!(
            r["up_block_types"],
            json!([
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D"
            ])
        );
        assert_eq!(r["attention_head_dim"], json!([8, 8, 8, 8]));
        assert_eq!(
            (r["cross_attention_dim"].as_i64(), r["sample_size"].as_i64()),
            (Some(1280), Some(32))
        );
        let mut per_channel = txt2img();
        per_channel.remove("num_heads");
        per_channel.insert("num_head_channels".into(), json!(64));
        let r = unet_reference(&per_channel).unwrap();
        assert_eq!(r["attention_head_dim"], json!([5, 10, 20, 20]));
        let mut classes = txt2img();
        classes.insert("num_classes".into(), json!(1000));
        assert!(unet_reference(&classes)
            .unwrap_err()
            .contains("num_classes"));
    }
}
