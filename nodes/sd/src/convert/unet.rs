//! U-Net: original `model.diffusion_model.*` names to diffusers
//! `UNet2DConditionModel` names, following `convert_ldm_unet_checkpoint`
//! in diffusers `loaders/single_file_utils.py`, and the architecture read
//! back from the converted shapes (what `create_unet_diffusers_config_from_ldm`
//! reads from the original YAML config).
//!
//! Layout of the original `UNetModel` (ldm `openaimodel.py`), with
//! `L = layers_per_block`: `input_blocks.0.0` is conv_in; then per down
//! block `L` entries `input_blocks.i` = [resnet (`.0`), attention (`.1`,
//! cross-attention blocks only)], followed (except in the last block) by one
//! entry holding the downsampler (`.0.op`). `middle_block.{0,1,2}` = resnet,
//! attention, resnet. Per up block `L + 1` entries `output_blocks.i` =
//! [resnet, attention?, upsampler (`.1.conv` or `.2.conv`) on the last one].
//! The attention sub-modules (SpatialTransformer) already use diffusers'
//! `Transformer2DModel` names and keep them.
use super::keys::{indexed, indices, is_contiguous, Shapes};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use tch::Tensor;

pub const PREFIX: &str = "model.diffusion_model.";

/// The converted U-Net with what the conversion learnt on the way.
pub struct UnetConversion {
    pub tensors: BTreeMap<String, Tensor>,
    /// diffusers name -> original name.
    pub origin: BTreeMap<String, String>,
    /// Original names this conversion does not know.
    pub unrecognised: Vec<String>,
    pub layers_per_block: usize,
    pub num_blocks: usize,
}

/// ResnetBlock parts: ldm `ResBlock` -> diffusers `ResnetBlock2D`
/// (`update_unet_resnet_ldm_to_diffusers`).
const RESNET: [(&str, &str); 6] = [
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("emb_layers.1.", "time_emb_proj."),
    ("skip_connection.", "conv_shortcut."),
];

fn resnet_part(rest: &str) -> Option<String> {
    RESNET
        .iter()
        .find_map(|(old, new)| rest.strip_prefix(old).map(|t| format!("{new}{t}")))
}

/// The inverse of [`resnet_part`].
fn original_resnet_part(rest: &str) -> Option<String> {
    RESNET
        .iter()
        .find_map(|(old, new)| rest.strip_prefix(new).map(|t| format!("{old}{t}")))
}

fn param(rest: &str) -> bool {
    rest == "weight" || rest == "bias"
}

/// `layers_per_block` and the number of blocks from the block indices: the
/// first downsampler sits in `input_blocks.{L + 1}`.
fn block_structure(keys: &[&String]) -> Result<(usize, usize), String> {
    let inputs = indices(keys.iter().copied(), "input_blocks.");
    let outputs = indices(keys.iter().copied(), "output_blocks.");
    if inputs.len() < 2 || !is_contiguous(&inputs) || !is_contiguous(&outputs) {
        return Err(format!(
            "U-Net block indices are not 0..n: input_blocks {inputs:?}, output_blocks {outputs:?} (truncated checkpoint?)"
        ));
    }
    let first_down = inputs.iter().find(|&&i| {
        keys.iter()
            .any(|k| **k == format!("input_blocks.{i}.0.op.weight"))
    });
    let per_block = match first_down {
        Some(&i) if i >= 2 => i - 1,
        Some(&i) => {
            return Err(format!(
                "U-Net downsampler in input_blocks.{i}: no resnet before it"
            ))
        }
        None => inputs.len() - 1,
    };
    let blocks = inputs.len() / (per_block + 1);
    if inputs.len() % (per_block + 1) != 0 || outputs.len() != blocks * (per_block + 1) {
        return Err(format!(
            "U-Net block structure is inconsistent: {} input_blocks and {} output_blocks for {per_block} layers per \
             block (expected {} and {}; truncated checkpoint?)",
            inputs.len(),
            outputs.len(),
            blocks * (per_block + 1),
            blocks * (per_block + 1)
        ));
    }
    Ok((per_block, blocks))
}

/// The diffusers name of one original U-Net key (without the prefix).
fn diffusers_name(key: &str, per_block: usize) -> Option<String> {
    for (old, new) in TOP {
        if let Some(p) = key.strip_prefix(old) {
            return param(p).then(|| format!("{new}{p}"));
        }
    }
    block_diffusers_name(key, per_block)
}

/// Top-level modules: original prefix, diffusers prefix.
const TOP: [(&str, &str); 7] = [
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("input_blocks.0.0.", "conv_in."),
    ("out.0.", "conv_norm_out."),
    ("out.2.", "conv_out."),
    // SDXL's text_time added conditioning (`add_embedding` in diffusers).
    ("label_emb.0.0.", "add_embedding.linear_1."),
    ("label_emb.0.2.", "add_embedding.linear_2."),
];

