//! The ADM family (Dhariwal & Nichol 2021, openai/guided-diffusion): the
//! class-conditional pixel U-Net with adaptive group normalization and
//! learned variance ([`unet`]), and its noise-aware classifier
//! ([`classifier`]), configured by the reference's flags ([`config`]) and
//! loaded by the reference's state-dict names from `.pt` (through
//! `diffgraph-checkpoint`'s restricted reader) or `.safetensors`.
//!
//! The model's output is eps (channels 0..3) followed, when `learn_sigma`,
//! by the variance interpolation v (3..6) of `LearnedRange` variance
//! (`gaussian_diffusion.py` `p_mean_variance`).
//!
//! `use_fp16`: the loaders' `precision` input chooses how the torso
//! computes ([`torso_kind`]): float32 by default (the more precise), or as
//! the reference's `convert_to_fp16` does (float16 convolutions in the
//! input, middle and output blocks; embeddings, GroupNorm, the attention
//! softmax and the head in float32), or in bfloat16 the same way.
pub mod blocks;
pub mod classifier;
pub mod config;
pub mod unet;

use super::{check_labels, Accepts, Conditioning, Denoiser, OutputLayout};
use crate::weights::Weights;
use config::{Arch, ClassifierArch, Flags};
use diffgraph_diffusion::{PredictionType, VarianceType};
use diffgraph_sdk::prelude::*;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The ADM U-Net as a `MODEL`: called with the original timestep index
/// (the sampler applies `timestep_map`), rescaled to 0..1000 when the flags
/// say `rescale_timesteps` (respace.py `_WrappedModel`).
pub struct Adm {
    unet: Mutex<unet::AdmUNet>,
    layout: OutputLayout,
    class_cond: bool,
    /// 1000 / diffusion_steps when `rescale_timesteps`, else 1.
    t_scale: f64,
}

impl Adm {
    pub fn new(unet: unet::AdmUNet, flags: &Flags) -> Result<Adm, String> {
        let layout = OutputLayout {
            prediction: if flags.bool("predict_xstart")? {
                PredictionType::Sample
            } else {
                PredictionType::Epsilon
            },
            learned_variance: flags
                .bool("learn_sigma")?
                .then_some(VarianceType::LearnedRange),
        };
        let t_scale = if flags.bool("rescale_timesteps")? {
            1000.0 / flags.int("diffusion_steps")? as f64
        } else {
            1.0
        };
        Ok(Adm {
            class_cond: unet.arch.num_classes.is_some(),
            unet: Mutex::new(unet),
            layout,
            t_scale,
        })
    }
}

impl Denoiser for Adm {
    fn family(&self) -> &'static str {
        "ADM U-Net (guided-diffusion)"
    }

    fn accepts(&self) -> Accepts {
        Accepts::class_labels_only(self.class_cond)
    }

    fn output_layout(&self) -> &OutputLayout {
        &self.layout
    }

    fn kind(&self) -> Kind {
        Kind::Float
    }

    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Tensor, NodeError> {
        let unet = self
            .unet
            .lock()
            .map_err(|_| NodeError::new("the ADM U-Net was poisoned by an earlier panic"))?;
        // respace.py `_WrappedModel`: `new_ts.float() * (1000.0 / steps)` in float32.
        let t = (t as f32 * self.t_scale as f32) as f64;
        let ts = Tensor::full([x.size()[0]], t, (Kind::Float, x.device()));
        let labels = cond.class_labels.as_ref();
        if let (Some(y), Some(n)) = (labels, unet.arch.num_classes) {
            check_labels(y, n, "class_labels")?;
        }
        // `catch`: a Ctrl-C between blocks ends the call without poisoning the lock.
        diffgraph_sdk::interrupt::catch(|| tch::no_grad(|| unet.forward(x, &ts, labels)))
    }
}

/// The loaders' `precision` choices.
pub const PRECISIONS: [&str; 4] = ["float32", "flags", "float16", "bfloat16"];

/// The torso's compute type for a `precision` choice: `flags` follows the
/// checkpoint's `use_fp16` (`classifier_use_fp16`) as the reference does.
pub fn torso_kind(precision: &str, use_fp16: bool) -> Result<Kind, String> {
    Ok(match precision {
        "float32" => Kind::Float,
        "flags" if use_fp16 => Kind::Half,
        "flags" => Kind::Float,
        "float16" => Kind::Half,
        "bfloat16" => Kind::BFloat16,
        p => {
            return Err(format!(
                "precision `{p}`: expected one of {}",
                PRECISIONS.join(", ")
            ))
        }
    })
}

/// Builds the U-Net of `arch` from named tensors; every missing, unexpected
/// and mis-shaped key listed on failure.
pub fn load_unet(
    tensors: BTreeMap<String, Tensor>,
    arch: &Arch,
    device: Device,
    source: &str,
) -> Result<unet::AdmUNet, String> {
    let mut w = Weights::new(tensors, Kind::Float, device, source);
    let model = unet::AdmUNet::load(&mut w, arch);
    w.finish()?;
    Ok(model)
}

/// Builds the classifier of `arch` from named tensors, as [`load_unet`].
pub fn load_classifier(
    tensors: BTreeMap<String, Tensor>,
    arch: &ClassifierArch,
    device: Device,
    source: &str,
) -> Result<classifier::AdmClassifier, String> {
    let mut w = Weights::new(tensors, Kind::Float, device, source);
    let model = classifier::AdmClassifier::load(&mut w, arch);
    w.finish()?;
    Ok(model)
}
