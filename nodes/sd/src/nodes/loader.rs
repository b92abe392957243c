//! Loading a Stable Diffusion 1.x/2.x model from a diffusers folder or a
//! single-file `.safetensors` checkpoint, into the three handles a graph
//! wires separately: MODEL (the U-Net, family [`crate::family::sd`]), CLIP
//! (tokenizer + text encoder) and VAE, as ComfyUI's CheckpointLoader does.
//! A folder gives only the parts it has: without `vae/` (or `text_encoder/`
//! and `tokenizer/`) the model still loads, and the nodes that need the
//! missing part say so. Single files hold all three (the split requires them).
use super::component::Component;
use crate::clip::{ClipConfig, ClipTextModel};
use crate::convert::{self, ModelFamily};
use crate::embeddings::Embedding;
use crate::family::sd::SdUnet;
use crate::family::{Model, MODEL};
use crate::lora::{keys, PatchedModel};
use crate::tokenizer::ClipTokenizer;
use crate::unet::{UNet, UNetConfig};
use crate::vae::{Vae, VaeConfig};
use crate::weights::Weights;
use diffgraph_diffusion::{ConfigName, PredictionType};
use diffgraph_sdk::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub const CLIP: &str = "CLIP";
pub const VAE: &str = "VAE";

/// The text side: tokenizer and encoder (shared by the handles LoRA
/// loaders make, each with its own patches; see [`crate::lora`]).
pub struct Clip {
    pub tokenizer: Arc<ClipTokenizer>,
    pub model: PatchedModel<ClipTextModel>,
    /// Textual-inversion embeddings attached by token (`LoadTextualInversion`).
    pub embeddings: BTreeMap<String, Embedding>,
}

impl Clip {
    /// SD 1.x/2.x's one text encoder, patchable by LoRA files' `lora_te_`
    /// / `text_encoder.` modules.
    pub fn new(tokenizer: ClipTokenizer, mut model: ClipTextModel) -> Clip {
        let params = std::mem::take(&mut model.params);
        Clip {
            tokenizer: Arc::new(tokenizer),
            model: PatchedModel::new(model, params, keys::SD_TEXT),
            embeddings: BTreeMap::new(),
        }
    }
}

/// The parts a checkpoint holds: a missing part is `Err(why)`.
pub struct Loaded {
    pub unet: UNet,
    pub clip: Result<Clip, String>,
    pub vae: Result<Vae, String>,
    pub prediction_type: String,
    /// What the Scheduler node's `config` input takes: the folder (its
    /// scheduler/scheduler_config.json), or "" for SD's defaults.
    pub scheduler_config: String,
}

/// A `dtype` input's compute dtype.
pub fn dtype(name: &str) -> Result<Kind, String> {
    match name {
        "fp32" => Ok(Kind::Float),
        "fp16" => Ok(Kind::Half),
        "bf16" => Ok(Kind::BFloat16),
        other => Err(format!("dtype `{other}`: expected fp32, fp16 or bf16")),
    }
}

/// Loads a diffusers folder (`text_encoder/`, `tokenizer/`, `unet/`, `vae/`,
/// `scheduler/`) or a single-file checkpoint; weights keep their stored dtype
/// on disk and are converted to `kind` for computing.
/// `reference`: for single files, a diffusers folder of the same
/// architecture whose configs supply what the weights' shapes cannot tell
/// (attention heads, norm groups; diffusers' `from_single_file(config=...)`);
/// without it, the SD 1.x/2.x values.
pub fn load(
    path: &Path,
    reference: Option<&Path>,
    kind: Kind,
    device: Device,
) -> Result<Loaded, String> {
    if path.is_dir() {
        load_folder(path, kind, device)
    } else {
        load_single_file(path, reference, kind, device)
    }
}

/// A folder's prediction type: its scheduler config's, else epsilon.
pub fn folder_prediction_type(dir: &Path) -> Result<String, String> {
    let scheduler = dir.join("scheduler/scheduler_config.json");
    Ok(match std::fs::read_to_string(&scheduler) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| format!("{}: {e}", scheduler.display()))?
            .get("prediction_type")
            .and_then(|p| p.as_str())
            .unwrap_or(PredictionType::Epsilon.name())
            .to_string(),
        Err(_) => PredictionType::Epsilon.name().to_string(),
    })
}

fn load_folder(dir: &Path, kind: Kind, device: Device) -> Result<Loaded, String> {
    let scheduler = dir.join("scheduler/scheduler_config.json");
    let prediction_type = folder_prediction_type(dir)?;
    let has = |parts: &[&str]| -> Result<(), String> {
        let absent: Vec<String> = parts
            .iter()
            .filter(|p| !dir.join(p).is_dir())
            .map(|p| format!("{p}/"))
            .collect();
        if absent.is_empty() {
            Ok(())
        } else {
            Err(format!("{} has no {}", dir.display(), absent.join(" and ")))
        }
    };
    let clip = match has(&["text_encoder", "tokenizer"]) {
        Ok(()) => Ok(Clip::new(
            ClipTokenizer::from_folder(&dir.join("tokenizer"))?,
            ClipTextModel::load_folder(&dir.join("text_encoder"), kind, device)?,
        )),
        Err(why) => Err(why),
    };
    let vae = match has(&["vae"]) {
        Ok(()) => Ok(Vae::from_folder(&dir.join("vae"), kind, device)?),
        Err(why) => Err(why),
    };
    Ok(Loaded {
        unet: UNet::from_folder(&dir.join("unet"), kind, device)?,
        clip,
        vae,
        prediction_type,
        scheduler_config: if scheduler.exists() {
            dir.to_string_lossy().into_owned()
        } else {
            String::new()
        },
    })
}

