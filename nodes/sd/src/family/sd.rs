//! The Stable Diffusion 1.x/2.x family: diffusers' UNet2DConditionModel
//! ([`crate::unet`]) conditioned on text through cross-attention. Loaded by
//! `LoadCheckpoint` (`nodes/loader.rs`) from a diffusers folder or a
//! single-file checkpoint, with the CLIP and VAE parts the checkpoint has.
use super::{Accepts, Conditioning, Denoiser, OutputLayout};
use crate::unet::UNet;
use diffgraph_diffusion::PredictionType;
use diffgraph_sdk::prelude::*;
use std::sync::Mutex;

/// The U-Net (behind a lock: tensors are not Sync) and what it predicts.
pub struct SdUnet {
    unet: Mutex<UNet>,
    layout: OutputLayout,
    kind: Kind,
}

impl SdUnet {
    pub fn new(unet: UNet, prediction_type: PredictionType) -> SdUnet {
        SdUnet {
            kind: unet.kind,
            unet: Mutex::new(unet),
            layout: OutputLayout::prediction(prediction_type),
        }
    }
}

impl Denoiser for SdUnet {
    fn family(&self) -> &'static str {
        "Stable Diffusion U-Net"
    }

    fn accepts(&self) -> Accepts {
        Accepts::TEXT
    }

    fn output_layout(&self) -> &OutputLayout {
        &self.layout
    }

    fn kind(&self) -> Kind {
        self.kind
    }

    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Tensor, NodeError> {
        let context = cond
            .context
            .as_ref()
            .ok_or("the U-Net needs a text context")?;
        let unet = self
            .unet
            .lock()
            .map_err(|_| NodeError::new("the U-Net was poisoned by an earlier panic"))?;
        // `catch`: a Ctrl-C between blocks ends the call without poisoning the lock.
        Ok(diffgraph_sdk::interrupt::catch(|| {
            unet.try_forward(x, t, context)
        })??)
    }
}
