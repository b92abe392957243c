//! `LoadLDM` on an original CompVis `.ckpt` (read by `diffgraph-checkpoint`'s
//! restricted unpickler: a Lightning checkpoint's state dict, nothing else
//! built) with its YAML: unconditional and `adm` class-conditional models'
//! U-Nets as ADM-family models (CompVis' `openaimodel.UNetModel` is
//! guided-diffusion's, same names); the text-to-image model's
//! spatial-transformer U-Net as Stable Diffusion's (renamed to diffusers'
//! names) and its BERTEmbedder as LDMBert, with a BERT WordPiece vocabulary
//! the `.ckpt` does not carry; the ImageNet model's (a ClassEmbedder) as the
//! same U-Net behind [`crate::family::class_embedder`]; the first stage as a diffusers-named VQModel
//! or AutoencoderKL; the scheduler config of CompVis' DDIM sampler. What is
//! converted and why: [`crate::convert::ldm`].
use super::ldm::Bert;
use crate::convert::configs::merge;
use crate::convert::ldm::{
    scheduler_config, split, unet_arch, vae_config, Conditioning, LdmConfig,
};
use crate::convert::{ldm_bert, ldm_crossattn, unet, vae};
use crate::family::adm::config::{Arch, Flags};
use crate::family::adm::{load_unet, Adm};
use crate::family::class_embedder::ClassEmbedded;
use crate::family::sd::SdUnet;
use crate::family::Model;
use crate::ldmbert::LdmBert;
use crate::unet::{UNet, UNetConfig};
use crate::vae::{Vae, VaeConfig};
use crate::weights::Weights;
use crate::wordpiece::WordPieceTokenizer;
use diffgraph_diffusion::PredictionType;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// What LoadLDM hands on from a `.ckpt`.
pub struct LoadedCkpt {
    pub model: Model,
    pub vae: Vae,
    pub prediction: PredictionType,
    /// The scheduler config as JSON text (the Scheduler node's `config`).
    pub scheduler_config: String,
    pub image_size: i64,
    pub num_classes: i64,
    /// The text-to-image model's LDMBert and tokenizer.
    pub bert: Option<Bert>,
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

/// How the denoiser is built, decided from the YAML before any weight is read.
enum DenoiserPlan {
    /// openaimodel without the spatial transformer: the ADM family.
    Adm(Arch),
    /// With it (text to image): SD's U-Net, from this diffusers config.
    Sd(Value),
}

/// The denoiser, the channels it takes and its sample size; problems are
/// collected, not returned, so that every part's are reported together.
struct BuiltDenoiser {
    model: Model,
    in_channels: i64,
    sample_size: i64,
}

/// Everything a `.ckpt` load takes besides the file.
pub struct CkptInputs<'a> {
    /// The YAML (empty: next to the checkpoint).
    pub config: &'a str,
    /// The BERT vocabulary of a text-to-image model (a tokenizer folder or
    /// `vocab.txt`); must be empty for the others.
    pub tokenizer: &'a str,
    pub kind: Kind,
    pub device: Device,
}

