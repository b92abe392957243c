//! DDIM (Song et al. 2020, "Denoising Diffusion Implicit Models"), following
//! diffusers `schedulers/scheduling_ddim.py` (`DDIMScheduler.step`):
//!
//! 1. prev_t = t - num_train_timesteps // num_inference_steps
//! 2. a_t = alphas_cumprod[t]; a_prev = alphas_cumprod[prev_t], or
//!    final_alpha_cumprod when prev_t < 0
//! 3. x0, eps from the model output (`crate::prediction`); x0 clamped to
//!    ±clip_sample_range when clip_sample
//! 4. variance = (1 - a_prev) / (1 - a_t) · (1 - a_t / a_prev) (`_get_variance`);
//!    std = eta · sqrt(variance)
//! 5. x_prev = sqrt(a_prev)·x0 + sqrt(1 - a_prev - std²)·eps (+ std·noise when eta > 0)
//!
//! eta = 0 is deterministic DDIM; eta = 1 is DDPM-like ancestral sampling.
//! For eta > 0 every step draws `variance_noise` from the run's generator, as
//! diffusers' step does with `generator=`. With `use_clipped_model_output`
//! (a `step` argument in diffusers, off by default; here a node input or
//! config key) ε is re-derived from the clipped x0 after step 3
//! (`diffgraph_diffusion::prediction::eps_from_x0_f32_diffusers`), the order
//! guided-diffusion's `ddim_sample` uses. Dynamic thresholding is not
//! implemented (off in diffusers by default).
use crate::sampler::{
    add_noise_alpha, check_step_inputs, ClipSample, Sampler, StepInput, StepOutput,
};
use crate::samplers::{SamplerInfo, Setup, COMMON};
use diffgraph_diffusion::prediction::{eps_from_x0_f32_diffusers, predict_f32_diffusers};
use diffgraph_diffusion::{
    integer_timestep, scalar, timesteps, Result, Schedule, ScheduleConfig, TimestepSpacing,
};
use diffgraph_sdk::tch::Tensor;
use std::sync::Arc;

pub const INFO: SamplerInfo = SamplerInfo {
    name: "ddim",
    class_name: "DDIMScheduler",
    defaults: || ScheduleConfig {
        timestep_spacing: TimestepSpacing::Leading,
        ..ScheduleConfig::default()
    },
    eta: true,
    build: |s| {
        let config = DdimConfig::read(s)?;
        Ok(Box::new(Ddim::new(
            s.schedule.clone(),
            config,
            s.steps,
            s.eta,
        )?))
    },
    ..COMMON
};

/// DDIMScheduler's own keys, with diffusers' class defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimConfig {
    pub clip: ClipSample,
    pub set_alpha_to_one: bool,
    /// diffusers' `step(..., use_clipped_model_output=True)`: ε from the clipped x0.
    pub use_clipped_model_output: bool,
}

impl DdimConfig {
    pub fn read(s: &Setup) -> Result<DdimConfig> {
        Ok(DdimConfig {
            clip: ClipSample::read(s, true)?,
            set_alpha_to_one: s.flag("set_alpha_to_one", true)?,
            use_clipped_model_output: s.flag("use_clipped_model_output", false)?,
        })
    }
}

/// The DDIM sampler. It keeps no state between steps: each step depends only
/// on its timestep (and, with eta > 0, its draw).
#[derive(Clone)]
pub struct Ddim {
    schedule: Arc<Schedule>,
    timesteps: Arc<[f32]>,
    num_inference_steps: i64,
    eta: f64,
    clip: ClipSample,
    use_clipped_model_output: bool,
    final_alpha_cumprod: f32,
}

impl Ddim {
    /// A DDIM sampler with `steps` inference steps (`set_timesteps`).
    pub fn new(config: ScheduleConfig, own: DdimConfig, steps: i64, eta: f64) -> Result<Ddim> {
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(format!("eta must be a finite number >= 0, got {eta}").into());
        }
        let timesteps: Vec<f32> = timesteps::timesteps(&config, steps)?
            .into_iter()
            .map(|t| t as f32)
            .collect();
        let schedule = Schedule::new(config)?;
        Ok(Ddim {
            final_alpha_cumprod: schedule.final_alpha_cumprod(own.set_alpha_to_one),
            schedule: Arc::new(schedule),
            timesteps: timesteps.into(),
            num_inference_steps: steps,
            eta,
            clip: own.clip,
            use_clipped_model_output: own.use_clipped_model_output,
        })
    }

    pub fn eta(&self) -> f64 {
        self.eta
    }

    /// The timestep the step from `timestep` goes to (negative after the last).
    pub fn prev_timestep(&self, timestep: i64) -> i64 {
        timestep - self.schedule.num_train_timesteps() / self.num_inference_steps
    }
}

impl Sampler for Ddim {
    fn info(&self) -> &'static SamplerInfo {
        &INFO
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// DDIM starts from unit-variance noise.
    fn init_noise_sigma(&self) -> Result<f32> {
        Ok(1.0)
    }

