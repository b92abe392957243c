//! The Stable Diffusion 1.x/2.x family: diffusers' UNet2DConditionModel
//! ([`crate::unet`]) conditioned on text through cross-attention. Loaded by
//! `LoadCheckpoint` (`nodes/loader.rs`) from a diffusers folder or a
//! single-file checkpoint, with the CLIP and VAE parts the checkpoint has.
use super::{Accepts, Conditioning, Denoiser, LoraDenoiser, OutputLayout};
use crate::lora::{keys, KeyIndex, Patch, PatchedModel};
use crate::unet::UNet;
use diffgraph_diffusion::PredictionType;
use diffgraph_sdk::prelude::*;

/// The U-Net (shared, behind a lock: tensors are not Sync; with this
/// handle's LoRA patches) and what it predicts.
pub struct SdUnet {
    unet: PatchedModel<UNet>,
    layout: OutputLayout,
    kind: Kind,
}

impl SdUnet {
    pub fn new(mut unet: UNet, prediction_type: PredictionType) -> SdUnet {
        let params = std::mem::take(&mut unet.params);
        SdUnet {
            kind: unet.kind,
            unet: PatchedModel::new(unet, params, keys::UNET),
            layout: OutputLayout::prediction(prediction_type),
        }
    }
}

impl LoraDenoiser for SdUnet {
    fn lora_index(&self) -> &KeyIndex {
        &self.unet.index
    }

    fn with_lora(&self, patch: Option<Patch>) -> Box<dyn Denoiser> {
        Box::new(SdUnet {
            unet: match patch {
                Some(p) => self.unet.with(p),
                None => self.unet.clone(),
            },
            layout: self.layout,
            kind: self.kind,
        })
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
            unet.model.try_forward(x, t, context)
        })??)
    }

    fn lora(&self) -> Option<&dyn LoraDenoiser> {
        Some(self)
    }
}