pub fn load(ckpt: &Path, inputs: &CkptInputs) -> Result<LoadedCkpt, String> {
    let (kind, device) = (inputs.kind, inputs.device);
    let yaml = yaml_path(ckpt, inputs.config)?;
    let text = std::fs::read_to_string(&yaml)
        .map_err(|e| format!("cannot read {}: {e}", yaml.display()))?;
    let at_yaml = |e: String| format!("{}: {e}", yaml.display());
    let c = LdmConfig::parse(&text).map_err(at_yaml)?;
    let conditioning = c.conditioning().map_err(at_yaml)?;
    let unet_params = c.unet().map_err(at_yaml)?;
    let denoiser = match &conditioning {
        Conditioning::Text(_) | Conditioning::ClassEmbedder { .. } => {
            DenoiserPlan::Sd(ldm_crossattn::unet_reference(&unet_params).map_err(at_yaml)?)
        }
        Conditioning::Unconditional | Conditioning::ClassLabels => {
            DenoiserPlan::Adm(unet_arch(&unet_params).map_err(at_yaml)?)
        }
    };
    if let DenoiserPlan::Adm(arch) = &denoiser {
        let class_cond = conditioning == Conditioning::ClassLabels;
        if class_cond != arch.num_classes.is_some() {
            return Err(at_yaml(
                "conditioning_key `adm` goes with unet_config.params.num_classes (the label embedding), \
                 and num_classes with `adm`"
                    .into(),
            ));
        }
    }
    let tokenizer = match (&conditioning, inputs.tokenizer) {
        (Conditioning::Text(_), "") => {
            return Err(format!(
                "{} is CompVis' text-to-image model: its BERTEmbedder tokenizes with bert-base-uncased's WordPiece \
                 vocabulary, which the .ckpt does not carry; give LoadLDM's `tokenizer` (a folder with vocab.txt or \
                 tokenizer.json, e.g. the `tokenizer/` of CompVis/ldm-text2im-large-256 or of bert-base-uncased, or \
                 the vocab.txt itself)",
                ckpt.display()
            ))
        }
        (Conditioning::Text(arch), path) => Some(
            WordPieceTokenizer::from_path(Path::new(path))?
                .with_max_length(arch.max_seq_len as usize),
        ),
        (_, "") => None,
        (_, _) => {
            return Err(format!(
                "input `tokenizer` is for the text-to-image model; {} is not conditioned on text",
                yaml.display()
            ))
        }
    };
    let x0 = c.x0().map_err(at_yaml)?;
    let prediction = match x0 {
        true => PredictionType::Sample,
        false => PredictionType::Epsilon,
    };
    let scheduler = scheduler_config(&c).map_err(at_yaml)?;
    let timesteps = c.timesteps().map_err(at_yaml)?;

    let parts = split(diffgraph_checkpoint::read_state_dict(ckpt)?);
    let vae_json =
        vae_config(&c, c.scale_factor(parts.scale_factor).map_err(at_yaml)?).map_err(at_yaml)?;
    let vae_cfg = VaeConfig::from_json(&vae_json.to_string()).map_err(at_yaml)?;

    // Every problem of every part, in one message.
    let mut problems = Vec::new();
    if !parts.unexpected.is_empty() {
        problems.push(format!(
            "unexpected keys (no part of this LatentDiffusion): {}",
            parts.unexpected.join(", ")
        ));
    }
    let source = ckpt.display().to_string();
    // The cond stage first: the ImageNet model's embedding goes into its denoiser.
    let mut cond_stage = parts.cond_stage;
    let embedding = match &conditioning {
        Conditioning::ClassEmbedder {
            n_classes,
            embed_dim,
        } => class_embedding(&mut cond_stage, [*n_classes, *embed_dim], kind, device)
            .map_err(|e| problems.push(e))
            .ok(),
        _ => None,
    };
    let bert = match (&conditioning, tokenizer) {
        (Conditioning::Text(arch), Some(tokenizer)) => {
            bert_encoder(std::mem::take(&mut cond_stage), arch, kind, device, &source)
                .map(|model| Bert { tokenizer, model })
                .map_err(|e| problems.push(e))
                .ok()
        }
        _ => None,
    };
    if !cond_stage.is_empty() {
        let keys: Vec<String> = cond_stage
            .keys()
            .map(|k| format!("cond_stage_model.{k}"))
            .collect();
        problems.push(format!(
            "cond-stage keys the YAML's model does not have: {}",
            keys.join(", ")
        ));
    }
    let unet_source = format!("{source} (model.diffusion_model.*)");
    let built = match denoiser {
        DenoiserPlan::Adm(arch) => {
            adm_denoiser(parts.unet, &arch, x0, timesteps, kind, device, &unet_source)
        }
        DenoiserPlan::Sd(reference) => sd_denoiser(
            parts.unet,
            reference,
            prediction,
            kind,
            device,
            &unet_source,
        )
        .map(|(unet, in_channels, sample_size)| BuiltDenoiser {
            model: match embedding {
                Some(e) => Model::new(ClassEmbedded::new(unet, e)),
                None => Model::new(unet),
            },
            in_channels,
            sample_size,
        }),
    }
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
    let (Some(built), Some(vae), true) = (built, vae, problems.is_empty()) else {
        return Err(format!(
            "{source} does not match {}: {}",
            yaml.display(),
            problems.join("; ")
        ));
    };
    if built.in_channels != vae_cfg.diffusion_channels() {
        return Err(format!(
            "{}: the U-Net takes {} channels but the first stage's latents have {}",
            yaml.display(),
            built.in_channels,
            vae_cfg.diffusion_channels()
        ));
    }
    let factor = 1i64 << (vae_cfg.block_out_channels.len() - 1);
    Ok(LoadedCkpt {
        image_size: built.sample_size * factor,
        num_classes: match &conditioning {
            Conditioning::ClassLabels => unet_params
                .get("num_classes")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            Conditioning::ClassEmbedder { n_classes, .. } => *n_classes,
            _ => 0,
        },
        model: built.model,
        vae,
        prediction,
        scheduler_config: scheduler.to_string(),
        bert,
    })
}

