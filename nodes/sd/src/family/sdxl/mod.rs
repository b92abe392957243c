//! The SDXL family (base and refiner): diffusers' UNet2DConditionModel with
//! `addition_embed_type = "text_time"` ([`crate::unet`], its added
//! conditioning in `unet/added.rs`), conditioned on the two text encoders'
//! concatenated hidden states (cross-attention), the pooled text embedding
//! and the time ids (original size, crop top-left, target size; the
//! refiner: aesthetic score instead of the target size). Loaded by
//! `LoadCheckpoint` (`nodes/sdxl_loader.rs`) from a diffusers folder or a
//! single-file checkpoint; the text side is [`text`].
pub mod text;

use super::{Accepts, Conditioning, Denoiser, OutputLayout, Use};
use crate::unet::{Added, UNet};
use diffgraph_diffusion::PredictionType;
use diffgraph_sdk::prelude::*;
use std::sync::Mutex;

/// What an SDXL U-Net takes: all three, each required.
pub const ACCEPTS: Accepts = Accepts {
    context: Use::Required,
    pooled: Use::Required,
    time_ids: Use::Required,
    class_labels: Use::Unused,
    mask: Use::Unused,
};

/// The U-Net (behind a lock: tensors are not Sync) and what it predicts.
pub struct SdxlUnet {
    unet: Mutex<UNet>,
    layout: OutputLayout,
    kind: Kind,
}

impl SdxlUnet {
    pub fn new(unet: UNet, prediction_type: PredictionType) -> SdxlUnet {
        SdxlUnet {
            kind: unet.kind,
            unet: Mutex::new(unet),
            layout: OutputLayout::prediction(prediction_type),
        }
    }
}

impl Denoiser for SdxlUnet {
    fn family(&self) -> &'static str {
        "SDXL U-Net"
    }

    fn accepts(&self) -> Accepts {
        ACCEPTS
    }

    fn output_layout(&self) -> &OutputLayout {
        &self.layout
    }

    fn kind(&self) -> Kind {
        self.kind
    }

    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Tensor, NodeError> {
        fn need<'a>(f: &'a Option<Tensor>, what: &str) -> Result<&'a Tensor, NodeError> {
            f.as_ref()
                .ok_or_else(|| NodeError::new(format!("the SDXL U-Net needs {what}")))
        }
        let context = need(&cond.context, "a text context")?;
        let added = Added {
            text_embeds: need(&cond.pooled, "a pooled text embedding")?,
            time_ids: need(&cond.time_ids, "time ids")?,
        };
        let unet = self
            .unet
            .lock()
            .map_err(|_| NodeError::new("the U-Net was poisoned by an earlier panic"))?;
        Ok(unet.try_forward_added(x, t, context, Some(&added))?)
    }
}
