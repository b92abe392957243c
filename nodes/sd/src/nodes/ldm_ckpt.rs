//! `LoadLDM` on an original CompVis `.ckpt` (read by `diffgraph-checkpoint`'s
//! restricted unpickler: a Lightning checkpoint's state dict, nothing else
//! built) with its YAML: the U-Net as an ADM-family model (CompVis'
//! `openaimodel.UNetModel` is guided-diffusion's, same names), the first
//! stage as a diffusers-named VQModel or AutoencoderKL, the scheduler config
//! of CompVis' DDIM sampler. What is converted and why: [`crate::convert::ldm`].
use crate::convert::ldm::{scheduler_config, split, unet_arch, vae_config, LdmConfig};
use crate::convert::vae;
use crate::family::adm::config::Flags;
use crate::family::adm::{load_unet, Adm};
use crate::family::Model;
use crate::vae::{Vae, VaeConfig};
use crate::weights::Weights;
use diffgraph_diffusion::PredictionType;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// What LoadLDM hands on from a `.ckpt`.
pub struct LoadedCkpt {
    pub model: Model,
    pub vae: Vae,
    pub prediction: PredictionType,
    /// The scheduler config as JSON text (the Scheduler node's `config`).
    pub scheduler_config: String,
    pub image_size: i64,
    pub num_classes: i64,
}

/// The YAML: `config` when given, else `NAME.yaml` next to `NAME.ckpt`.
pub fn yaml_path(ckpt: &Path, config: &str) -> Result<PathBuf, String> {
    if !config.is_empty() {
        return Ok(PathBuf::from(config));
    }
    let p = ckpt.with_extension("yaml");
    if p.is_file() {
        return Ok(p);
    }
    Err(format!(
        "{} needs its CompVis model config: put it next to the checkpoint as {} (the YAML of \
         configs/latent-diffusion/ or models/ldm/*/config.yaml) or give LoadLDM's `config`",
        ckpt.display(),
        p.display()
    ))
}

pub fn load(ckpt: &Path, config: &str, kind: Kind, device: Device) -> Result<LoadedCkpt, String> {
    let yaml = yaml_path(ckpt, config)?;
    let text = std::fs::read_to_string(&yaml)
        .map_err(|e| format!("cannot read {}: {e}", yaml.display()))?;
    let at_yaml = |e: String| format!("{}: {e}", yaml.display());
    let c = LdmConfig::parse(&text).map_err(at_yaml)?;
    let class_cond = c.class_conditional().map_err(at_yaml)?;
    let arch = unet_arch(&c.unet().map_err(at_yaml)?).map_err(at_yaml)?;
    if class_cond != arch.num_classes.is_some() {
        return Err(at_yaml(
            "conditioning_key `adm` goes with unet_config.params.num_classes (the label embedding), \
             and num_classes with `adm`"
                .into(),
        ));
    }
    let x0 = c.x0().map_err(at_yaml)?;
    let scheduler = scheduler_config(&c).map_err(at_yaml)?;

    let tensors = diffgraph_checkpoint::read_state_dict(ckpt)?;
    let parts = split(tensors);
    let vae_json =
        vae_config(&c, c.scale_factor(parts.scale_factor).map_err(at_yaml)?).map_err(at_yaml)?;
    let vae_cfg = VaeConfig::from_json(&vae_json.to_string()).map_err(at_yaml)?;

    // Every problem of every part, in one message.
    let mut problems = Vec::new();
    if !parts.unexpected.is_empty() {
        problems.push(format!(
            "unexpected keys (no part of an unconditional or `adm` LatentDiffusion): {}",
            parts.unexpected.join(", ")
        ));
    }
    let source = ckpt.display().to_string();
    let unet = load_unet(
        parts.unet,
        &arch,
        device,
        &format!("{source} (model.diffusion_model.*)"),
    )
    .map_err(|e| problems.push(e))
    .ok();
    let converted = vae::convert(parts.first_stage);
    if !converted.unrecognised.is_empty() {
        problems.push(format!(
            "first-stage keys with no diffusers name: {}",
            converted.unrecognised.join(", ")
        ));
    }
    let w = Weights::new(
        converted.tensors,
        kind,
        device,
        &format!("{source} (first_stage_model.*, by their diffusers names)"),
    );
    let vae = Vae::from_weights(&vae_cfg, w)
        .map_err(|e| problems.push(e))
        .ok();
    let (Some(mut unet), Some(vae), true) = (unet, vae, problems.is_empty()) else {
        return Err(format!(
            "{source} does not match {}: {}",
            yaml.display(),
            problems.join("; ")
        ));
    };
    if arch.in_channels != vae_cfg.diffusion_channels() {
        return Err(format!(
            "{}: the U-Net takes {} channels but the first stage's latents have {}",
            yaml.display(),
            arch.in_channels,
            vae_cfg.diffusion_channels()
        ));
    }
    if kind != Kind::Float {
        // openaimodel.py `convert_to_fp16`, the same as guided-diffusion's.
        unet.convert_torso(kind);
    }
    let flags = Flags::model(
        &serde_json::json!({
            "learn_sigma": false, "predict_xstart": x0, "rescale_timesteps": false,
            "diffusion_steps": c.timesteps().map_err(at_yaml)?,
        })
        .to_string(),
    )?;
    let factor = 1i64 << (vae_cfg.block_out_channels.len() - 1);
    Ok(LoadedCkpt {
        image_size: arch.image_size * factor,
        num_classes: arch.num_classes.unwrap_or(0),
        model: Model::new(Adm::new(unet, &flags)?),
        vae,
        prediction: if x0 {
            PredictionType::Sample
        } else {
            PredictionType::Epsilon
        },
        scheduler_config: scheduler.to_string(),
    })
}