fn adm_denoiser(
    tensors: BTreeMap<String, Tensor>,
    arch: &Arch,
    x0: bool,
    timesteps: i64,
    kind: Kind,
    device: Device,
    source: &str,
) -> Result<BuiltDenoiser, String> {
    let mut unet = load_unet(tensors, arch, device, source)?;
    if kind != Kind::Float {
        // openaimodel.py `convert_to_fp16`, the same as guided-diffusion's.
        unet.convert_torso(kind);
    }
    let flags = Flags::model(
        &serde_json::json!({
            "learn_sigma": false, "predict_xstart": x0, "rescale_timesteps": false,
            "diffusion_steps": timesteps,
        })
        .to_string(),
    )?;
    Ok(BuiltDenoiser {
        model: Model::new(Adm::new(unet, &flags)?),
        in_channels: arch.in_channels,
        sample_size: arch.image_size,
    })
}

/// The spatial-transformer U-Net by its diffusers names: what the shapes
/// show is inferred and must agree with the YAML's `reference`. With the
/// channels it takes and its sample size.
fn sd_denoiser(
    tensors: BTreeMap<String, Tensor>,
    reference: Value,
    prediction: PredictionType,
    kind: Kind,
    device: Device,
    source: &str,
) -> Result<(SdUnet, i64, i64), String> {
    let converted = unet::convert(tensors).map_err(|e| format!("{source}: {e}"))?;
    if !converted.unrecognised.is_empty() {
        return Err(format!(
            "U-Net keys with no diffusers name: {}",
            converted.unrecognised.join(", ")
        ));
    }
    let inferred = unet::infer_config(&converted).map_err(|e| format!("{source}: {e}"))?;
    let channels: Vec<i64> =
        serde_json::from_value(inferred["block_out_channels"].clone()).unwrap_or_default();
    let linear = inferred
        .get("use_linear_projection")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut assumed = Vec::new();
    let config = merge(
        "unet_config",
        unet::defaults(false, &channels, linear),
        inferred,
        Some(&reference),
        &mut assumed,
    )
    .map_err(|e| format!("the YAML and {source} disagree: {e}"))?;
    let config = UNetConfig::from_json(&config.to_string())?;
    let in_channels = config.in_channels;
    let sample_size = reference["sample_size"].as_i64().unwrap_or(32);
    let unet = UNet::load(
        &config,
        Weights::new(converted.tensors, kind, device, source),
    )?;
    Ok((SdUnet::new(unet, prediction), in_channels, sample_size))
}

/// The ClassEmbedder's `embedding.weight` ([n_classes, embed_dim]), taken
/// out of the cond stage's tensors.
fn class_embedding(
    cond_stage: &mut BTreeMap<String, Tensor>,
    shape: [i64; 2],
    kind: Kind,
    device: Device,
) -> Result<Tensor, String> {
    let t = cond_stage
        .remove("embedding.weight")
        .ok_or("cond_stage_model.embedding.weight (the ClassEmbedder) is missing")?;
    if t.size() != shape {
        return Err(format!(
            "cond_stage_model.embedding.weight: expected {shape:?} (n_classes, embed_dim), found {:?}",
            t.size()
        ));
    }
    Ok(t.to_kind(kind).to_device(device))
}

fn bert_encoder(
    tensors: BTreeMap<String, Tensor>,
    arch: &ldm_bert::BertArch,
    kind: Kind,
    device: Device,
    source: &str,
) -> Result<LdmBert, String> {
    let converted = ldm_bert::convert(tensors);
    if !converted.unrecognised.is_empty() {
        return Err(format!(
            "cond_stage_model keys with no LDMBert name: {}",
            converted.unrecognised.join(", ")
        ));
    }
    let w = Weights::new(
        converted.tensors,
        kind,
        device,
        &format!("{source} (cond_stage_model.*, by their LDMBert names)"),
    );
    LdmBert::from_weights(arch.config(), w)
}
