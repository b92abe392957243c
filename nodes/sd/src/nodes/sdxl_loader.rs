//! Loading SDXL (base or refiner) for `LoadCheckpoint`: a diffusers folder
//! (`unet/`, `vae/`, `text_encoder_2/` + `tokenizer_2/`, and for the base
//! `text_encoder/` + `tokenizer/`, `scheduler/`) or a single-file
//! `.safetensors` in the original layout (`conditioner.embedders.*`, see
//! `convert/sdxl.rs`). Which family a path holds is read from it
//! ([`is_sdxl`]): a folder with `text_encoder_2/` or a `text_time` U-Net, a
//! file with `conditioner.embedders.*` keys.
//!
//! The VAE follows diffusers' `force_upcast` (SDXL's VAE overflows in fp16):
//! asked for fp16, a VAE whose config sets it computes in float32, as the
//! SDXL pipelines upcast it before decoding (`needs_upcasting`).
use super::component::Component;
use super::loader::{folder_prediction_type, CLIP, VAE};
use crate::family::sdxl::text::{Encoder, SdxlText};
use crate::family::sdxl::SdxlUnet;
use crate::family::{Model, MODEL};
use crate::unet::UNet;
use crate::vae::Vae;
use diffgraph_diffusion::{ConfigName, PredictionType};
use diffgraph_sdk::prelude::*;
use std::path::Path;

/// The parts an SDXL checkpoint holds: a missing part is `Err(why)`.
pub struct LoadedXl {
    pub unet: UNet,
    pub text: Result<SdxlText, String>,
    pub vae: Result<Vae, String>,
    pub prediction_type: String,
    /// The folder (its scheduler/scheduler_config.json), or "" for SDXL's
    /// scheduler defaults (single files: a written config file's folder).
    pub scheduler_config: String,
}

/// Whether `path` holds an SDXL model (see the module doc).
pub fn is_sdxl(path: &Path) -> bool {
    if path.is_dir() {
        path.join("text_encoder_2").is_dir()
            || std::fs::read_to_string(path.join("unet/config.json"))
                .is_ok_and(|c| c.contains("\"text_time\""))
    } else {
        crate::convert::sdxl::is_sdxl_file(path)
    }
}

/// The VAE's compute dtype: float32 for a `force_upcast` VAE asked for fp16.
pub fn vae_kind(config_json: &serde_json::Value, kind: Kind) -> Kind {
    let upcast = config_json
        .get("force_upcast")
        .and_then(|v| v.as_bool())
        .unwrap_or(true); // diffusers' AutoencoderKL default
    if kind == Kind::Half && upcast {
        Kind::Float
    } else {
        kind
    }
}

fn load_folder(dir: &Path, kind: Kind, device: Device) -> Result<LoadedXl, String> {
    let part = |name: &str| -> Result<std::path::PathBuf, String> {
        let p = dir.join(name);
        if p.is_dir() {
            Ok(p)
        } else {
            Err(format!("{} has no {name}/", dir.display()))
        }
    };
    let encoder =
        |enc: &str, tok: &str, projection: bool| -> Result<Result<Encoder, String>, String> {
            match (part(enc), part(tok)) {
                (Ok(e), Ok(t)) => Encoder::from_folders(&e, &t, projection, kind, device).map(Ok),
                (Err(why), _) | (_, Err(why)) => Ok(Err(why)),
            }
        };
    let second = encoder("text_encoder_2", "tokenizer_2", true)?;
    // The refiner has no first encoder: its absence is what makes it one.
    let first = encoder("text_encoder", "tokenizer", false)?.ok();
    let text = second.map(|second| SdxlText::new(first, second));
    let vae = match part("vae") {
        Ok(v) => {
            let config = std::fs::read_to_string(v.join("config.json"))
                .map_err(|e| format!("cannot read {}/config.json: {e}", v.display()))?;
            let json: serde_json::Value = serde_json::from_str(&config)
                .map_err(|e| format!("{}/config.json: {e}", v.display()))?;
            Ok(Vae::from_folder(&v, vae_kind(&json, kind), device)?)
        }
        Err(why) => Err(why),
    };
    let scheduler = dir.join("scheduler/scheduler_config.json");
    Ok(LoadedXl {
        unet: UNet::from_folder(&dir.join("unet"), kind, device)?,
        text,
        vae,
        prediction_type: folder_prediction_type(dir)?,
        scheduler_config: if scheduler.exists() {
            dir.to_string_lossy().into_owned()
        } else {
            String::new()
        },
    })
}

/// Loads an SDXL folder or single file; `reference` as for SD single files.
pub fn load(
    path: &Path,
    reference: Option<&Path>,
    kind: Kind,
    device: Device,
) -> Result<LoadedXl, String> {
    if path.is_dir() {
        load_folder(path, kind, device)
    } else {
        super::sdxl_single_file::load(path, reference, kind, device)
    }
}

/// `LoadCheckpoint`'s outputs for an SDXL path.
pub fn outputs(
    path: &Path,
    reference: Option<&Path>,
    kind: Kind,
    device: Device,
    prediction_type: Option<&str>,
) -> Result<Vec<Value>, NodeError> {
    let loaded = load(path, reference, kind, device)?;
    if !loaded.unet.takes_added() {
        return Err(format!(
            "{}: has SDXL text encoders but its U-Net has no text_time added conditioning",
            path.display()
        )
        .into());
    }
    let name = prediction_type.unwrap_or(&loaded.prediction_type);
    let prediction = PredictionType::parse("prediction_type", name).map_err(String::from)?;
    Ok(vec![
        Object::new(MODEL, Model::new(SdxlUnet::new(loaded.unet, prediction))).into(),
        Object::new(CLIP, Component::new("text encoder", loaded.text)).into(),
        Object::new(VAE, Component::new("VAE", loaded.vae)).into(),
        prediction.name().into(),
        loaded.scheduler_config.into(),
    ])
}
