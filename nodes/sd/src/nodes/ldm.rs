//! `LoadLDM`: latent diffusion's own models (family [`crate::family::ldm`])
//! from a diffusers folder laid out as CompVis' (`ldm-celebahq-256`:
//! model_index.json `LDMPipeline`, `unet/` UNet2DModel, `vqvae/` VQModel,
//! `scheduler/`), as the MODEL and VAE handles the SD graphs wire, so that
//! LatentShape, UNetStep, Scheduler and VAEDecode serve them unchanged.
use super::component::Component;
use super::loader::VAE;
use crate::family::ldm::LdmUNet;
use crate::family::{Model, MODEL};
use crate::unet2d::UNet2D;
use crate::vae::Vae;
use diffgraph_diffusion::{ConfigName, PredictionType};
use diffgraph_sdk::prelude::*;
use std::path::Path;

/// The pipeline classes whose folders this loader reads.
const PIPELINES: &[&str] = &["LDMPipeline"];

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Checks the folder's model_index.json names a pipeline this loader builds
/// and returns the name of its autoencoder sub-folder.
fn autoencoder_folder(dir: &Path) -> Result<&'static str, String> {
    let index = read_json(&dir.join("model_index.json")).map_err(|e| {
        format!(
            "{e} (expected a diffusers folder of {})",
            PIPELINES.join(" or ")
        )
    })?;
    let class = index
        .get("_class_name")
        .and_then(|c| c.as_str())
        .unwrap_or("");
    if !PIPELINES.contains(&class) {
        return Err(format!(
            "{} is a {class:?} folder; LoadLDM reads {} (Stable Diffusion folders: LoadCheckpoint)",
            dir.display(),
            PIPELINES.join(", ")
        ));
    }
    Ok(if index.get("vqvae").is_some() {
        "vqvae"
    } else {
        "vae"
    })
}

pub struct LoadLDM;

impl Node for LoadLDM {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadLDM", "loaders")
            .description(
                "Loads a latent diffusion model of Rombach et al. 2022 (diffusers LDMPipeline folder: UNet2DModel, \
                 unconditional or class-conditional, on a VQ or KL autoencoder) as MODEL and VAE. Every missing, \
                 unexpected or mis-shaped key is listed.",
            )
            .input(InputSpec::string("path").file().doc("the diffusers folder (model_index.json, unet/, vqvae/, scheduler/)"))
            .input(InputSpec::string("dtype").default("fp32").choices(&["fp32", "fp16", "bf16"]))
            .output(OutputSpec::new("model", PortType::object(MODEL)))
            .output(OutputSpec::new("vae", PortType::object(VAE)))
            .output(OutputSpec::new("prediction_type", PortType::String))
            .output(OutputSpec::new("scheduler_config", PortType::String).doc("for the Scheduler node's `config`"))
            .output(OutputSpec::new("image_size", PortType::Int).doc("the U-Net's sample_size times the autoencoder's scale factor"))
            .output(OutputSpec::new("num_classes", PortType::Int).doc("0 for an unconditional model"))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let dir = Path::new(inputs.str("path")?);
        let kind = match inputs.str("dtype")? {
            "fp16" => Kind::Half,
            "bf16" => Kind::BFloat16,
            _ => Kind::Float,
        };
        let ae = autoencoder_folder(dir)?;
        let unet = UNet2D::from_folder(&dir.join("unet"), kind, ctx.device())?;
        let vae = Vae::from_folder(&dir.join(ae), kind, ctx.device())?;
        if unet.config.in_channels != vae.config.diffusion_channels() {
            return Err(format!(
                "{}: the U-Net takes {} channels but the autoencoder's latents have {}",
                dir.display(),
                unet.config.in_channels,
                vae.config.diffusion_channels()
            )
            .into());
        }
        let scheduler = dir.join("scheduler/scheduler_config.json");
        let prediction = match scheduler.exists() {
            true => read_json(&scheduler)?
                .get("prediction_type")
                .and_then(|p| p.as_str())
                .map(|p| PredictionType::parse("the scheduler config's prediction_type", p))
                .transpose()
                .map_err(String::from)?
                .unwrap_or(PredictionType::Epsilon),
            false => PredictionType::Epsilon,
        };
        let factor = 1i64 << (vae.config.block_out_channels.len() - 1);
        let image_size = unet.config.sample_size.unwrap_or(32) * factor;
        let classes = unet.num_classes().unwrap_or(0);
        let config = match scheduler.exists() {
            true => dir.to_string_lossy().into_owned(),
            false => String::new(),
        };
        Ok(vec![
            Object::new(MODEL, Model::new(LdmUNet::new(unet, prediction))).into(),
            Object::new(VAE, Component::new("VAE", Ok(vae))).into(),
            prediction.name().into(),
            config.into(),
            image_size.into(),
            classes.into(),
        ])
    }
}
