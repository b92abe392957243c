//! VAE: original `first_stage_model.*` names (ldm `Encoder`/`Decoder` of
//! `autoencoder.py`) to diffusers `AutoencoderKL` names, following
//! `convert_ldm_vae_checkpoint` in diffusers `loaders/single_file_utils.py`,
//! and the config read back from the shapes (what
//! `create_vae_diffusers_config_from_ldm` reads from the YAML `ddconfig`).
//!
//! ldm names: `{encoder,decoder}.{conv_in,norm_out,conv_out}`,
//! `encoder.down.{i}.block.{j}` / `.downsample.conv`,
//! `decoder.up.{i}.block.{j}` / `.upsample.conv` (up blocks numbered from the
//! lowest resolution in reverse: ldm `up.{n-1-i}` is diffusers
//! `up_blocks.{i}`), `mid.block_{1,2}`, `mid.attn_1.{norm,q,k,v,proj_out}`
//! (1x1 convolutions, reshaped to the Linear weights diffusers uses:
//! `conv_attn_to_linear`). Resnets rename `nin_shortcut` to `conv_shortcut`.
//! The VQ autoencoder's codebook `quantize.embedding.weight` keeps its name
//! (diffusers `VQModel`).
use super::keys::{indexed, indices, Shapes};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use tch::Tensor;

pub const PREFIX: &str = "first_stage_model.";

pub struct VaeConversion {
    pub tensors: BTreeMap<String, Tensor>,
    pub origin: BTreeMap<String, String>,
    pub unrecognised: Vec<String>,
}

fn param(rest: &str) -> bool {
    rest == "weight" || rest == "bias"
}

fn resnet_part(rest: &str) -> Option<String> {
    let (layer, p) = rest.split_once('.')?;
    let layer = match layer {
        "norm1" | "conv1" | "norm2" | "conv2" => layer,
        "nin_shortcut" => "conv_shortcut",
        _ => return None,
    };
    param(p).then(|| format!("{layer}.{p}"))
}

/// Mid-block attention: (diffusers name, whether the weight is a conv to
/// flatten to a Linear weight).
fn attention_part(rest: &str) -> Option<(String, bool)> {
    let (layer, p) = rest.split_once('.')?;
    let layer = match layer {
        "norm" => "group_norm",
        "q" => "to_q",
        "k" => "to_k",
        "v" => "to_v",
        "proj_out" => "to_out.0",
        _ => return None,
    };
    param(p).then(|| {
        (
            format!("{layer}.{p}"),
            layer != "group_norm" && p == "weight",
        )
    })
}

fn mid_part(rest: &str) -> Option<(String, bool)> {
    if let Some(r) = rest.strip_prefix("block_1.") {
        return resnet_part(r).map(|r| (format!("mid_block.resnets.0.{r}"), false));
    }
    if let Some(r) = rest.strip_prefix("block_2.") {
        return resnet_part(r).map(|r| (format!("mid_block.resnets.1.{r}"), false));
    }
    let (name, linear) = attention_part(rest.strip_prefix("attn_1.")?)?;
    Some((format!("mid_block.attentions.0.{name}"), linear))
}

/// The diffusers name of an original VAE key (prefix removed), whether it is
/// an attention conv weight to flatten; `up_blocks` = number of decoder up
/// blocks.
fn diffusers_name(key: &str, up_blocks: usize) -> Option<(String, bool)> {
    for (old, new) in [
        ("quant_conv.", "quant_conv."),
        ("post_quant_conv.", "post_quant_conv."),
    ] {
        if let Some(p) = key.strip_prefix(old) {
            return param(p).then(|| (format!("{new}{p}"), false));
        }
    }
    // VQModel's codebook (taming `VectorQuantizer2.embedding`), same name.
    if key == "quantize.embedding.weight" {
        return Some((key.to_string(), false));
    }
    let (part, rest) = key.split_once('.')?;
    if part != "encoder" && part != "decoder" {
        return None;
    }
    let plain = |s: String| Some((format!("{part}.{s}"), false));
    for (old, new) in [
        ("conv_in.", "conv_in."),
        ("conv_out.", "conv_out."),
        ("norm_out.", "conv_norm_out."),
    ] {
        if let Some(p) = rest.strip_prefix(old) {
            return if param(p) {
                plain(format!("{new}{p}"))
            } else {
                None
            };
        }
    }
    if let Some(r) = rest.strip_prefix("mid.") {
        let (name, linear) = mid_part(r)?;
        return Some((format!("{part}.{name}"), linear));
    }
    if part == "encoder" {
        let (i, r) = indexed(rest, "down.")?;
        if let Some(p) = r.strip_prefix("downsample.conv.") {
            return if param(p) {
                plain(format!("down_blocks.{i}.downsamplers.0.conv.{p}"))
            } else {
                None
            };
        }
        let (j, r) = indexed(r, "block.")?;
        return plain(format!("down_blocks.{i}.resnets.{j}.{}", resnet_part(r)?));
    }
    let (i, r) = indexed(rest, "up.")?;
    let b = up_blocks.checked_sub(1 + i)?;
    if let Some(p) = r.strip_prefix("upsample.conv.") {
        return if param(p) {
            plain(format!("up_blocks.{b}.upsamplers.0.conv.{p}"))
        } else {
            None
        };
    }
    let (j, r) = indexed(r, "block.")?;
    plain(format!("up_blocks.{b}.resnets.{j}.{}", resnet_part(r)?))
}

