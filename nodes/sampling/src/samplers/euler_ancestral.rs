//! Euler ancestral (k-diffusion `sample_euler_ancestral`, eta = 1), following
//! diffusers `schedulers/scheduling_euler_ancestral_discrete.py`:
//!
//! - sigmas at the spaced timesteps (no Karras option in diffusers), then 0;
//!   `init_noise_sigma` and `scale_model_input` as Euler's;
//! - x0 from the output (epsilon or v_prediction; "sample" is refused, as
//!   diffusers does);
//! - sigma_up = sqrt(s_to² · (s_from² - s_to²) / s_from²),
//!   sigma_down = sqrt(s_to² - sigma_up²);
//! - x_prev = x + (x - x0)/sigma · (sigma_down - sigma) + noise · sigma_up, the
//!   noise being this step's draw from the run's generator (every step draws,
//!   the last one too, as diffusers does).
use crate::sampler::{check_step_inputs, Sampler, StepInput, StepOutput};
use crate::samplers::sigma_common::{sigma_sampler_methods, SigmaSchedule};
use crate::samplers::{SamplerInfo, COMMON};
use diffgraph_diffusion::{scalar, PredictionType, Result, ScheduleConfig};
use diffgraph_sdk::tch::{Kind, Tensor};

pub const INFO: SamplerInfo = SamplerInfo {
    name: "euler_ancestral",
    class_name: "EulerAncestralDiscreteScheduler",
    prediction_types: &[PredictionType::Epsilon, PredictionType::VPrediction],
    build: |s| Ok(Box::new(EulerAncestral::new(s.schedule.clone(), s.steps)?)),
    ..COMMON
};

#[derive(Clone)]
pub struct EulerAncestral {
    s: SigmaSchedule,
}

impl EulerAncestral {
    pub fn new(config: ScheduleConfig, steps: i64) -> Result<EulerAncestral> {
        Ok(EulerAncestral {
            s: SigmaSchedule::new(config, steps, false, false)?,
        })
    }
}

impl Sampler for EulerAncestral {
    sigma_sampler_methods!();

    fn info(&self) -> &'static SamplerInfo {
        &INFO
    }

    fn step(&mut self, input: StepInput) -> Result<StepOutput> {
        let model_output = input.model_output;
        check_step_inputs(model_output, input.sample)?;
        let sigma = self.s.sigma(input.index)?;
        let sample = input.sample.f_to_kind(Kind::Float)?;
        let x0 = self
            .s
            .prediction_type()
            .x0_from_sigma(model_output, &sample, sigma)?;
        let (sigma_from, sigma_to) = (sigma, self.s.sigma(input.index + 1)?);
        let sigma_up = scalar::sqrt(
            sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
                / (sigma_from * sigma_from),
        )?;
        let sigma_down = scalar::sqrt(sigma_to * sigma_to - sigma_up * sigma_up)?;
        let derivative = sample.f_sub(&x0)?.f_div_scalar(f64::from(sigma))?;
        let dt = sigma_down - sigma;
        let prev_sample = sample.f_add(&derivative.f_mul_scalar(f64::from(dt))?)?;
        let noise = (input.noise)(model_output)?;
        let prev_sample = prev_sample
            .f_add(&noise.f_mul_scalar(f64::from(sigma_up))?)?
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
