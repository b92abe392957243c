//! # diffgraph sampling nodes
//!
//! Noise schedulers for diffusion models with diffusers' numerics (each
//! formula cites its `diffusers/schedulers/scheduling_*.py`), plus demo
//! nodes that make complete sampling graphs without model weights.
//!
//! The diffusion math (schedules, timesteps, sigma tables, prediction
//! conversions, numpy/libtorch float arithmetic) is `diffgraph_diffusion`'s;
//! this crate holds the samplers and their nodes:
//!
//! - [`config`]: a `scheduler_config.json` (or SD's defaults) and the node's
//!   typed overrides, merged as diffusers' `from_config` does.
//! - [`sampler`]: the [`sampler::Sampler`] trait (the swap point);
//!   [`samplers`]: DDIM, DDPM, PNDM, LMS, Euler, Euler ancestral, Heun,
//!   DPM-Solver++ 2M, one file each, each declaring itself (`SamplerInfo`)
//!   in the registry `samplers::SAMPLERS`; [`quadrature`]: LMS coefficients.
//! - [`noise`]: seeded noise identical to diffusers' CPU generator draws;
//!   [`brownian`]: torchsde's Brownian tree, ComfyUI's SDE samplers' noise.
//! - [`state`]: the `SCHEDULER` object the graph's loop carries.
//! - [`nodes`]: `Scheduler` (also under its first name `DDIMScheduler`),
//!   `ScaleModelInput`, `SchedulerStep`, `AddNoise`, `SchedulerAlphaBar`.
//! - [`demo`]: `ProceduralImages`, `ExactDenoiser`, `SyntheticModel`.
#![deny(unsafe_code)]
pub mod brownian;
pub mod config;
pub mod demo;
pub mod ksampler;
pub mod nodes;
pub mod noise;
pub mod quadrature;
pub mod sampler;
pub mod samplers;
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
        nodes::Scheduler::GENERAL,
        nodes::Scheduler::DDIM,
        nodes::SchedulerStep,
        nodes::ScaleModelInput,
        nodes::AddNoise,
        nodes::SchedulerAlphaBar,
        nodes::ADMSchedule,
        nodes::ADMStep,
        nodes::SplitVariance,
        nodes::KSchedule,
        nodes::KSigmas,
        nodes::SplitSigmas,
        nodes::KSamplerStart,
        nodes::KModelInput,
        nodes::CFGDenoise,
        nodes::AreaCrop,
        nodes::AreaAccumulate,
        nodes::AreaMean,
        nodes::KSamplerStep,
        demo::ProceduralImages,
        demo::ExactDenoiser,
        demo::SyntheticModel,
    ]
);