/// `convert_ldm_vae_checkpoint` (with `conv_attn_to_linear`) on the tensors
/// of `first_stage_model.*` (prefix removed).
pub fn convert(ldm: BTreeMap<String, Tensor>) -> VaeConversion {
    let up_blocks = indices(ldm.keys(), "decoder.up.")
        .last()
        .map_or(0, |n| n + 1);
    let mut out = VaeConversion {
        tensors: BTreeMap::new(),
        origin: BTreeMap::new(),
        unrecognised: Vec::new(),
    };
    for (key, tensor) in ldm {
        match diffusers_name(&key, up_blocks) {
            Some((name, linear)) => {
                // [C, C, 1, 1] -> [C, C] (`[:, :, 0, 0]`; `[:, :, 0]` for 3-d).
                let tensor = match (linear, tensor.dim()) {
                    (true, 4) => tensor.select(3, 0).select(2, 0),
                    (true, 3) => tensor.select(2, 0),
                    _ => tensor,
                };
                out.origin.insert(name.clone(), format!("{PREFIX}{key}"));
                out.tensors.insert(name, tensor);
            }
            None => out.unrecognised.push(format!("{PREFIX}{key}")),
        }
    }
    out
}

/// The config fields the converted shapes determine.
pub fn infer_config(c: &VaeConversion) -> Result<Map<String, Value>, String> {
    let origin = |name: &str| {
        c.origin
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("VAE tensor {name}"))
    };
    let s = Shapes {
        tensors: &c.tensors,
        original: &origin,
    };
    let blocks = indices(c.tensors.keys(), "encoder.down_blocks.");
    let up = indices(c.tensors.keys(), "decoder.up_blocks.");
    if blocks.is_empty() || blocks.len() != up.len() || !super::keys::is_contiguous(&blocks) {
        return Err(format!(
            "VAE block structure is inconsistent: encoder down blocks {blocks:?}, decoder up blocks {up:?}"
        ));
    }
    let layers = indices(c.tensors.keys(), "encoder.down_blocks.0.resnets.").len();
    let mut errors = Vec::new();
    let mut ok = |r: Result<Vec<i64>, String>| r.map_err(|e| errors.push(e)).unwrap_or_default();
    let conv_in = ok(s.get("encoder.conv_in.weight", 4, "in_channels"));
    let conv_out = ok(s.get("decoder.conv_out.weight", 4, "out_channels"));
    let latent = ok(s.get("decoder.conv_in.weight", 4, "latent_channels"));
    let channels: Vec<i64> = blocks
        .iter()
        .map(|b| {
            let shape = ok(s.get(
                &format!("encoder.down_blocks.{b}.resnets.0.conv1.weight"),
                4,
                "block_out_channels",
            ));
            shape.first().copied().unwrap_or(0)
        })
        .collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let n = channels.len();
    let mut m = Map::new();
    m.insert("in_channels".into(), json!(conv_in[1]));
    m.insert("out_channels".into(), json!(conv_out[0]));
    m.insert("latent_channels".into(), json!(latent[1]));
    m.insert("block_out_channels".into(), json!(channels));
    m.insert("layers_per_block".into(), json!(layers));
    m.insert(
        "down_block_types".into(),
        json!(vec!["DownEncoderBlock2D"; n]),
    );
    m.insert("up_block_types".into(), json!(vec!["UpDecoderBlock2D"; n]));
    m.insert(
        "use_quant_conv".into(),
        json!(c.tensors.contains_key("quant_conv.weight")),
    );
    m.insert(
        "use_post_quant_conv".into(),
        json!(c.tensors.contains_key("post_quant_conv.weight")),
    );
    let attention = c
        .tensors
        .keys()
        .any(|k| k.starts_with("decoder.mid_block.attentions."));
    m.insert("mid_block_add_attention".into(), json!(attention));
    Ok(m)
}

/// diffusers' `AutoencoderKL` config of SD 1.x / 2.x for what the weights
/// cannot tell: 32 groups, `scaling_factor` 0.18215
/// (`LDM_VAE_DEFAULT_SCALING_FACTOR`), sample_size 512 / 768
/// (`DIFFUSERS_TO_LDM_DEFAULT_IMAGE_SIZE_MAP`).
pub fn defaults(sd2: bool) -> (Map<String, Value>, Vec<String>) {
    let sample_size = if sd2 { 768 } else { 512 };
    let v = json!({
        "_class_name": "AutoencoderKL", "act_fn": "silu", "force_upcast": true, "latents_mean": null,
        "latents_std": null, "norm_num_groups": 32, "sample_size": sample_size, "scaling_factor": 0.18215,
        "shift_factor": null
    });
    let assumed = vec![
        "norm_num_groups = 32".to_string(),
        "scaling_factor = 0.18215".to_string(),
        format!("sample_size = {sample_size}"),
    ];
    (v.as_object().cloned().unwrap_or_default(), assumed)
}
