//! `LoadLDM`: latent diffusion's own models from a diffusers folder laid out
//! as CompVis' — `ldm-celebahq-256` (model_index.json `LDMPipeline`, `unet/`
//! UNet2DModel (family [`crate::family::ldm`]), `vqvae/` VQModel) or
//! `ldm-text2im-large-256` (`LDMTextToImagePipeline`: `bert/` LDMBert,
//! `tokenizer/` BERT WordPiece, `unet/` UNet2DConditionModel (family
//! [`crate::family::sd`]), `vqvae/` an AutoencoderKL) — as the MODEL and VAE
//! handles the SD graphs wire, so that LatentShape, UNetStep, Scheduler and
//! VAEDecode serve them unchanged; `LDMBertTextEncode` encodes prompts.
//! An original CompVis `.ckpt` with its YAML loads too ([`super::ldm_ckpt`]).
use super::component::Component;
use super::loader::VAE;
use crate::family::ldm::LdmUNet;
use crate::family::sd::SdUnet;
use crate::family::{Model, MODEL};
use crate::ldmbert::LdmBert;
use crate::unet::{OneOrMany, UNet};
use crate::unet2d::UNet2D;
use crate::vae::Vae;
use crate::wordpiece::WordPieceTokenizer;
use diffgraph_diffusion::{ConfigName, PredictionType};
use diffgraph_sdk::prelude::*;
use std::path::Path;

/// The pipeline classes whose folders this loader reads.
const PIPELINES: &[&str] = &["LDMPipeline", "LDMTextToImagePipeline"];

/// Port type of LDMBert text encoders (with their tokenizer).
pub const LDMBERT: &str = "LDMBERT";

/// The text side of the text-to-image model.
pub struct Bert {
    pub tokenizer: WordPieceTokenizer,
    pub model: LdmBert,
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Checks the folder's model_index.json names a pipeline this loader builds;
/// returns that class and the name of its autoencoder sub-folder.
fn pipeline_class(dir: &Path) -> Result<(&'static str, &'static str), String> {
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
    let Some(class) = PIPELINES.iter().copied().find(|p| *p == class) else {
        return Err(format!(
            "{} is a {class:?} folder; LoadLDM reads {} (Stable Diffusion folders: LoadCheckpoint)",
            dir.display(),
            PIPELINES.join(", ")
        ));
    };
    let ae = if index.get("vqvae").is_some() {
        "vqvae"
    } else {
        "vae"
    };
    Ok((class, ae))
}

pub struct LoadLDM;

impl Node for LoadLDM {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadLDM", "loaders")
            .description(
                "Loads a latent diffusion model of Rombach et al. 2022 (diffusers LDMPipeline folder: UNet2DModel, \
                 unconditional or class-conditional, on a VQ or KL autoencoder; LDMTextToImagePipeline folder; or an \
                 original CompVis .ckpt with its YAML: unconditional or `adm` class-conditional) as MODEL and VAE. \
                 Every missing, unexpected or mis-shaped key is listed.",
            )
            .input(InputSpec::string("path").file().doc(
                "the diffusers folder (model_index.json, unet/, vqvae/, scheduler/; bert/ and tokenizer/ for text to \
                 image), or a CompVis latent-diffusion .ckpt (a Lightning checkpoint, read without running code)",
            ))
            .input(InputSpec::string("config").default("").file().doc(
                "for a .ckpt: its CompVis YAML (configs/latent-diffusion/*.yaml); default NAME.yaml next to NAME.ckpt",
            ))
            .input(InputSpec::string("tokenizer").default("").file().doc(
                "for a text-to-image .ckpt: the BERT WordPiece vocabulary its BERTEmbedder was trained with \
                 (bert-base-uncased's; a tokenizer folder with vocab.txt or tokenizer.json, or the vocab.txt), which \
                 the .ckpt does not carry",
            ))
            .input(InputSpec::string("dtype").default("fp32").choices(&["fp32", "fp16", "bf16"]))
            .output(OutputSpec::new("model", PortType::object(MODEL)))
            .output(OutputSpec::new("vae", PortType::object(VAE)))
            .output(OutputSpec::new("prediction_type", PortType::String))
            .output(OutputSpec::new("scheduler_config", PortType::String).doc("for the Scheduler node's `config`"))
            .output(OutputSpec::new("image_size", PortType::Int).doc("the U-Net's sample_size times the autoencoder's scale factor"))
            .output(OutputSpec::new("num_classes", PortType::Int).doc("0 for an unconditional model"))
            .output(OutputSpec::new("bert", PortType::object(LDMBERT)).doc("text to image: the LDMBert text encoder, for LDMBertTextEncode"))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let dir = Path::new(inputs.str("path")?);
        let kind = match inputs.str("dtype")? {
            "fp16" => Kind::Half,
            "bf16" => Kind::BFloat16,
            _ => Kind::Float,
        };
        let device = ctx.device();
        if dir.is_file() {
            let c = super::ldm_ckpt::load(
                dir,
                &super::ldm_ckpt::CkptInputs {
                    config: inputs.str("config")?,
                    tokenizer: inputs.str("tokenizer")?,
                    kind,
                    device,
                },
            )?;
            let bert = c.bert.ok_or_else(|| {
                format!(
                    "{} is a CompVis .ckpt of an image model: no text encoder",
                    dir.display()
                )
            });
            return Ok(vec![
                Object::new(MODEL, c.model).into(),
                Object::new(VAE, Component::new("VAE", Ok(c.vae))).into(),
                c.prediction.name().into(),
                c.scheduler_config.into(),
                c.image_size.into(),
                c.num_classes.into(),
                Object::new(LDMBERT, Component::new("text encoder", bert)).into(),
            ]);
        }
        for (input, what) in [("config", "the YAML"), ("tokenizer", "the vocabulary")] {
            if !inputs.str(input)?.is_empty() {
                return Err(format!(
                    "input `{input}` is {what} of a CompVis .ckpt; {} is a diffusers folder, which carries its own",
                    dir.display()
                )
                .into());
            }
        }
        let (class, ae) = pipeline_class(dir)?;
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
        let vae = Vae::from_folder(&dir.join(ae), kind, device)?;
        let (model, in_channels, sample_size, classes, bert) = if class == "LDMTextToImagePipeline"
        {
            let unet = UNet::from_folder(&dir.join("unet"), kind, device)?;
            let bert = Bert {
                tokenizer: WordPieceTokenizer::from_folder(&dir.join("tokenizer"))?,
                model: LdmBert::from_folder(&dir.join("bert"), kind, device)?,
            };
            let size = match &unet.config.sample_size {
                Some(OneOrMany::One(n)) => Some(*n),
                Some(OneOrMany::Many(v)) => v.first().copied(),
                None => None,
            };
            let c = unet.config.in_channels;
            (
                Model::new(SdUnet::new(unet, prediction)),
                c,
                size,
                0,
                Ok(bert),
            )
        } else {
            let unet = UNet2D::from_folder(&dir.join("unet"), kind, device)?;
            let none = format!("{} is an {class} folder: no text encoder", dir.display());
            let (c, size) = (unet.config.in_channels, unet.config.sample_size);
            let classes = unet.num_classes().unwrap_or(0);
            (
                Model::new(LdmUNet::new(unet, prediction)),
                c,
                size,
                classes,
                Err(none),
            )
        };
        if in_channels != vae.config.diffusion_channels() {
            return Err(format!(
                "{}: the U-Net takes {in_channels} channels but the autoencoder's latents have {}",
                dir.display(),
                vae.config.diffusion_channels()
            )
            .into());
        }
        let factor = 1i64 << (vae.config.block_out_channels.len() - 1);
        let image_size = sample_size.unwrap_or(32) * factor;
        let config = match scheduler.exists() {
            true => dir.to_string_lossy().into_owned(),
            false => String::new(),
        };
        Ok(vec![
            Object::new(MODEL, model).into(),
            Object::new(VAE, Component::new("VAE", Ok(vae))).into(),
            prediction.name().into(),
            config.into(),
            image_size.into(),
            classes.into(),
            Object::new(LDMBERT, Component::new("text encoder", bert)).into(),
        ])
    }
}

