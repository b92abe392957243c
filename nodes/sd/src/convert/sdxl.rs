//! Single-file SDXL checkpoints (the original Stability layout of
//! `sd_xl_base_1.0.safetensors` / `sd_xl_refiner_1.0.safetensors`) split into
//! diffusers-named parts, following diffusers `loaders/single_file_utils.py`
//! (`convert_ldm_unet_checkpoint` with `label_emb` for `text_time`,
//! `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint` with
//! `conditioner.embedders.0.transformer.`, `convert_open_clip_checkpoint`
//! with `conditioner.embedders.1.model.` and its projection).
//!
//! **Detection** from the keys: `conditioner.embedders.N.transformer.*` is a
//! Hugging Face CLIP (the base's ViT-L), `conditioner.embedders.N.model.*`
//! an OpenCLIP (ViT-bigG: the base's second encoder, the refiner's only one).
//!
//! **Configs** as for SD files (`convert/mod.rs`): what the shapes show is
//! inferred; the rest comes from a reference folder, else from the SDXL
//! repositories' values (listed in `assumed`): heads = channels / 64 (SDXL's
//! `attention_head_dim` [5, 10, 20]), 32 groups, sample_size 128; VAE
//! scaling_factor 0.13025 and force_upcast; text encoders quick_gelu / gelu,
//! heads hidden / 64. The time-id width (`addition_time_embed_dim`, 256 in
//! SDXL) is inferred: `label_emb.0.0.weight` is [time_embed_dim, pooled +
//! n × width] with n = 6 time ids (base) or 5 (refiner). Skipped on purpose:
//! the DDPM buffers, `model_ema.*`, `position_ids`, OpenCLIP's
//! `logit_scale` and `attn_mask`; any other key is an error, all listed.
use super::clip::{convert_clip_from, convert_open_clip_from, infer_config as clip_config};
use super::configs::merge;
use super::keys::list;
use super::{unet, vae, Part, IGNORED_KEYS};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use tch::Tensor;

pub const EMBEDDERS: &str = "conditioner.embedders.";

/// Whether a `.safetensors` file's header names `conditioner.embedders.*`
/// keys (reads the header only).
pub fn is_sdxl_file(path: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return false;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).is_ok()
        && header
            .windows(EMBEDDERS.len())
            .any(|w| w == EMBEDDERS.as_bytes())
}

/// Reference configs of an SDXL folder (each optional).
#[derive(Default)]
pub struct Reference {
    pub unet: Option<Value>,
    pub vae: Option<Value>,
    pub text_encoder: Option<Value>,
    pub text_encoder_2: Option<Value>,
}

impl Reference {
    pub fn from_folder(dir: &Path) -> Result<Reference, String> {
        if !dir.is_dir() {
            return Err(format!("{} is not a folder", dir.display()));
        }
        let read = |rel: &str| -> Result<Option<Value>, String> {
            let path = dir.join(rel);
            match std::fs::read_to_string(&path) {
                Ok(text) => serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", path.display())),
                Err(_) => Ok(None),
            }
        };
        Ok(Reference {
            unet: read("unet/config.json")?,
            vae: read("vae/config.json")?,
            text_encoder: read("text_encoder/config.json")?,
            text_encoder_2: read("text_encoder_2/config.json")?,
        })
    }
}

pub struct SdxlParts {
    pub unet: Part,
    pub vae: Part,
    /// The base's CLIP ViT-L; `None` for the refiner.
    pub text_encoder: Option<Part>,
    /// OpenCLIP ViT-bigG with `text_projection.weight`.
    pub text_encoder_2: Part,
    pub ignored: Vec<String>,
    pub assumed: Vec<String>,
}

