//! The model-family seam: what a `MODEL` handle holds, whatever the family.
//!
//! A family (SD's text-conditioned U-Net, a TorchScript export, later ADM's
//! class-conditional pixel U-Net, SDXL, LDM) is one module of this folder
//! with a type implementing [`Denoiser`]: it says which conditioning it uses
//! ([`Accepts`]), what its output holds ([`OutputLayout`]) and evaluates a
//! batch given a [`Conditioning`]. `UNetStep` (alias `Denoise`) batches the
//! branches, checks the conditioning against [`Accepts`] and mixes the
//! guidance for every family alike.
//!
//! - [`sd`]: the Stable Diffusion 1.x/2.x U-Net (text context).
//! - [`sdxl`]: SDXL base and refiner (text context, pooled embedding, time ids).
//! - [`torchscript`]: a TorchScript module with forward(x_t, t, context).
//! - [`adm`]: guided-diffusion's ADM U-Net (class labels, learned variance).
//! - [`ldm`]: latent diffusion's UNet2DModel (unconditional or class labels).
//! - [`class_embedder`]: CompVis' ImageNet LDM (class labels through a
//!   ClassEmbedder into SD's U-Net's cross-attention).
pub mod adm;
pub mod class_embedder;
pub mod conditioning;
pub mod ldm;
pub mod sd;
pub mod sdxl;
pub mod torchscript;

pub use conditioning::{check_labels, Accepts, Conditioning, Use};
use diffgraph_diffusion::{PredictionType, VarianceType};
use diffgraph_sdk::prelude::*;

/// Port type of loaded denoisers.
pub const MODEL: &str = "MODEL";

/// What a denoiser's output holds: the prediction (channels 0..C) and, for
/// learned-variance models, the variance channels C..2C after it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputLayout {
    pub prediction: PredictionType,
    /// `VarianceType::Learned` or `LearnedRange` (ADM: eps + the
    /// interpolation v of Nichol & Dhariwal 2021; diffusers
    /// `schedulers/scheduling_ddpm.py` `_get_variance`), else `None`.
    pub learned_variance: Option<VarianceType>,
}

impl OutputLayout {
    /// A prediction alone, no variance channels.
    pub fn prediction(prediction: PredictionType) -> OutputLayout {
        OutputLayout {
            prediction,
            learned_variance: None,
        }
    }
}

/// A model of some family that predicts noise (or v, or x0) from a noisy
/// sample, a timestep and a [`Conditioning`].
///
/// **Where it lives, and why**: a plain Rust trait of the sd plugin, whose
/// families are modules of this one crate. A `MODEL` object crosses the
/// plugin boundary only as an opaque handle: the host passes it back to the
/// library that made it, and another plugin cannot look inside. That is on
/// purpose: plugins are separately compiled cdylibs, and a Rust trait object
/// (its vtable, the layout of what it points to, even `TypeId`) is not a
/// stable ABI between them, so sharing `dyn Denoiser` across plugins would
/// be unsound. A new family therefore goes into this crate (a module of
/// `family/` plus its loader); nodes of other plugins work on the tensors
/// that `UNetStep` outputs.
pub trait Denoiser: Send + Sync {
    /// The family's name, for messages ("Stable Diffusion U-Net", ...).
    fn family(&self) -> &'static str;

    /// Which parts of a [`Conditioning`] the model needs, may take or cannot use.
    fn accepts(&self) -> Accepts;

    /// What the output holds.
    fn output_layout(&self) -> &OutputLayout;

    /// The dtype the model computes in: floating inputs are cast to it,
    /// outputs are cast back to float32 by the caller.
    fn kind(&self) -> Kind;

    /// One batched evaluation: `x` [B, ...], `t` the timestep for the whole
    /// batch, `cond` with every given field of batch B (already checked
    /// against [`Denoiser::accepts`]).
    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Tensor, NodeError>;

    /// LoRA: the family's patchable weights, if it takes LoRA files
    /// (default: it does not; `LoadLora` says so).
    fn lora(&self) -> Option<&dyn LoraDenoiser> {
        None
    }
}

/// A denoiser whose weights LoRA files patch ([`crate::lora`]).
pub trait LoraDenoiser {
    /// How LoRA files name its weights.
    fn lora_index(&self) -> &crate::lora::KeyIndex;
    /// The same model (shared weights) with one more patch (none: a plain
    /// copy of the handle, e.g. at strength 0).
    fn with_lora(&self, patch: Option<crate::lora::Patch>) -> Box<dyn Denoiser>;
}

/// The object behind a `MODEL` port.
pub struct Model {
    pub denoiser: Box<dyn Denoiser>,
}

impl Model {
    pub fn new(denoiser: impl Denoiser + 'static) -> Model {
        Model {
            denoiser: Box::new(denoiser),
        }
    }

    /// Errors when the family needs a field that is missing or is given one
    /// it cannot use.
    pub fn check(&self, cond: &Conditioning, branch: &str) -> Result<(), NodeError> {
        cond.check(&self.denoiser.accepts(), self.denoiser.family(), branch)
    }
}