fn block_diffusers_name(key: &str, per_block: usize) -> Option<String> {
    if let Some((i, rest)) = indexed(key, "input_blocks.") {
        let (b, l) = (
            (i.checked_sub(1)?) / (per_block + 1),
            (i - 1) % (per_block + 1),
        );
        if let Some(p) = rest.strip_prefix("0.op.") {
            return param(p).then(|| format!("down_blocks.{b}.downsamplers.0.conv.{p}"));
        }
        if let Some(r) = rest.strip_prefix("0.") {
            return resnet_part(r).map(|r| format!("down_blocks.{b}.resnets.{l}.{r}"));
        }
        return rest
            .strip_prefix("1.")
            .map(|r| format!("down_blocks.{b}.attentions.{l}.{r}"));
    }
    if let Some((k, rest)) = indexed(key, "middle_block.") {
        return match k {
            0 | 2 => resnet_part(rest).map(|r| format!("mid_block.resnets.{}.{r}", k / 2)),
            1 => Some(format!("mid_block.attentions.0.{rest}")),
            _ => None,
        };
    }
    if let Some((i, rest)) = indexed(key, "output_blocks.") {
        let (b, l) = (i / (per_block + 1), i % (per_block + 1));
        if let Some(r) = rest.strip_prefix("0.") {
            return resnet_part(r).map(|r| format!("up_blocks.{b}.resnets.{l}.{r}"));
        }
        for upsampler in ["1.conv.", "2.conv."] {
            if let Some(p) = rest.strip_prefix(upsampler) {
                return param(p).then(|| format!("up_blocks.{b}.upsamplers.0.conv.{p}"));
            }
        }
        return rest
            .strip_prefix("1.")
            .map(|r| format!("up_blocks.{b}.attentions.{l}.{r}"));
    }
    None
}

/// `convert_ldm_unet_checkpoint` on the tensors of `model.diffusion_model.*`
/// (prefix already removed).
pub fn convert(ldm: BTreeMap<String, Tensor>) -> Result<UnetConversion, String> {
    let keys: Vec<&String> = ldm.keys().collect();
    let (layers_per_block, num_blocks) = block_structure(&keys)?;
    let mut out = UnetConversion {
        tensors: BTreeMap::new(),
        origin: BTreeMap::new(),
        unrecognised: Vec::new(),
        layers_per_block,
        num_blocks,
    };
    for (key, tensor) in ldm {
        match diffusers_name(&key, layers_per_block) {
            Some(name) => {
                out.origin.insert(name.clone(), format!("{PREFIX}{key}"));
                out.tensors.insert(name, tensor);
            }
            None => out.unrecognised.push(format!("{PREFIX}{key}")),
        }
    }
    Ok(out)
}

/// The original (ldm / sgm `UNetModel`) name of each diffusers U-Net
/// parameter in `names` that has one: the inverse of
/// `convert_ldm_unet_checkpoint`'s renaming, for LoRA files that name the
/// U-Net's modules by original paths (kohya's SDXL files, read by ComfyUI's
/// `comfy/lora.py` `model_lora_keys_unet` and diffusers'
/// `_maybe_map_sgm_blocks_to_diffusers`). The block structure is read from
/// the names (resnets per down block; which up blocks have attention, for
/// the upsampler's index); every result is checked by converting it back.
pub fn original_names<'a>(
    names: impl Iterator<Item = &'a str> + Clone,
) -> BTreeMap<String, String> {
    let owned: Vec<String> = names.clone().map(str::to_string).collect();
    let per_block = indices(
        owned
            .iter()
            .filter(|n| n.starts_with("down_blocks.0.resnets.")),
        "down_blocks.0.resnets.",
    )
    .len();
    let up_attention = |b: usize| {
        let prefix = format!("up_blocks.{b}.attentions.");
        owned.iter().any(|n| n.starts_with(&prefix))
    };
    let mut out = BTreeMap::new();
    for name in names {
        let Some(original) = original_name(name, per_block, &up_attention) else {
            continue;
        };
        if diffusers_name(&original, per_block).as_deref() == Some(name) {
            out.insert(name.to_string(), original);
        }
    }
    out
}

