//! DDPM (Ho et al. 2020), following diffusers `schedulers/scheduling_ddpm.py`
//! (`DDPMScheduler.step`, `_get_variance`, `previous_timestep`):
//!
//! 1. prev_t = the next timestep of the schedule, -1 after the last;
//!    a_prev = alphas_cumprod[prev_t], or 1 when prev_t < 0
//! 2. x0 from the model output (clamped to ±clip_sample_range when clip_sample)
//! 3. x_prev = (sqrt(a_prev)·beta_t / (1 - a_t))·x0 + (sqrt(alpha_t)·(1 - a_prev) / (1 - a_t))·x_t
//!    with alpha_t = a_t / a_prev, beta_t = 1 - alpha_t
//! 4. when t > 0, + sqrt(variance)·noise, variance = max((1 - a_prev) / (1 - a_t)·beta_t, 1e-20)
//!    (fixed_small; fixed_small_log: exp(0.5·log(variance)); fixed_large: beta_t)
//!
//! The noise is the run's next generator draw (`crate::noise`), as diffusers'
//! `randn_tensor(..., generator=generator)`.
use crate::prediction::predict;
use crate::sampler::{
    add_noise_alpha, check_step_inputs, integer_timestep, Sampler, StepInput, StepOutput,
};
use crate::scalar;
use crate::schedule::{Schedule, ScheduleConfig, VarianceType};
use crate::spacing;
use diffgraph_sdk::prelude::*;
use std::sync::Arc;

#[derive(Clone)]
pub struct Ddpm {
    schedule: Arc<Schedule>,
    timesteps: Arc<[f32]>,
}

impl Ddpm {
    pub fn new(config: ScheduleConfig, steps: i64) -> Result<Ddpm, NodeError> {
        let timesteps: Vec<f32> = spacing::timesteps(&config, steps)?
            .into_iter()
            .map(|t| t as f32)
            .collect();
        Ok(Ddpm {
            schedule: Arc::new(Schedule::new(config)?),
            timesteps: timesteps.into(),
        })
    }

    /// The per-step variance (`_get_variance`), a float32 scalar.
    fn variance(&self, alpha_prod_t: f32, alpha_prod_t_prev: f32) -> Result<f32, NodeError> {
        let current_beta_t = 1.0f32 - alpha_prod_t / alpha_prod_t_prev;
        let variance =
            ((1.0f32 - alpha_prod_t_prev) / (1.0f32 - alpha_prod_t) * current_beta_t).max(1e-20);
        Ok(match self.schedule.config.variance_type {
            VarianceType::FixedSmall => scalar::sqrt(variance)?,
            // torch.exp(0.5 * torch.log(variance)), not square-rooted afterwards.
            VarianceType::FixedSmallLog => scalar::exp(0.5f32 * scalar::log(variance)?)?,
            VarianceType::FixedLarge => scalar::sqrt(current_beta_t)?,
        })
    }
}

impl Sampler for Ddpm {
    fn name(&self) -> &'static str {
        "DDPMScheduler"
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> Result<f32, NodeError> {
        Ok(1.0)
    }

    fn step(&mut self, input: StepInput) -> Result<StepOutput, NodeError> {
        let (model_output, sample) = (input.model_output, input.sample);
        check_step_inputs(model_output, sample)?;
        let config = &self.schedule.config;
        let t = integer_timestep(input.timestep)?;
        let alpha_prod_t = self.schedule.alpha_cumprod(t)?;
        let alpha_prod_t_prev = match self.timesteps.get(input.index + 1) {
            Some(&prev) => self.schedule.alpha_cumprod(integer_timestep(prev)?)?,
            None => 1.0,
        };
        let beta_prod_t = 1.0f32 - alpha_prod_t;
        let beta_prod_t_prev = 1.0f32 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0f32 - current_alpha_t;

        let (mut x0, _) = predict(config.prediction_type, model_output, sample, alpha_prod_t)?;
        if config.clip_sample {
            let r = config.clip_sample_range;
            x0 = x0.f_clamp(-r, r)?;
        }
        let x0_coeff = scalar::sqrt(alpha_prod_t_prev)? * current_beta_t / beta_prod_t;
        let sample_coeff = scalar::sqrt(current_alpha_t)? * beta_prod_t_prev / beta_prod_t;
        let mut prev_sample =
            scalar::mul(&x0, x0_coeff)?.f_add(&scalar::mul(sample, sample_coeff)?)?;
        if t > 0 {
            let noise = (input.noise)(model_output)?;
            let std = self.variance(alpha_prod_t, alpha_prod_t_prev)?;
            prev_sample = prev_sample.f_add(&scalar::mul(&noise, std)?)?;
        }
        Ok(StepOutput {
            prev_sample,
            pred_original_sample: x0,
        })
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        _index: usize,
        timestep: f32,
    ) -> Result<Tensor, NodeError> {
        add_noise_alpha(&self.schedule, original, noise, timestep)
    }

    fn box_clone(&self) -> Box<dyn Sampler> {
        Box::new(self.clone())
    }
}
