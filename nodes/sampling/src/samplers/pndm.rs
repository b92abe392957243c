//! PNDM's linear multistep part, PLMS (Liu et al. 2022, "Pseudo Numerical
//! Methods for Diffusion Models"), with `skip_prk_steps=True` as Stable
//! Diffusion configures it, following diffusers `schedulers/scheduling_pndm.py`
//! (`set_timesteps`, `step_plms`, `_get_prev_sample`):
//!
//! - timesteps: the n spaced timesteps, ascending `_timesteps`, become
//!   `plms_timesteps = concat(_timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:])[::-1]`:
//!   n + 1 model calls, the second timestep twice.
//! - step k (counter): eps' = e_0 (k = 0); (e_1 + e_0) / 2 from the first
//!   sample again (k = 1, a Heun-like correction of the first step); then
//!   Adams-Bashforth of order 2, 3, 4 over the last model outputs:
//!   (3e_1 - e_2)/2, (23e_1 - 16e_2 + 5e_3)/12, (55e_1 - 59e_2 + 37e_3 - 9e_4)/24.
//! - `_get_prev_sample` (formula (9) of the paper), with a = alphas_cumprod:
//!   x_prev = sqrt(a_prev / a_t)·x - (a_prev - a_t)·eps' / d,
//!   d = a_t·sqrt(1 - a_prev) + sqrt(a_t·(1 - a_t)·a_prev),
//!   a_prev = final_alpha_cumprod when prev < 0.
//! - v_prediction is turned into eps first; "sample" prediction is refused
//!   (as diffusers does).
//!
//! PNDM's class default is `skip_prk_steps=False` (Runge-Kutta warm-up),
//! which is not implemented: a config that does not mention it gets `true`,
//! as every Stable Diffusion config has, and `false` is refused.
use crate::sampler::{
    add_noise_alpha, check_step_inputs, clone_tensors, Sampler, StepInput, StepOutput,
};
use crate::samplers::{SamplerInfo, COMMON};
use diffgraph_diffusion::prediction::{Coefficients, PredictionType};
use diffgraph_diffusion::scalar::{div, mul, sqrt};
use diffgraph_diffusion::{
    integer_timestep, timesteps, Result, Schedule, ScheduleConfig, TimestepSpacing,
};
use diffgraph_sdk::tch::Tensor;
use std::sync::Arc;

pub const INFO: SamplerInfo = SamplerInfo {
    name: "pndm",
    class_name: "PNDMScheduler",
    defaults: || ScheduleConfig {
        timestep_spacing: TimestepSpacing::Leading,
        ..ScheduleConfig::default()
    },
    prediction_types: &[PredictionType::Epsilon, PredictionType::VPrediction],
    build: |s| {
        if !s.flag("skip_prk_steps", true)? {
            return Err(
                "PNDM with skip_prk_steps=false (Runge-Kutta warm-up) is not supported; \
                        Stable Diffusion uses skip_prk_steps=true"
                    .into(),
            );
        }
        let set_alpha_to_one = s.flag("set_alpha_to_one", false)?;
        Ok(Box::new(Pndm::new(
            s.schedule.clone(),
            set_alpha_to_one,
            s.steps,
        )?))
    },
    ..COMMON
};

pub struct Pndm {
    schedule: Arc<Schedule>,
    timesteps: Arc<[f32]>,
    final_alpha_cumprod: f32,
    step_ratio: i64,
    /// diffusers' `counter`, `ets` and `cur_sample`.
    counter: usize,
    ets: Vec<Tensor>,
    cur_sample: Option<Tensor>,
}

impl Pndm {
    /// PLMS with `skip_prk_steps=True`; `set_alpha_to_one` as the config's.
    pub fn new(config: ScheduleConfig, set_alpha_to_one: bool, steps: i64) -> Result<Pndm> {
        // Ascending `_timesteps`, then the PLMS order.
        let mut asc = timesteps::timesteps(&config, steps)?;
        asc.reverse();
        let n = asc.len();
        let mut plms: Vec<i64> = asc[..n - 1].to_vec();
        if n >= 2 {
            plms.push(asc[n - 2]);
        }
        plms.push(asc[n - 1]);
        plms.reverse();
        let schedule = Schedule::new(config)?;
        Ok(Pndm {
            step_ratio: schedule.num_train_timesteps() / steps,
            final_alpha_cumprod: schedule.final_alpha_cumprod(set_alpha_to_one),
            schedule: Arc::new(schedule),
            timesteps: plms
                .into_iter()
                .map(|t| t as f32)
                .collect::<Vec<_>>()
                .into(),
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
        })
    }

