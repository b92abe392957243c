//! # diffgraph sampling nodes
//!
//! Noise schedules and samplers for diffusion models, following diffusers
//! (`schedulers/scheduling_ddim.py`) numerically, plus two demo nodes that
//! make a complete sampling graph without model weights.
//!
//! - [`schedule`]: the scheduler config, betas and `alphas_cumprod`.
//! - [`spacing`]: the inference timesteps for each `timestep_spacing`.
//! - [`sampler`]: the [`sampler::Sampler`] trait every sampler implements
//!   (timesteps, init_noise_sigma, scale_model_input, step).
//! - [`prediction`]: x0 and eps from the model output per `prediction_type`.
//! - [`noise`]: seeded per-step noise for stochastic samplers.
//! - [`ddim`]: the DDIM sampler.
//! - [`nodes`]: `DDIMScheduler`, `SchedulerStep`, `ScaleModelInput`.
//! - [`demo`]: `ProceduralImages` and `ExactDenoiser`.
//!
//! A new sampler implements [`sampler::Sampler`] and gets its own scheduler
//! node; `SchedulerStep` and `ScaleModelInput` serve every sampler.
pub mod ddim;
pub mod demo;
pub mod nodes;
pub mod noise;
pub mod prediction;
pub mod sampler;
pub mod schedule;
pub mod spacing;

#[cfg(test)]
mod parity_tests;

diffgraph_sdk::export_plugin!(
    "sampling",
    [
        nodes::DdimScheduler,
        nodes::SchedulerStep,
        nodes::ScaleModelInput,
        demo::ProceduralImages,
        demo::ExactDenoiser,
    ]
);
