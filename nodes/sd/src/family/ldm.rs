//! Latent diffusion's own denoisers (Rombach et al. 2022): diffusers'
//! UNet2DModel ([`crate::unet2d`]) on the latents of a VQ (or KL)
//! autoencoder, unconditional (CompVis `ldm-celebahq-256`, FFHQ, LSUN) or
//! class-conditional (`num_class_embeds`: a class embedding added to the
//! timestep embedding). Loaded by `LoadLDM` (`nodes/ldm.rs`).
use super::{Accepts, Conditioning, Denoiser, OutputLayout};
use crate::unet2d::UNet2D;
use diffgraph_diffusion::PredictionType;
use diffgraph_sdk::prelude::*;
use std::sync::Mutex;

/// The U-Net (behind a lock: tensors are not Sync) and what it predicts.
pub struct LdmUNet {
    unet: Mutex<UNet2D>,
    layout: OutputLayout,
    kind: Kind,
    class_cond: bool,
}

impl LdmUNet {
    pub fn new(unet: UNet2D, prediction_type: PredictionType) -> LdmUNet {
        LdmUNet {
            kind: unet.kind,
            class_cond: unet.num_classes().is_some(),
            unet: Mutex::new(unet),
            layout: OutputLayout::prediction(prediction_type),
        }
    }
}

impl Denoiser for LdmUNet {
    fn family(&self) -> &'static str {
        "latent diffusion UNet2DModel"
    }

    fn accepts(&self) -> Accepts {
        Accepts::class_labels_only(self.class_cond)
    }

    fn output_layout(&self) -> &OutputLayout {
        &self.layout
    }

    fn kind(&self) -> Kind {
        self.kind
    }

    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Tensor, NodeError> {
        let unet = self
            .unet
            .lock()
            .map_err(|_| NodeError::new("the U-Net was poisoned by an earlier panic"))?;
        Ok(unet.forward(x, t, cond.class_labels.as_ref())?)
    }
}