fn text_defaults(
    act: &str,
    hidden: i64,
    projection: Option<i64>,
) -> (Map<String, Value>, Vec<String>) {
    let (heads, note) = if hidden % 64 == 0 && hidden > 0 {
        (
            hidden / 64,
            format!("num_attention_heads = {} (hidden_size / 64)", hidden / 64),
        )
    } else {
        (1, "num_attention_heads = 1 (hidden_size is not a multiple of 64: give a reference config)".into())
    };
    let mut v = json!({
        "attention_dropout": 0.0, "bos_token_id": 49406, "eos_token_id": 49407, "hidden_act": act,
        "layer_norm_eps": 1e-05, "model_type": "clip_text_model", "num_attention_heads": heads, "pad_token_id": 1
    });
    if let Some(p) = projection {
        v["projection_dim"] = json!(p);
    }
    let notes = vec![
        format!("hidden_act = {act}"),
        "layer_norm_eps = 1e-5".into(),
        note,
    ];
    (v.as_object().cloned().unwrap_or_default(), notes)
}

/// Splits an SDXL single file; fails listing every unrecognised key and
/// every structural problem at once.
pub fn split(
    tensors: BTreeMap<String, Tensor>,
    reference: &Reference,
) -> Result<SdxlParts, String> {
    let (mut u, mut v) = (BTreeMap::new(), BTreeMap::new());
    // embedder index -> (kind, tensors without the prefix)
    let mut embedders: BTreeMap<usize, (&'static str, BTreeMap<String, Tensor>)> = BTreeMap::new();
    let (mut ignored, mut unrecognised, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (key, t) in tensors {
        if let Some(rest) = key.strip_prefix(unet::PREFIX) {
            u.insert(rest.to_string(), t);
        } else if let Some(rest) = key.strip_prefix(vae::PREFIX) {
            v.insert(rest.to_string(), t);
        } else if let Some((i, kind, rest)) = embedder(&key) {
            let entry = embedders.entry(i).or_insert((kind, BTreeMap::new()));
            if entry.0 != kind {
                errors.push(format!(
                    "{EMBEDDERS}{i} holds both transformer.* and model.* keys"
                ));
            }
            entry.1.insert(rest.to_string(), t);
        } else if IGNORED_KEYS.contains(&key.as_str()) || key.starts_with("model_ema.") {
            ignored.push(key);
        } else {
            unrecognised.push(key);
        }
    }
    let (mut first, mut second) = (None, None);
    for (i, (kind, map)) in embedders {
        let prefix = format!("{EMBEDDERS}{i}.{kind}.");
        let slot = if kind == "transformer" {
            &mut first
        } else {
            &mut second
        };
        if slot.is_some() {
            errors.push(format!(
                "a second {} text encoder ({prefix}*)",
                if kind == "transformer" {
                    "CLIP"
                } else {
                    "OpenCLIP"
                }
            ));
            continue;
        }
        *slot = Some(if kind == "transformer" {
            convert_clip_from(map, &prefix)
        } else {
            convert_open_clip_from(map, &prefix, false)
        });
    }
    if u.is_empty() {
        errors.push("no U-Net (model.diffusion_model.*)".into());
    }
    if v.is_empty() {
        errors.push("no VAE (first_stage_model.*)".into());
    }
    if second.is_none() {
        errors.push(format!("no OpenCLIP text encoder ({EMBEDDERS}N.model.*)"));
    }
    let unet = unet::convert(u).map_err(|e| errors.push(e)).ok();
    let vae = vae::convert(v);
    unrecognised.extend(unet.iter().flat_map(|x| x.unrecognised.iter().cloned()));
    unrecognised.extend(vae.unrecognised.iter().cloned());
    for c in first.iter().chain(second.iter()) {
        unrecognised.extend(c.unrecognised.iter().cloned());
        ignored.extend(c.ignored.iter().cloned());
    }
    if second
        .as_ref()
        .is_some_and(|c| !c.tensors.contains_key("text_projection.weight"))
    {
        errors.push(
            "the OpenCLIP text encoder has no text_projection (SDXL pools through it)".into(),
        );
    }
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
            "not an SDXL single-file checkpoint: {}",
            errors.join("; ")
        ));
    }
    let (unet, second) = (unet.expect("no error"), second.expect("no error"));

    let mut assumed = Vec::new();
    let mut inferred =
        |r: Result<Map<String, Value>, String>| r.map_err(|e| errors.push(e)).unwrap_or_default();
    let mut unet_inferred = inferred(unet::infer_config(&unet));
    let vae_inferred = inferred(vae::infer_config(&vae));
    let first_inferred = first.as_ref().map(|c| inferred(clip_config(c)));
    let second_inferred = inferred(clip_config(&second));
    let projection = second
        .tensors
        .get("text_projection.weight")
        .map(|t| t.size()[0]);
    match (
        unet.tensors.get("add_embedding.linear_1.weight"),
        projection,
    ) {
        (Some(w), Some(pooled)) => {
            let in_dim = w.size()[1];
            let ids = if first.is_some() { 6 } else { 5 };
            if (in_dim - pooled) <= 0 || (in_dim - pooled) % ids != 0 {
                errors.push(format!(
                    "label_emb.0.0.weight takes {in_dim} features: not a pooled embedding of {pooled} plus {ids} time ids"
                ));
            }
            unet_inferred.insert("addition_embed_type".into(), json!("text_time"));
            unet_inferred.insert(
                "projection_class_embeddings_input_dim".into(),
                json!(in_dim),
            );
            unet_inferred.insert(
                "addition_time_embed_dim".into(),
                json!((in_dim - pooled) / ids),
            );
        }
        _ => errors.push("the U-Net has no label_emb (SDXL's text_time added conditioning)".into()),
    }
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
        .unwrap_or(true);
    let mut unet_defaults = unet::defaults(true, &channels, linear);
    unet_defaults.0.insert("sample_size".into(), json!(128));
    for note in unet_defaults
        .1
        .iter_mut()
        .filter(|n| n.starts_with("sample_size"))
    {
        *note = "sample_size = 128".into();
    }
    let mut vae_defaults = vae::defaults(false);
    vae_defaults
        .0
        .insert("scaling_factor".into(), json!(0.13025));
    vae_defaults.0.insert("sample_size".into(), json!(1024));
    vae_defaults.1 = vec![
        "norm_num_groups = 32".into(),
        "scaling_factor = 0.13025".into(),
        "force_upcast = true".into(),
        "sample_size = 1024".into(),
    ];
    let hidden = |m: &Map<String, Value>| m.get("hidden_size").and_then(Value::as_i64).unwrap_or(0);
    let mut build = |name: &str, defaults, inferred, reference: &Option<Value>| {
        merge(name, defaults, inferred, reference.as_ref(), &mut assumed)
            .map_err(|e| errors.push(e))
            .unwrap_or_default()
    };
    let unet_config = build("unet", unet_defaults, unet_inferred, &reference.unet);
    let vae_config = build("vae", vae_defaults, vae_inferred, &reference.vae);
    let first_config = first_inferred.map(|m| {
        let d = text_defaults("quick_gelu", hidden(&m), None);
        build("text_encoder", d, m, &reference.text_encoder)
    });
    let d2 = text_defaults("gelu", hidden(&second_inferred), projection);
    let second_config = build(
        "text_encoder_2",
        d2,
        second_inferred,
        &reference.text_encoder_2,
    );
    if !errors.is_empty() {
        return Err(format!(
            "the reference configs do not match the checkpoint: {}",
            errors.join("; ")
        ));
    }
    Ok(SdxlParts {
        unet: Part {
            tensors: unet.tensors,
            config: unet_config,
        },
        vae: Part {
            tensors: vae.tensors,
            config: vae_config,
        },
        text_encoder: first.zip(first_config).map(|(c, config)| Part {
            tensors: c.tensors,
            config,
        }),
        text_encoder_2: Part {
            tensors: second.tensors,
            config: second_config,
        },
        ignored,
        assumed,
    })
}

/// `conditioner.embedders.{i}.{transformer|model}.{rest}`.
fn embedder(key: &str) -> Option<(usize, &'static str, &str)> {
    let rest = key.strip_prefix(EMBEDDERS)?;
    let (i, rest) = rest.split_once('.')?;
    let i = i.parse().ok()?;
    if let Some(r) = rest.strip_prefix("transformer.") {
        Some((i, "transformer", r))
    } else {
        rest.strip_prefix("model.").map(|r| (i, "model", r))
    }
}
