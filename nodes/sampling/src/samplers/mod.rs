//! The samplers, one file each, and [`build`], which makes one by kind.
//!
//! | kind | diffusers class | file |
//! |---|---|---|
//! | ddim | DDIMScheduler | [`ddim`] |
//! | ddpm | DDPMScheduler | [`ddpm`] |
//! | pndm | PNDMScheduler (PLMS) | [`pndm`] |
//! | lms | LMSDiscreteScheduler | [`lms`] |
//! | euler | EulerDiscreteScheduler | [`euler`] |
//! | euler_ancestral | EulerAncestralDiscreteScheduler | [`euler_ancestral`] |
//! | heun | HeunDiscreteScheduler | [`heun`] |
//! | dpmpp_2m | DPMSolverMultistepScheduler | [`dpmpp_2m`] |
//!
//! Adding a sampler: a file here implementing `crate::sampler::Sampler`, a
//! `SamplerKind` variant with its names and class defaults in
//! `crate::config`, and its arm in [`build`].
pub mod ddim;
pub mod ddpm;
pub mod dpmpp_2m;
pub mod euler;
pub mod euler_ancestral;
pub mod heun;
pub mod lms;
pub mod pndm;
pub mod sigma_common;

use crate::config::SamplerKind;
use crate::sampler::Sampler;
use crate::schedule::ScheduleConfig;
use diffgraph_sdk::NodeError;

/// A `kind` sampler with `steps` inference steps (`set_timesteps(steps)`);
/// `eta` is DDIM's (0 elsewhere).
pub fn build(
    kind: SamplerKind,
    config: ScheduleConfig,
    steps: i64,
    eta: f64,
) -> Result<Box<dyn Sampler>, NodeError> {
    if config.use_karras_sigmas && !kind.supports_karras() {
        return Err(format!(
            "Karras sigmas are not available for {} (diffusers offers them for LMS, Euler, Heun and DPM-Solver)",
            kind.class_name()
        )
        .into());
    }
    if eta != 0.0 && kind != SamplerKind::Ddim {
        return Err(format!("eta is a DDIM option; {} has none", kind.class_name()).into());
    }
    Ok(match kind {
        SamplerKind::Ddim => Box::new(ddim::Ddim::new(config, steps, eta)?),
        SamplerKind::Ddpm => Box::new(ddpm::Ddpm::new(config, steps)?),
        SamplerKind::Pndm => Box::new(pndm::Pndm::new(config, steps)?),
        SamplerKind::Lms => Box::new(lms::Lms::new(config, steps)?),
        SamplerKind::Euler => Box::new(euler::Euler::new(config, steps)?),
        SamplerKind::EulerAncestral => {
            Box::new(euler_ancestral::EulerAncestral::new(config, steps)?)
        }
        SamplerKind::Heun => Box::new(heun::Heun::new(config, steps)?),
        SamplerKind::DpmSolverMultistep => Box::new(dpmpp_2m::DpmSolver::new(config, steps)?),
    })
}

#[cfg(test)]
pub mod testing {
    use crate::sampler::{Sampler, StepInput, StepOutput};
    use diffgraph_sdk::prelude::*;

    /// One deterministic step at `index` (noise requests fail).
    pub fn step_once(
        sampler: &mut dyn Sampler,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
    ) -> Result<StepOutput, NodeError> {
        let timestep = *sampler.timesteps().get(index).ok_or("index past the end")?;
        let no_noise =
            |_: &Tensor| -> Result<Tensor, NodeError> { Err("no noise in this test".into()) };
        sampler.step(StepInput {
            index,
            timestep,
            model_output,
            sample,
            noise: &no_noise,
        })
    }
}