    fn step(&mut self, input: StepInput) -> Result<StepOutput> {
        let (model_output, sample) = (input.model_output, input.sample);
        check_step_inputs(model_output, sample)?;
        let config = &self.schedule.config;
        let timestep = integer_timestep(input.timestep)?;
        let prev_timestep = self.prev_timestep(timestep);
        let alpha_prod_t = self.schedule.alpha_cumprod(timestep)?;
        let alpha_prod_t_prev = self
            .schedule
            .alpha_cumprod_prev(prev_timestep, self.final_alpha_cumprod)?;

        let (x0, eps) =
            predict_f32_diffusers(config.prediction_type, model_output, sample, alpha_prod_t)?;
        let x0 = self.clip.apply(x0)?;
        let eps = if self.use_clipped_model_output {
            eps_from_x0_f32_diffusers(&x0, sample, alpha_prod_t)?
        } else {
            eps
        };

        // float32 scalars, in diffusers' order of operations.
        let beta_prod_t = 1.0f32 - alpha_prod_t;
        let beta_prod_t_prev = 1.0f32 - alpha_prod_t_prev;
        let variance =
            (beta_prod_t_prev / beta_prod_t) * (1.0f32 - alpha_prod_t / alpha_prod_t_prev);
        // `eta * variance ** 0.5`: a Python float times a float32 tensor is a float32 product.
        let std_dev_t = (self.eta as f32) * scalar::sqrt(variance)?;
        let direction_coef = scalar::sqrt(1.0f32 - alpha_prod_t_prev - std_dev_t * std_dev_t)?;

        let pred_sample_direction = eps.f_mul_scalar(f64::from(direction_coef))?;
        let mut prev_sample = x0
            .f_mul_scalar(f64::from(scalar::sqrt(alpha_prod_t_prev)?))?
            .f_add(&pred_sample_direction)?;
        if self.eta > 0.0 {
            let noise = (input.noise)(model_output)?;
            prev_sample = prev_sample.f_add(&noise.f_mul_scalar(f64::from(std_dev_t))?)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::testing::{sd_schedule, step_once};
    use diffgraph_sdk::tch::{Device, Kind};

    const SD: DdimConfig = DdimConfig {
        clip: ClipSample {
            clip: false,
            range: 1.0,
        },
        set_alpha_to_one: false,
        use_clipped_model_output: false,
    };

    #[test]
    fn last_step_uses_final_alpha() {
        let own = DdimConfig {
            set_alpha_to_one: true,
            ..SD
        };
        let mut ddim = Ddim::new(sd_schedule(&INFO), own, 20, 0.0).unwrap();
        assert_eq!(ddim.timesteps().last(), Some(&1.0));
        assert!(ddim.prev_timestep(1) < 0);
        // With final alpha 1, the last step returns the predicted x0 itself.
        let x = Tensor::from_slice(&[0.5f32, -0.25, 1.0]);
        let eps = Tensor::from_slice(&[0.1f32, 0.2, -0.3]);
        let out = step_once(&mut ddim, 19, &eps, &x).unwrap();
        let diff = (&out.prev_sample - &out.pred_original_sample)
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn rejects_mismatched_inputs_and_bad_eta() {
        let mut ddim = Ddim::new(sd_schedule(&INFO), SD, 10, 0.0).unwrap();
        let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let b = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
        assert!(step_once(&mut ddim, 0, &a, &b).is_err());
        assert!(Ddim::new(sd_schedule(&INFO), SD, 10, -1.0).is_err());
    }

    /// diffusers' DDIMScheduler.step with clip_sample and
    /// use_clipped_model_output True and False, step by step from the same
    /// inputs (scripts/fixtures/make_ddim_clipped_fixture.py): bit for bit
    /// (tolerance 0), and the option changes the result.
    #[test]
    fn use_clipped_model_output_matches_diffusers() {
        use crate::config::Overrides;
        use crate::samplers::testing::sd;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/ddim_clipped_model_output.safetensors"
        );
        let f: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .unwrap()
            .into_iter()
            .collect();
        for (flag, key) in [(true, "clipped"), (false, "unclipped")] {
            let o = Overrides {
                clip_sample: Some(true),
                use_clipped_model_output: Some(flag),
                ..Overrides::default()
            };
            let mut ddim = sd(&INFO, &o, 10);
            let want_t: Vec<i64> = Vec::try_from(&f["timesteps"]).unwrap();
            let got_t: Vec<i64> = ddim.timesteps().iter().map(|&t| t as i64).collect();
            assert_eq!(got_t, want_t);
            for i in 0..10 {
                let i64_ = i as i64;
                let out = step_once(
                    ddim.as_mut(),
                    i,
                    &f["model_output"].get(i64_),
                    &f["sample"].get(i64_),
                )
                .unwrap();
                let err = (&out.prev_sample - f[key].get(i64_))
                    .abs()
                    .max()
                    .double_value(&[]);
                assert_eq!(err, 0.0, "{key} step {i}: max abs {err:e}");
            }
        }
        let d = (&f["clipped"] - &f["unclipped"])
            .abs()
            .max()
            .double_value(&[]);
        assert!(d > 0.1, "the fixture exercises the option ({d})");
    }
}