fn load_single_file(
    path: &Path,
    reference: Option<&Path>,
    kind: Kind,
    device: Device,
) -> Result<Loaded, String> {
    let source = path.display().to_string();
    let reference = match reference {
        Some(dir) => convert::ReferenceConfigs::from_diffusers_folder(dir)?,
        None => convert::ReferenceConfigs::default(),
    };
    let parts = convert::split_single_file_with(convert::read_checkpoint(path)?, &reference)
        .map_err(|e| format!("{source}: {e}"))?;
    let unet_config = UNetConfig::from_json(&parts.unet.config.to_string())?;
    let unet = UNet::load(
        &unet_config,
        Weights::new(
            parts.unet.tensors,
            kind,
            device,
            &format!("{source} (U-Net)"),
        ),
    )?;
    let vae_config = VaeConfig::from_json(&parts.vae.config.to_string())?;
    let vae = Vae::from_weights(
        &vae_config,
        Weights::new(parts.vae.tensors, kind, device, &format!("{source} (VAE)")),
    )?;
    let clip_config = ClipConfig::from_json(&parts.text_encoder.config)?;
    let mut w = Weights::new(
        parts.text_encoder.tensors,
        kind,
        device,
        &format!("{source} (text encoder)"),
    );
    let prefix = if w.keys().any(|k| k.starts_with("text_model.")) {
        "text_model."
    } else {
        ""
    };
    let model = ClipTextModel::load(&mut w, prefix, &clip_config);
    w.finish()?;
    // Single files carry no tokenizer: the bundled CLIP BPE, padded as each family was trained.
    let pad = match parts.family {
        ModelFamily::Sd1 => "<|endoftext|>",
        ModelFamily::Sd2 => "!",
    };
    Ok(Loaded {
        unet,
        clip: Ok(Clip::new(ClipTokenizer::bundled(pad)?, model)),
        vae: Ok(vae),
        prediction_type: parts.prediction_type,
        scheduler_config: String::new(),
    })
}

/// The checkpoint loader node.
pub struct LoadCheckpoint;

impl Node for LoadCheckpoint {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadCheckpoint", "loaders")
            .description(
                "Loads Stable Diffusion 1.x/2.x or SDXL (base or refiner) from a diffusers folder or a single-file .safetensors \
                 checkpoint (architecture inferred from the keys and shapes; .ckpt pickles are refused). \
                 A wrong or partial file fails listing every missing, unexpected and mis-shaped key. \
                 A folder without vae/ (or text_encoder/ and tokenizer/) still gives the model; the nodes \
                 given the missing part say so.",
            )
            .input(InputSpec::string("path").file().doc("a diffusers model folder or a .safetensors file"))
            .input(
                InputSpec::string("config")
                    .optional()
                    .doc("single files: a diffusers folder of the same architecture for what shapes cannot tell"),
            )
            .input(InputSpec::string("dtype").default("fp32").choices(&["fp32", "fp16", "bf16"]).doc("compute dtype"))
            .input(
                InputSpec::string("prediction_type")
                    .optional()
                    .choices(&PredictionType::names())
                    .doc("overrides the checkpoint's (e.g. epsilon for an SD 2 base single file)"),
            )
            .output(OutputSpec::new("model", PortType::object(MODEL)))
            .output(OutputSpec::new("clip", PortType::object(CLIP)))
            .output(OutputSpec::new("vae", PortType::object(VAE)))
            .output(OutputSpec::new("prediction_type", PortType::String))
            .output(OutputSpec::new("scheduler_config", PortType::String).doc("for the Scheduler node's `config`"))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let kind = dtype(inputs.str("dtype")?)?;
        let reference = inputs
            .opt_str("config")?
            .filter(|dir| !dir.is_empty())
            .map(Path::new);
        let path = Path::new(inputs.str("path")?);
        if super::sdxl_loader::is_sdxl(path) {
            let prediction = inputs.opt_str("prediction_type")?;
            return super::sdxl_loader::outputs(path, reference, kind, ctx.device(), prediction);
        }
        let loaded = load(path, reference, kind, ctx.device())?;
        let name = inputs
            .opt_str("prediction_type")?
            .unwrap_or(&loaded.prediction_type);
        let prediction = PredictionType::parse("prediction_type", name).map_err(String::from)?;
        Ok(vec![
            Object::new(MODEL, Model::new(SdUnet::new(loaded.unet, prediction))).into(),
            Object::new(CLIP, Component::new("text encoder", loaded.clip)).into(),
            Object::new(VAE, Component::new("VAE", loaded.vae)).into(),
            prediction.name().into(),
            loaded.scheduler_config.into(),
        ])
    }
}