fn original_name(
    name: &str,
    per_block: usize,
    up_attention: &dyn Fn(usize) -> bool,
) -> Option<String> {
    for (old, new) in TOP {
        if let Some(p) = name.strip_prefix(new) {
            return Some(format!("{old}{p}"));
        }
    }
    let group = |rest: &str| -> Option<(String, usize, String)> {
        let (kind, tail) = rest.split_once('.')?;
        let (l, tail) = indexed(tail, "")?;
        Some((kind.to_string(), l, tail.to_string()))
    };
    if let Some((b, rest)) = indexed(name, "down_blocks.") {
        let (kind, l, tail) = group(rest)?;
        let i = 1 + b * (per_block + 1) + l;
        return match kind.as_str() {
            "resnets" => original_resnet_part(&tail).map(|r| format!("input_blocks.{i}.0.{r}")),
            "attentions" => Some(format!("input_blocks.{i}.1.{tail}")),
            "downsamplers" => tail
                .strip_prefix("conv.")
                .map(|p| format!("input_blocks.{}.0.op.{p}", (b + 1) * (per_block + 1))),
            _ => None,
        };
    }
    if let Some(rest) = name.strip_prefix("mid_block.") {
        let (kind, l, tail) = group(rest)?;
        return match kind.as_str() {
            "resnets" => original_resnet_part(&tail).map(|r| format!("middle_block.{}.{r}", 2 * l)),
            "attentions" => Some(format!("middle_block.1.{tail}")),
            _ => None,
        };
    }
    if let Some((b, rest)) = indexed(name, "up_blocks.") {
        let (kind, l, tail) = group(rest)?;
        let i = b * (per_block + 1) + l;
        return match kind.as_str() {
            "resnets" => original_resnet_part(&tail).map(|r| format!("output_blocks.{i}.0.{r}")),
            "attentions" => Some(format!("output_blocks.{i}.1.{tail}")),
            "upsamplers" => tail.strip_prefix("conv.").map(|p| {
                let at = if up_attention(b) { 2 } else { 1 };
                format!("output_blocks.{}.{at}.conv.{p}", i + per_block)
            }),
            _ => None,
        };
    }
    None
}

/// The config fields the converted shapes determine.
pub fn infer_config(c: &UnetConversion) -> Result<Map<String, Value>, String> {
    let origin = |name: &str| {
        c.origin
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("U-Net tensor {name}"))
    };
    let s = Shapes {
        tensors: &c.tensors,
        original: &origin,
    };
    let mut errors = Vec::new();
    let mut ok = |r: Result<Vec<i64>, String>| r.map_err(|e| errors.push(e)).unwrap_or_default();
    let conv_in = ok(s.get("conv_in.weight", 4, "in_channels"));
    let conv_out = ok(s.get("conv_out.weight", 4, "out_channels"));
    let mut channels = Vec::new();
    let (mut down_types, mut up_types, mut depth) = (Vec::new(), Vec::new(), Vec::new());
    let has = |prefix: &str| c.tensors.keys().any(|k| k.starts_with(prefix));
    for b in 0..c.num_blocks {
        let shape = ok(s.get(
            &format!("down_blocks.{b}.resnets.0.conv1.weight"),
            4,
            "block_out_channels",
        ));
        channels.push(shape.first().copied().unwrap_or(0));
        let cross = has(&format!("down_blocks.{b}.attentions."));
        down_types.push(if cross {
            "CrossAttnDownBlock2D"
        } else {
            "DownBlock2D"
        });
        let blocks = indices(
            c.tensors.keys(),
            &format!("down_blocks.{b}.attentions.0.transformer_blocks."),
        );
        depth.push(if cross { blocks.len().max(1) } else { 1 });
        let up_cross = has(&format!("up_blocks.{b}.attentions."));
        up_types.push(if up_cross {
            "CrossAttnUpBlock2D"
        } else {
            "UpBlock2D"
        });
    }
    let to_k = c
        .tensors
        .iter()
        .find(|(k, _)| k.ends_with(".attn2.to_k.weight"));
    let proj_in = c
        .tensors
        .iter()
        .find(|(k, _)| k.ends_with(".proj_in.weight"));
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let depth: Value = if depth.iter().all(|&d| d == depth[0]) {
        json!(depth[0])
    } else {
        json!(depth)
    };
    let mut m = Map::new();
    m.insert("in_channels".into(), json!(conv_in[1]));
    m.insert("out_channels".into(), json!(conv_out[0]));
    m.insert("block_out_channels".into(), json!(channels));
    m.insert("layers_per_block".into(), json!(c.layers_per_block));
    m.insert("down_block_types".into(), json!(down_types));
    m.insert("up_block_types".into(), json!(up_types));
    m.insert("transformer_layers_per_block".into(), depth);
    if let Some((_, t)) = to_k {
        m.insert("cross_attention_dim".into(), json!(t.size()[1]));
    }
    if let Some((_, t)) = proj_in {
        m.insert("use_linear_projection".into(), json!(t.dim() == 2));
    }
    Ok(m)
}

