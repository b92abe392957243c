//! Euler (Karras et al. 2022, Algorithm 2, without churn), following
//! diffusers `schedulers/scheduling_euler_discrete.py` (`set_timesteps`,
//! `scale_model_input`, `step` with the default `s_churn=0`):
//!
//! - sigmas at the spaced timesteps (float32 timesteps, fractional for
//!   linspace; Karras sigmas optional), then 0 (or sigma_min);
//! - the model sees `x / sqrt(sigma² + 1)` at the timestep t;
//! - x0 from the output (`sigma_common::sigma_x0`), d = (x - x0) / sigma,
//!   x_prev = x + d·(sigma_next - sigma), in float32, cast back to the model
//!   output's dtype.
use crate::sampler::{check_step_inputs, Sampler, StepInput, StepOutput};
use crate::samplers::sigma_common::{sigma_sampler_methods, sigma_x0, SigmaSchedule};
use crate::schedule::{FinalSigmas, ScheduleConfig};
use diffgraph_sdk::prelude::*;

#[derive(Clone)]
pub struct Euler {
    s: SigmaSchedule,
}

impl Euler {
    pub fn new(config: ScheduleConfig, steps: i64) -> Result<Euler, NodeError> {
        let (karras, sigma_min) = (
            config.use_karras_sigmas,
            config.final_sigmas_type == FinalSigmas::SigmaMin,
        );
        Ok(Euler {
            s: SigmaSchedule::new(config, steps, karras, sigma_min)?,
        })
    }
}

impl Sampler for Euler {
    sigma_sampler_methods!();

    fn name(&self) -> &'static str {
        "EulerDiscreteScheduler"
    }

    fn step(&mut self, input: StepInput) -> Result<StepOutput, NodeError> {
        let model_output = input.model_output;
        check_step_inputs(model_output, input.sample)?;
        let sample = input.sample.f_to_kind(Kind::Float)?;
        // gamma = 0 (no churn): sigma_hat = sigma * (0 + 1) = sigma.
        let sigma_hat = self.s.sigma(input.index)?;
        let x0 = sigma_x0(self.s.prediction_type(), model_output, &sample, sigma_hat)?;
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
