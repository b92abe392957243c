//! ComfyUI's sampling numerics (ComfyUI's `comfy/model_sampling.py`,
//! `comfy/samplers.py`, `comfy/k_diffusion/sampling.py`), which differ from
//! diffusers': sigmas from the discrete schedule computed in float64
//! ([`model_sampling`]), ComfyUI's nine schedulers and KSampler's
//! step/denoise/start/end handling ([`schedulers`]), and the scalar helpers
//! the k-diffusion samplers' float32 arithmetic needs ([`scalar0`]).
//!
//! Every operation that ComfyUI performs on a torch tensor is performed here
//! on a libtorch tensor with the same op (the same kernels, so the same
//! rounding), and every Python-float computation in Rust `f64`.
pub mod area;
pub mod beta_ppf;
pub mod model_sampling;
pub mod names;
pub mod scalar0;
pub mod schedulers;

pub use model_sampling::{DiscreteSampling, ModelPrediction};
pub use schedulers::{ksampler_sigmas, scheduler_sigmas, truncate_steps, SCHEDULER_NAMES};

#[cfg(test)]
mod parity_tests;
