//! DDPM (Ho et al. 2020), following diffusers `schedulers/scheduling_ddpm.py`
//! (`DDPMScheduler.step`, `_get_variance`, `previous_timestep`):
//!
//! 1. prev_t = the next timestep of the schedule, -1 after the last;
//!    a_prev = alphas_cumprod[prev_t], or 1 when prev_t < 0
//! 2. x0 from the model output (clamped to ±clip_sample_range when clip_sample)
//! 3. x_prev = (sqrt(a_prev)·beta_t / (1 - a_t))·x0 + (sqrt(alpha_t)·(1 - a_prev) / (1 - a_t))·x_t
//!    with alpha_t = a_t / a_prev, beta_t = 1 - alpha_t
//! 4. when t > 0, + std·noise with the fixed variance of
//!    `diffgraph_diffusion::variance` (the learned kinds need the model's
//!    variance channels and are refused)
//!
//! The noise is the run's next generator draw (`crate::noise`), as diffusers'
//! `randn_tensor(..., generator=generator)`.
use crate::sampler::{
    add_noise_alpha, check_step_inputs, ClipSample, Sampler, StepInput, StepOutput,
};
use crate::samplers::{SamplerInfo, Setup, COMMON};
use diffgraph_diffusion::prediction::predict_f32_diffusers;
use diffgraph_diffusion::variance::StepVariance;
use diffgraph_diffusion::{
    integer_timestep, scalar, timesteps, Result, Schedule, ScheduleConfig, TimestepSpacing,
    VarianceType,
};
use diffgraph_sdk::tch::Tensor;
use std::sync::Arc;

pub const INFO: SamplerInfo = SamplerInfo {
    name: "ddpm",
    class_name: "DDPMScheduler",
    defaults: || ScheduleConfig {
        timestep_spacing: TimestepSpacing::Leading,
        ..ScheduleConfig::default()
    },
    variance_types: &VarianceType::FIXED,
    build: |s| {
        let config = DdpmConfig::read(s)?;
        Ok(Box::new(Ddpm::new(s.schedule.clone(), config, s.steps)?))
    },
    ..COMMON
};

/// DDPMScheduler's own keys, with diffusers' class defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdpmConfig {
    pub clip: ClipSample,
    pub variance_type: VarianceType,
}

impl DdpmConfig {
    pub fn read(s: &Setup) -> Result<DdpmConfig> {
        Ok(DdpmConfig {
            clip: ClipSample::read(s, true)?,
            variance_type: s.name("variance_type", VarianceType::FixedSmall)?,
        })
    }
}

#[derive(Clone)]
pub struct Ddpm {
    schedule: Arc<Schedule>,
    timesteps: Arc<[f32]>,
    own: DdpmConfig,
}

impl Ddpm {
    pub fn new(config: ScheduleConfig, own: DdpmConfig, steps: i64) -> Result<Ddpm> {
        if own.variance_type.is_learned() {
            return Err(format!(
                "DDPM with variance_type {:?} needs the model's variance output, which is not supported",
                own.variance_type
            )
            .into());
        }
        let timesteps: Vec<f32> = timesteps::timesteps(&config, steps)?
            .into_iter()
            .map(|t| t as f32)
            .collect();
        Ok(Ddpm {
            schedule: Arc::new(Schedule::new(config)?),
            timesteps: timesteps.into(),
            own,
        })
    }
}

impl Sampler for Ddpm {
    fn info(&self) -> &'static SamplerInfo {
        &INFO
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> Result<f32> {
        Ok(1.0)
    }

    fn step(&mut self, input: StepInput) -> Result<StepOutput> {
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

        let (x0, _) =
            predict_f32_diffusers(config.prediction_type, model_output, sample, alpha_prod_t)?;
        let x0 = self.own.clip.apply(x0)?;
        let x0_coeff = scalar::sqrt(alpha_prod_t_prev)? * current_beta_t / beta_prod_t;
        let sample_coeff = scalar::sqrt(current_alpha_t)? * beta_prod_t_prev / beta_prod_t;
        let mut prev_sample =
            scalar::mul(&x0, x0_coeff)?.f_add(&scalar::mul(sample, sample_coeff)?)?;
        if t > 0 {
            let noise = (input.noise)(model_output)?;
            let std = StepVariance::new(alpha_prod_t, alpha_prod_t_prev)
                .fixed_std(self.own.variance_type)?;
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
    ) -> Result<Tensor> {
        add_noise_alpha(&self.schedule, original, noise, timestep)
    }

    fn box_clone(&self) -> Box<dyn Sampler> {
        Box::new(self.clone())
    }
}
