//! guided-diffusion's `GaussianDiffusion` / `SpacedDiffusion`
//! (`guided_diffusion/gaussian_diffusion.py`, `respace.py`): the ADM
//! schedules and steps, kept apart from the diffusers-style [`crate::schedule`]
//! because they differ in ways parity depends on:
//!
//! - tables in float64 (numpy), each coefficient rounded to float32 only when
//!   a step uses it (`_extract_into_tensor(...).float()`);
//! - respacing by `space_timesteps` ("250", "ddim25", "100,50,25"), which is
//!   neither diffusers' linspace nor leading spacing for most counts, with
//!   betas re-derived from the kept ᾱ and the model called with the original
//!   index (`timestep_map`);
//! - learned-range variance interpolated in log space per pixel;
//! - classifier guidance as `condition_mean` (DDPM: mean + Σ·∇) and
//!   `condition_score` (DDIM: ε − √(1−ᾱ)·∇ after x₀ was clipped and ε
//!   re-derived from it).
//!
//! [`tables`]: beta schedules, spacing, the respaced tables. [`step`]: one
//! `p_sample` / `ddim_sample` on tensors.
pub mod step;
pub mod tables;

pub use step::{MeanVar, ModelVar};
pub use tables::{named_beta_schedule, space_timesteps, GaussianDiffusion};
