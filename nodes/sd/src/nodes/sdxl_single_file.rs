//! An SDXL single-file checkpoint into the parts `LoadCheckpoint` hands
//! out: `convert::sdxl` renames and infers the configs; single files carry
//! no tokenizers, so both are the bundled CLIP BPE with each encoder's pad
//! rule (`<|endoftext|>` for CLIP ViT-L, `!` for OpenCLIP ViT-bigG, as the
//! SDXL repositories' `tokenizer/` and `tokenizer_2/`).
use super::sdxl_loader::{vae_kind, LoadedXl};
use crate::clip::ClipConfig;
use crate::convert::{self, sdxl, Part};
use crate::family::sdxl::text::{Encoder, SdxlText};
use crate::tokenizer::ClipTokenizer;
use crate::unet::{UNet, UNetConfig};
use crate::vae::{Vae, VaeConfig};
use crate::weights::Weights;
use diffgraph_sdk::prelude::*;
use std::path::Path;

fn encoder(
    part: Part,
    pad: &str,
    projection: bool,
    kind: Kind,
    device: Device,
    source: &str,
) -> Result<Encoder, String> {
    let config = ClipConfig::from_json(&part.config)?;
    let w = Weights::new(part.tensors, kind, device, source);
    Encoder::from_weights(ClipTokenizer::bundled(pad)?, w, &config, projection)
}

pub fn load(
    path: &Path,
    reference: Option<&Path>,
    kind: Kind,
    device: Device,
) -> Result<LoadedXl, String> {
    let source = path.display().to_string();
    let reference = match reference {
        Some(dir) => sdxl::Reference::from_folder(dir)?,
        None => sdxl::Reference::default(),
    };
    let parts = sdxl::split(convert::read_checkpoint(path)?, &reference)
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
    let vae_kind = vae_kind(&parts.vae.config, kind);
    let vae = Vae::from_weights(
        &vae_config,
        Weights::new(
            parts.vae.tensors,
            vae_kind,
            device,
            &format!("{source} (VAE)"),
        ),
    )?;
    let first = match parts.text_encoder {
        Some(p) => Some(encoder(
            p,
            "<|endoftext|>",
            false,
            kind,
            device,
            &format!("{source} (text encoder)"),
        )?),
        None => None,
    };
    let second = encoder(
        parts.text_encoder_2,
        "!",
        true,
        kind,
        device,
        &format!("{source} (text encoder 2)"),
    )?;
    Ok(LoadedXl {
        unet,
        text: Ok(SdxlText::new(first, second)),
        vae: Ok(vae),
        prediction_type: "epsilon".into(),
        // The Scheduler node's defaults are SDXL's training schedule
        // (scaled_linear 0.00085..0.012, 1000 steps, leading, offset 1).
        scheduler_config: String::new(),
    })
}
