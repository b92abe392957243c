//! # diffgraph guidance nodes
//!
//! Guidance as ordinary nodes inside the denoising loop, between the model
//! evaluation and the scheduler step (category "guidance"):
//!
//! - [`cfg`]: `CFGMixer`, classifier-free guidance (Ho & Salimans 2022, eq. 6)
//!   with diffusers' guidance rescale (Lin et al. 2023).
//! - [`classifier`]: `LoadClassifier` (a TorchScript noise-aware classifier,
//!   port type `CLASSIFIER`) and the autograd gradient of log p_φ(y | x_t).
//! - [`guide`]: classifier guidance (Dhariwal & Nichol 2021) in the DDIM form
//!   (`ClassifierGuidance`, Algorithm 2) and the DDPM form
//!   (`ClassifierGuidanceDDPM`, Algorithm 1).
//! - [`schedule`]: ᾱ_t lookups in the scheduler's `alphas_cumprod`; the
//!   diffusion math (ε/v/x_0 conversions, the DDPM step variance) is
//!   `diffgraph_diffusion`'s.
//!
//! docs/guidance.md shows the formulas next to the graphs that implement them
//! and the analytic model (tests/fixtures/gmm) they are verified on.
pub mod cfg;
pub mod classifier;
pub mod guide;
pub mod schedule;

#[cfg(test)]
mod tests;

diffgraph_sdk::export_plugin!(
    "guidance",
    [
        cfg::CfgMixer,
        classifier::LoadClassifier,
        guide::ClassifierGuidance,
        guide::ClassifierGuidanceDdpm,
    ]
);
