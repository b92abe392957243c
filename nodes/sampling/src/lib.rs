//! # diffgraph sampling nodes
//!
//! Noise schedulers for diffusion models with diffusers' numerics (each
//! formula cites its `diffusers/schedulers/scheduling_*.py`), plus demo
//! nodes that make complete sampling graphs without model weights.
//!
//! - [`config`]: sampler kinds and their config, as diffusers' `from_config`
//!   builds it from a `scheduler_config.json` or SD's defaults.
//! - [`schedule`]: betas and `alphas_cumprod`; [`spacing`]: inference
//!   timesteps; [`sigmas`]: sigma tables (Karras too); [`numpy`]: the numpy
//!   arithmetic those depend on; [`scalar`]: torch's float32 scalar log/exp;
//!   [`quadrature`]: LMS coefficients.
//! - [`sampler`]: the [`sampler::Sampler`] trait (the swap point);
//!   [`samplers`]: DDIM, DDPM, PNDM, LMS, Euler, Euler ancestral, Heun,
//!   DPM-Solver++ 2M, one file each.
//! - [`prediction`]: x0 and eps from the model output per `prediction_type`.
//! - [`noise`]: seeded noise identical to diffusers' CPU generator draws.
//! - [`state`]: the `SCHEDULER` object the graph's loop carries.
//! - [`nodes`]: `Scheduler`, `DDIMScheduler`, `ScaleModelInput`,
//!   `SchedulerStep`, `AddNoise`, `SchedulerAlphaBar`.
//! - [`demo`]: `ProceduralImages`, `ExactDenoiser`, `SyntheticModel`.
pub mod config;
pub mod demo;
pub mod nodes;
pub mod noise;
pub mod numpy;
pub mod prediction;
pub mod quadrature;
pub mod sampler;
pub mod samplers;
pub mod scalar;
pub mod schedule;
pub mod sigmas;
pub mod spacing;
pub mod state;

#[cfg(test)]
mod benchmark;
#[cfg(test)]
mod parity_tests;
#[cfg(test)]
mod scheduler_parity_tests;

diffgraph_sdk::export_plugin!(
    "sampling",
    [
        nodes::Scheduler,
        nodes::DdimScheduler,
        nodes::SchedulerStep,
        nodes::ScaleModelInput,
        nodes::AddNoise,
        nodes::SchedulerAlphaBar,
        demo::ProceduralImages,
        demo::ExactDenoiser,
        demo::SyntheticModel,
    ]
);
