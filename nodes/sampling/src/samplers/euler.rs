//! Euler (Karras et al. 2022, Algorithm 2, without churn), following
//! diffusers `schedulers/scheduling_euler_discrete.py` (`set_timesteps`,
//! `scale_model_input`, `step` with the default `s_churn=0`):
//!
//! - sigmas at the spaced timesteps (float32 timesteps, fractional for
//!   linspace; Karras sigmas optional), then 0 (or sigma_min);
//! - the model sees `x / sqrt(sigma² + 1)` at the timestep t;
//! - x0 from the output (`PredictionType::x0_from_sigma`), d = (x - x0) / sigma,
//!   x_prev = x + d·(sigma_next - sigma), in float32, cast back to the model
//!   output's dtype.
use crate::sampler::{check_step_inputs, Sampler, StepInput, StepOutput};
use crate::samplers::sigma_common::{sigma_sampler_methods, FinalSigmas, SigmaSchedule};
use crate::samplers::{SamplerInfo, COMMON};
use diffgraph_diffusion::{Result, ScheduleConfig};
use diffgraph_sdk::tch::{Kind, Tensor};

pub const INFO: SamplerInfo = SamplerInfo {
    name: "euler",
    class_name: "EulerDiscreteScheduler",
    karras: true,
    build: |s| {
        s.file.expect("interpolation_type", &["linear"])?;
        s.file.expect("timestep_type", &["discrete"])?;
        let karras = s.flag("use_karras_sigmas", false)?;
        let final_sigmas = s.name("final_sigmas_type", FinalSigmas::Zero)?;
        Ok(Box::new(Euler::new(
            s.schedule.clone(),
            karras,
            final_sigmas,
            s.steps,
        )?))
    },
    ..COMMON
};

#[derive(Clone)]
pub struct Euler {
    s: SigmaSchedule,
}

impl Euler {
    pub fn new(
        config: ScheduleConfig,
        use_karras_sigmas: bool,
        final_sigmas: FinalSigmas,
        steps: i64,
    ) -> Result<Euler> {
        let sigma_min = final_sigmas == FinalSigmas::SigmaMin;
        Ok(Euler {
            s: SigmaSchedule::new(config, steps, use_karras_sigmas, sigma_min)?,
        })
    }
}

impl Sampler for Euler {
    sigma_sampler_methods!();

    fn info(&self) -> &'static SamplerInfo {
        &INFO
    }

    fn step(&mut self, input: StepInput) -> Result<StepOutput> {
        let model_output = input.model_output;
        check_step_inputs(model_output, input.sample)?;
        let sample = input.sample.f_to_kind(Kind::Float)?;
        // gamma = 0 (no churn): sigma_hat = sigma * (0 + 1) = sigma.
        let sigma_hat = self.s.sigma(input.index)?;
        let x0 = self
            .s
            .prediction_type()
            .x0_from_sigma(model_output, &sample, sigma_hat)?;
        let derivative = sample.f_sub(&x0)?.f_div_scalar(f64::from(sigma_hat))?;
        let dt = self.s.sigma(input.index + 1)? - sigma_hat;
        let prev_sample = sample
            .f_add(&derivative.f_mul_scalar(f64::from(dt))?)?
            .f_to_kind(model_output.kind())?;
        Ok(StepOutput {
            prev_sample,
            pred_original_sample: x0,
        })
    }

    fn box_clone(&self) -> Box<dyn Sampler> {
        Box::new(self.clone())
    }
}
