//! The SDXL family (base and refiner): diffusers' UNet2DConditionModel with
//! `addition_embed_type = "text_time"` ([`crate::unet`], its added
//! conditioning in `unet/added.rs`), conditioned on the two text encoders'
//! concatenated hidden states (cross-attention), the pooled text embedding
//! and the time ids (original size, crop top-left, target size; the
//! refiner: aesthetic score instead of the target size). Loaded by
//! `LoadCheckpoint` (`nodes/sdxl_loader.rs`) from a diffusers folder or a
//! single-file checkpoint; the text side is [`text`].
pub mod text;

use super::{Accepts, Conditioning, Denoiser, LoraDenoiser, OutputLayout, Use};
use crate::lora::{keys, KeyIndex, Patch, PatchedModel};
use crate::unet::{Added, UNet};
use diffgraph_diffusion::PredictionType;
use diffgraph_sdk::prelude::*;

/// What an SDXL U-Net takes: all three, each required.
pub const ACCEPTS: Accepts = Accepts {
    context: Use::Required,
    pooled: Use::Required,
    time_ids: Use::Required,
    class_labels: Use::Unused,
    mask: Use::Unused,
};

/// The U-Net (shared, behind a lock: tensors are not Sync; with this
/// handle's LoRA patches) and what it predicts.
pub struct SdxlUnet {
    unet: PatchedModel<UNet>,
    layout: OutputLayout,
    kind: Kind,
}

impl SdxlUnet {
    /// LoRA files find its weights by diffusers paths (`lora_unet_down_blocks_…`,
    /// `unet.down_blocks.…`) and by the original (sgm) paths kohya's SDXL
    /// trainer writes (`lora_unet_input_blocks_4_1_…`; ComfyUI
    /// `comfy/lora.py` `model_lora_keys_unet` indexes both).
    pub fn new(mut unet: UNet, prediction_type: PredictionType) -> SdxlUnet {
        let params = std::mem::take(&mut unet.params);
        let mut index = KeyIndex::new(keys::UNET, &params);
        let originals = crate::convert::unet::original_names(params.keys().map(String::as_str));
        for (name, original) in &originals {
            if index.shape(name).is_some() {
                let module = original.strip_suffix(".weight").unwrap_or(original);
                index.add_alias(name, module);
            }
        }
        SdxlUnet {
            kind: unet.kind,
            unet: PatchedModel::indexed(unet, params, index),
            layout: OutputLayout::prediction(prediction_type),
        }
    }
}

impl LoraDenoiser for SdxlUnet {
    fn lora_index(&self) -> &KeyIndex {
        &self.unet.index
    }

    fn with_lora(&self, patch: Option<Patch>) -> Box<dyn Denoiser> {
        Box::new(SdxlUnet {
            unet: match patch {
                Some(p) => self.unet.with(p),
                None => self.unet.clone(),
            },
            layout: self.layout,
            kind: self.kind,
        })
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
        Ok(diffgraph_sdk::interrupt::catch(|| {
            unet.model.try_forward_added(x, t, context, Some(&added))
        })??)
    }

    fn lora(&self) -> Option<&dyn LoraDenoiser> {
        Some(self)
    }
}