    /// `_get_prev_sample`: also returns the x0 that `eps` implies (diffusers
    /// has none; reported as pred_original_sample).
    fn prev_sample(
        &self,
        sample: &Tensor,
        timestep: i64,
        prev_timestep: i64,
        model_output: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let alpha_prod_t = self.schedule.alpha_cumprod(timestep)?;
        let alpha_prod_t_prev = self
            .schedule
            .alpha_cumprod_prev(prev_timestep, self.final_alpha_cumprod)?;
        let beta_prod_t = 1.0f32 - alpha_prod_t;
        let beta_prod_t_prev = 1.0f32 - alpha_prod_t_prev;
        let c = Coefficients::diffusers_f32(alpha_prod_t)?;
        let eps = self
            .schedule
            .config
            .prediction_type
            .eps_with(model_output, sample, c)?;
        let sample_coeff = sqrt(alpha_prod_t_prev / alpha_prod_t)?;
        let denom = alpha_prod_t * sqrt(beta_prod_t_prev)?
            + sqrt(alpha_prod_t * beta_prod_t * alpha_prod_t_prev)?;
        let prev = mul(sample, sample_coeff)?
            .f_sub(&div(&mul(&eps, alpha_prod_t_prev - alpha_prod_t)?, denom)?)?;
        let x0 = PredictionType::Epsilon.x0_with(&eps, sample, c)?;
        Ok((prev, x0))
    }
}

impl Sampler for Pndm {
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

    fn is_multistep(&self) -> bool {
        true
    }

    /// `step_plms`.
    fn step(&mut self, input: StepInput) -> Result<StepOutput> {
        let (model_output, mut sample) = (input.model_output, input.sample.shallow_clone());
        check_step_inputs(model_output, &sample)?;
        let mut timestep = integer_timestep(input.timestep)?;
        let mut prev_timestep = timestep - self.step_ratio;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                drop(self.ets.remove(0));
            }
            self.ets.push(model_output.shallow_clone());
        } else {
            prev_timestep = timestep;
            timestep += self.step_ratio;
        }
        let e = &self.ets;
        let n = e.len();
        let eps = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.shallow_clone());
            model_output.shallow_clone()
        } else if n == 1 && self.counter == 1 {
            sample = self
                .cur_sample
                .take()
                .ok_or("PNDM: no sample from the first step")?;
            div(&model_output.f_add(&e[0])?, 2.0)?
        } else if n == 2 {
            div(&mul(&e[1], 3.0)?.f_sub(&e[0])?, 2.0)?
        } else if n == 3 {
            let s = mul(&e[2], 23.0)?
                .f_sub(&mul(&e[1], 16.0)?)?
                .f_add(&mul(&e[0], 5.0)?)?;
            div(&s, 12.0)?
        } else {
            let s = mul(&e[3], 55.0)?
                .f_sub(&mul(&e[2], 59.0)?)?
                .f_add(&mul(&e[1], 37.0)?)?
                .f_sub(&mul(&e[0], 9.0)?)?;
            // `1 / 24 * (...)`: the Python float 1/24, applied as float32.
            s.f_mul_scalar(1.0 / 24.0)?
        };
        let (prev_sample, pred_original_sample) =
            self.prev_sample(&sample, timestep, prev_timestep, &eps)?;
        self.counter += 1;
        Ok(StepOutput {
            prev_sample,
            pred_original_sample,
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
        Box::new(Pndm {
            schedule: self.schedule.clone(),
            timesteps: self.timesteps.clone(),
            final_alpha_cumprod: self.final_alpha_cumprod,
            step_ratio: self.step_ratio,
            counter: self.counter,
            ets: clone_tensors(&self.ets),
            cur_sample: self.cur_sample.as_ref().map(Tensor::shallow_clone),
        })
    }
}
