//! # diffgraph-diffusion
//!
//! The diffusion math that diffgraph's node plugins share, with one
//! definition of each concept. A plain Rust library: no C ABI, no plugin
//! export; plugins link it statically. Formulas cite the diffusers (or
//! guided-diffusion) function they follow.
//!
//! - [`prediction`]: `prediction_type` and the ε / x_0 / v conversions.
//! - [`variance`]: `variance_type` and the DDPM step variance (posterior
//!   variance, fixed and learned kinds).
//! - [`schedule`]: the shared scheduler config, betas and `alphas_cumprod`.
//! - [`timesteps`]: inference timesteps (`timestep_spacing`) and timestep checks.
//! - [`sigmas`]: sigma tables of the sigma-parameterised samplers (Karras too).
//! - [`names`]: [`ConfigName`], the name table of a config enum.
//! - [`numpy`], [`scalar`]: numpy's and libtorch's float arithmetic, for
//!   results that match diffusers bit for bit.
//! - [`cfg`]: the classifier-free guidance mix (UNetStep and CFGMixer both call it).
//! - [`comfy`]: ComfyUI's model sampling, schedulers and KSampler sigma handling.
//! - [`error`]: [`Error`]; plugins convert it through `String`.
#![deny(unsafe_code)]
pub mod cfg;
pub mod comfy;
pub mod error;
pub mod gaussian;
pub mod names;
pub mod numpy;
pub mod prediction;
pub mod scalar;
pub mod schedule;
pub mod sigmas;
pub mod timesteps;
pub mod variance;

pub use error::{Error, Result};
pub use names::ConfigName;
pub use prediction::PredictionType;
pub use schedule::{BetaSchedule, Schedule, ScheduleConfig};
pub use timesteps::{integer_timestep, TimestepSpacing};
pub use variance::VarianceType;
