//! Single-file Stable Diffusion checkpoints (the original CompVis /
//! Stability layout) split into diffusers-named components with inferred
//! configs, following diffusers `loaders/single_file_utils.py`.
//!
//! - [`file`]: reading `.safetensors`; pickles (`.ckpt`) are refused.
//! - [`ldm`]: CompVis latent-diffusion `.ckpt` files with their YAML (LoadLDM);
//!   [`ldm_crossattn`] and [`ldm_bert`] for the cross-attention models.
//! - [`unet`], [`vae`], [`clip`]: the key conversions and config inference.
//! - [`configs`]: defaults < reference config < inferred; scheduler config.
//! - [`keys`]: shared parsing helpers.
//!
//! **Family**: an OpenCLIP text encoder (`cond_stage_model.model.*`) means
//! SD 2.x, a Hugging Face CLIP one (`cond_stage_model.transformer.*`) SD 1.x.
//! diffusers looks at the cross-attention width (1024 for SD 2) instead; for
//! real checkpoints the two agree, and ours also holds for tiny test models.
//!
//! **Configs** are diffusers/transformers `config.json` objects. Fields the
//! shapes determine (channels, block types, layers, cross-attention width,
//! linear or conv projections, vocabulary, hidden and MLP sizes, ...) are
//! always inferred. The others (attention heads, norm groups, sample size,
//! activation, scaling factor) come from a [`ReferenceConfigs`] when given
//! (e.g. the configs of a diffusers folder of the same architecture), else
//! from the SD 1.x / 2.x values diffusers uses, which are listed in
//! [`SingleFileParts::assumed`]. Heads: SD 1 U-Net 8 (`num_heads: 8` of
//! `v1-inference.yaml`), SD 2 U-Net channels/64 per block
//! (`num_head_channels: 64`), text encoder hidden/64 (12 for ViT-L, 16 for
//! ViT-H). A reference that contradicts the shapes is an error.
//!
//! **Prediction type and scheduler**: SD 1.x epsilon; SD 2.x v_prediction,
//! diffusers' guess for SD 2 files (it only says epsilon when the pickle's
//! `global_step` is 875000, which .safetensors files do not carry; SD 2
//! *base* checkpoints therefore need `prediction_type: "epsilon"` passed).
//! The scheduler config is diffusers' `SCHEDULER_DEFAULT_CONFIG` (scaled_linear
//! 0.00085..0.012, 1000 steps, steps_offset 1, set_alpha_to_one false,
//! skip_prk_steps, leading) with clip_sample false, i.e. the SD 1.5 / 2.1
//! repository scheduler values. (diffusers' legacy path without an original
//! config, `_legacy_load_scheduler`, would use beta 0.02..0.085; not mirrored.)
//!
//! Modern diffusers `from_single_file` fetches these configs from the Hub
//! (`DIFFUSERS_DEFAULT_PIPELINE_PATHS`); here nothing is fetched: checked on
//! the key sets and shapes of SD 1.5 and SD 2.1 (random weights built by
//! diffusers, turned into the original layout), the inferred configs are the
//! repositories' except `upcast_attention`, which the weights cannot show
//! (SD 2.1's repository sets it, for fp16; false here, listed as assumed).
//!
//! Skipped on purpose (listed in [`SingleFileParts::ignored`]): the DDPM
//! buffers (`betas`, `alphas_cumprod`, ...), `logvar`, EMA copies
//! (`model_ema.*`; diffusers also takes the non-EMA weights by default),
//! `position_ids`, OpenCLIP's `text_projection`/`logit_scale`/`attn_mask` and
//! its last resblock (see [`clip`]). Any other key is an error.
pub mod clip;
pub mod configs;
pub mod file;
pub mod keys;
pub mod ldm;
pub mod ldm_bert;
pub mod ldm_crossattn;
pub mod sdxl;
pub mod unet;
pub mod vae;
pub mod yaml;

use configs::{merge, scheduler};
use keys::list;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tch::Tensor;

pub use configs::ReferenceConfigs;
pub use file::{check_safetensors, read_checkpoint};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    Sd1,
    Sd2,
}

/// One component: tensors by diffusers name (dtype as stored) and its
/// `config.json`.
pub struct Part {
    pub tensors: BTreeMap<String, Tensor>,
    pub config: Value,
}

pub struct SingleFileParts {
    pub family: ModelFamily,
    pub unet: Part,
    pub vae: Part,
    pub text_encoder: Part,
    pub scheduler_config: Value,
    pub prediction_type: String,
    /// Original keys skipped on purpose.
    pub ignored: Vec<String>,
    /// `component.field = value` for config fields neither inferable nor
    /// given by a reference config.
    pub assumed: Vec<String>,
}

/// Top-level keys of SD checkpoints that are not model weights.
pub(crate) const IGNORED_KEYS: [&str; 14] = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
    "lvlb_weights",
];

/// [`split_single_file_with`] without reference configs.
pub fn split_single_file(tensors: BTreeMap<String, Tensor>) -> Result<SingleFileParts, String> {
    split_single_file_with(tensors, &ReferenceConfigs::default())
}

fn strip(map: &mut BTreeMap<String, Tensor>, key: &str, prefix: &str, t: Tensor) {
    map.insert(key[prefix.len()..].to_string(), t);
}