/// The diffusers 0.42 `UNet2DConditionModel` config of SD 1.x / 2.x for the
/// fields the weights cannot tell (what `from_single_file` takes from the
/// `stable-diffusion-v1-5` / `stable-diffusion-2-1` configs): 32 groups,
/// sample_size 64 (512 px) / 96 (768 px), and the head rule of
/// `create_unet_diffusers_config_from_ldm`: SD1 `num_heads: 8`, SD2
/// `num_head_channels: 64` (heads = channels / 64 per block).
pub fn defaults(
    sd2: bool,
    block_out_channels: &[i64],
    linear: bool,
) -> (Map<String, Value>, Vec<String>) {
    let mut assumed = vec!["norm_num_groups = 32".to_string()];
    let head_dim: Value = match linear {
        true if block_out_channels.iter().all(|&c| c % 64 == 0 && c > 0) => {
            json!(block_out_channels
                .iter()
                .map(|c| c / 64)
                .collect::<Vec<_>>())
        }
        true => {
            assumed.push("attention_head_dim = 8 (channels are not multiples of 64: give a reference config)".into());
            json!(8)
        }
        false => json!(8),
    };
    if !assumed.iter().any(|a| a.starts_with("attention_head_dim")) {
        assumed.push(format!("attention_head_dim = {head_dim}"));
    }
    let sample_size = if sd2 { 96 } else { 64 };
    assumed.push(format!("sample_size = {sample_size}"));
    assumed.push("upcast_attention = false".into());
    let v = json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu", "addition_embed_type": null, "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": null, "attention_head_dim": head_dim, "attention_type": "default",
        "center_input_sample": false, "class_embed_type": null, "class_embeddings_concat": false,
        "conv_in_kernel": 3, "conv_out_kernel": 3, "cross_attention_norm": null, "downsample_padding": 1,
        "dropout": 0.0, "dual_cross_attention": false, "encoder_hid_dim": null, "encoder_hid_dim_type": null,
        "flip_sin_to_cos": true, "freq_shift": 0, "mid_block_only_cross_attention": null,
        "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
        "norm_num_groups": 32, "num_attention_heads": null, "num_class_embeds": null,
        "only_cross_attention": false, "projection_class_embeddings_input_dim": null,
        "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": false, "resnet_time_scale_shift": "default",
        "reverse_transformer_layers_per_block": null, "sample_size": sample_size, "time_cond_proj_dim": null,
        "time_embedding_act_fn": null, "time_embedding_dim": null, "time_embedding_type": "positional",
        "timestep_post_act": null, "upcast_attention": false
    });
    (v.as_object().cloned().unwrap_or_default(), assumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_names_invert_the_conversion() {
        // SDXL's layout: 2 resnets per down block, no attention in the first
        // down block nor the last up block.
        let names = [
            "conv_in.weight",
            "add_embedding.linear_2.weight",
            "down_blocks.0.resnets.0.conv1.weight",
            "down_blocks.0.resnets.1.time_emb_proj.weight",
            "down_blocks.0.downsamplers.0.conv.weight",
            "down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q.weight",
            "mid_block.resnets.1.conv_shortcut.weight",
            "mid_block.attentions.0.proj_in.weight",
            "up_blocks.0.attentions.2.proj_out.weight",
            "up_blocks.0.upsamplers.0.conv.weight",
            "up_blocks.2.resnets.2.conv2.weight",
            "up_blocks.1.upsamplers.0.conv.weight",
            "up_blocks.1.attentions.0.proj_out.weight",
            "not_a_unet.weight",
        ];
        let o = original_names(names.iter().copied());
        let get = |n: &str| o.get(n).map(String::as_str);
        assert_eq!(get("conv_in.weight"), Some("input_blocks.0.0.weight"));
        assert_eq!(
            get("add_embedding.linear_2.weight"),
            Some("label_emb.0.2.weight")
        );
        assert_eq!(
            get("down_blocks.0.resnets.1.time_emb_proj.weight"),
            Some("input_blocks.2.0.emb_layers.1.weight")
        );
        assert_eq!(
            get("down_blocks.0.downsamplers.0.conv.weight"),
            Some("input_blocks.3.0.op.weight")
        );
        assert_eq!(
            get("down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q.weight"),
            Some("input_blocks.5.1.transformer_blocks.0.attn1.to_q.weight")
        );
        assert_eq!(
            get("mid_block.resnets.1.conv_shortcut.weight"),
            Some("middle_block.2.skip_connection.weight")
        );
        assert_eq!(
            get("mid_block.attentions.0.proj_in.weight"),
            Some("middle_block.1.proj_in.weight")
        );
        assert_eq!(
            get("up_blocks.0.attentions.2.proj_out.weight"),
            Some("output_blocks.2.1.proj_out.weight")
        );
        assert_eq!(
            get("up_blocks.0.upsamplers.0.conv.weight"),
            Some("output_blocks.2.2.conv.weight")
        );
        assert_eq!(
            get("up_blocks.2.resnets.2.conv2.weight"),
            Some("output_blocks.8.0.out_layers.3.weight")
        );
        assert_eq!(get("not_a_unet.weight"), None);
    }
}