pub struct LDMBertTextEncode;

impl Node for LDMBertTextEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LDMBertTextEncode", "conditioning")
            .description(
                "Encodes a prompt for latent diffusion's text-to-image model as LDMTextToImagePipeline does: \
                 BERT WordPiece tokens ([CLS] ... [SEP], padded to 77), LDMBert's last hidden state. Use it for \
                 the negative prompt (\"\" in the pipeline) too. Tokens past the 77th are dropped, as the \
                 pipeline drops them, with a warning and their count in `dropped_tokens`.",
            )
            .input(InputSpec::new("bert", PortType::object(LDMBERT)))
            .input(InputSpec::string("text").default(""))
            .output(OutputSpec::new("conditioning", PortType::Conditioning).doc("[1, 77, d_model], float32"))
            .output(OutputSpec::new("dropped_tokens", PortType::Int).doc("tokens past the 77th, dropped (0: none)"))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let bert: &Component<Bert> = inputs.object("bert")?;
        let bert = bert.lock()?;
        let (ids, dropped) = bert.tokenizer.encode_padded(inputs.str("text")?);
        if dropped > 0 {
            // Plugins have no log channel in the ABI: stderr, and the output below.
            eprintln!(
                "warning: LDMBertTextEncode: the prompt is {dropped} tokens longer than LDMBert's {}: \
                 they are dropped, as LDMTextToImagePipeline drops them",
                bert.tokenizer.max_length()
            );
        }
        let ids = crate::clip::ids_tensor(&[ids], ctx.device())?;
        let hidden = bert.model.forward(&ids)?;
        Ok(vec![
            hidden.to_kind(Kind::Float).into(),
            (dropped as i64).into(),
        ])
    }
}