/// Splits the tensors of a single-file SD 1.x / 2.x checkpoint into U-Net,
/// VAE and text encoder with diffusers names and configs. Fails listing
/// every unrecognised key and every structural problem at once.
pub fn split_single_file_with(
    tensors: BTreeMap<String, Tensor>,
    reference: &ReferenceConfigs,
) -> Result<SingleFileParts, String> {
    let (mut u, mut v, mut c, mut o) = (
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
    );
    let (mut ignored, mut unrecognised, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let mut sdxl = false;
    for (key, t) in tensors {
        if key.starts_with(unet::PREFIX) {
            strip(&mut u, &key, unet::PREFIX, t);
        } else if key.starts_with(vae::PREFIX) {
            strip(&mut v, &key, vae::PREFIX, t);
        } else if key.starts_with(clip::CLIP_PREFIX) {
            strip(&mut c, &key, clip::CLIP_PREFIX, t);
        } else if key.starts_with(clip::OPEN_CLIP_PREFIX) {
            strip(&mut o, &key, clip::OPEN_CLIP_PREFIX, t);
        } else if IGNORED_KEYS.contains(&key.as_str()) || key.starts_with("model_ema.") {
            ignored.push(key);
        } else {
            sdxl |= key.starts_with("conditioner.embedders.");
            unrecognised.push(key);
        }
    }
    if sdxl {
        return Err("this is an SDXL checkpoint (conditioner.embedders.*): only SD 1.x and 2.x are supported".into());
    }
    let family = if o.is_empty() {
        ModelFamily::Sd1
    } else {
        ModelFamily::Sd2
    };
    let sd2 = family == ModelFamily::Sd2;
    for (empty, what) in [
        (u.is_empty(), "U-Net (model.diffusion_model.*)"),
        (v.is_empty(), "VAE (first_stage_model.*)"),
    ] {
        if empty {
            errors.push(format!("no {what} in the checkpoint"));
        }
    }
    if c.is_empty() && o.is_empty() {
        errors.push(
            "no text encoder (cond_stage_model.transformer.* or cond_stage_model.model.*)".into(),
        );
    } else if !c.is_empty() && !o.is_empty() {
        errors.push(
            "two text encoders (cond_stage_model.transformer.* and cond_stage_model.model.*)"
                .into(),
        );
    }
    let unet = unet::convert(u).map_err(|e| errors.push(e)).ok();
    let vae = vae::convert(v);
    let text = if sd2 {
        clip::convert_open_clip(o)
    } else {
        clip::convert_clip(c)
    };
    unrecognised.extend(unet.iter().flat_map(|x| x.unrecognised.iter().cloned()));
    unrecognised.extend(vae.unrecognised.iter().cloned());
    unrecognised.extend(text.unrecognised.iter().cloned());
    ignored.extend(text.ignored.iter().cloned());
    if !unrecognised.is_empty() {
        unrecognised.sort();
        errors.push(format!(
            "unrecognised keys ({}): {}",
            unrecognised.len(),
            list(&unrecognised)
        ));
    }
    if !errors.is_empty() {
        return Err(format!(
            "not a Stable Diffusion 1.x/2.x single-file checkpoint: {}",
            errors.join("; ")
        ));
    }
    let unet = unet.expect("no error, so converted");

    let mut assumed = Vec::new();
    let unet_inferred = unet::infer_config(&unet)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let vae_inferred = vae::infer_config(&vae)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let text_inferred = clip::infer_config(&text)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    if !errors.is_empty() {
        return Err(format!(
            "cannot infer the architecture: {}",
            errors.join("; ")
        ));
    }
    let channels: Vec<i64> =
        serde_json::from_value(unet_inferred["block_out_channels"].clone()).unwrap_or_default();
    let linear = unet_inferred
        .get("use_linear_projection")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let hidden = text_inferred["hidden_size"].as_i64().unwrap_or(0);
    let mut build = |name: &str,
                     defaults: (Map<String, Value>, Vec<String>),
                     inferred,
                     reference: &Option<Value>| {
        merge(name, defaults, inferred, reference.as_ref(), &mut assumed)
            .map_err(|e| errors.push(e))
            .unwrap_or_default()
    };
    let unet_config = build(
        "unet",
        unet::defaults(sd2, &channels, linear),
        unet_inferred,
        &reference.unet,
    );
    let vae_config = build("vae", vae::defaults(sd2), vae_inferred, &reference.vae);
    let text_config = build(
        "text_encoder",
        clip::defaults(sd2, hidden),
        text_inferred,
        &reference.text_encoder,
    );
    if !errors.is_empty() {
        return Err(format!(
            "the reference configs do not match the checkpoint: {}",
            errors.join("; ")
        ));
    }
    let (scheduler_config, prediction_type) = scheduler(sd2, reference, &mut assumed);
    Ok(SingleFileParts {
        family,
        unet: Part {
            tensors: unet.tensors,
            config: unet_config,
        },
        vae: Part {
            tensors: vae.tensors,
            config: vae_config,
        },
        text_encoder: Part {
            tensors: text.tensors,
            config: text_config,
        },
        scheduler_config,
        prediction_type,
        ignored,
        assumed,
    })
}
