//! LMS (linear multistep over sigmas, Karras et al. 2022's k-diffusion
//! `sample_lms`), following diffusers `schedulers/scheduling_lms_discrete.py`
//! (`set_timesteps`, `step`, `get_lms_coefficient`):
//!
//! - sigmas as in `crate::sigmas` (optionally Karras), a final 0 appended;
//!   `init_noise_sigma` and `scale_model_input` (divide by sqrt(sigma² + 1))
//!   as for Euler;
//! - x0: epsilon x - sigma·eps; v_prediction eps·(-sigma / sqrt(sigma² + 1)) + x / (sigma² + 1);
//!   sample: the model output;
//! - derivative d = (x - x0) / sigma, the last `order` (4) kept;
//! - x_prev = x + Σ_j coeff_j · d_{i-j}, with `order = min(i + 1, 4)` and
//!   coeff_j the integrated Lagrange basis (`crate::quadrature`).
use crate::quadrature::lms_coefficient;
use crate::sampler::{check_step_inputs, clone_tensors, Sampler, StepInput, StepOutput};
use crate::samplers::sigma_common::{sigma_sampler_methods, SigmaSchedule};
use crate::samplers::{SamplerInfo, COMMON};
use diffgraph_diffusion::{Result, ScheduleConfig};
use diffgraph_sdk::tch::Tensor;

pub const INFO: SamplerInfo = SamplerInfo {
    name: "lms",
    class_name: "LMSDiscreteScheduler",
    karras: true,
    build: |s| {
        let karras = s.flag("use_karras_sigmas", false)?;
        Ok(Box::new(Lms::new(s.schedule.clone(), karras, s.steps)?))
    },
    ..COMMON
};

const ORDER: usize = 4;

pub struct Lms {
    s: SigmaSchedule,
    derivatives: Vec<Tensor>,
}

impl Lms {
    pub fn new(config: ScheduleConfig, use_karras: bool, steps: i64) -> Result<Lms> {
        Ok(Lms {
            s: SigmaSchedule::new(config, steps, use_karras, false)?,
            derivatives: Vec::new(),
        })
    }
}

impl Sampler for Lms {
    sigma_sampler_methods!();

    fn info(&self) -> &'static SamplerInfo {
        &INFO
    }

    fn is_multistep(&self) -> bool {
        true
    }

    fn step(&mut self, input: StepInput) -> Result<StepOutput> {
        let (model_output, sample) = (input.model_output, input.sample);
        check_step_inputs(model_output, sample)?;
        let i = input.index;
        let sigma = self.s.sigma(i)?;
        let x0 = self
            .s
            .prediction_type()
            .x0_from_sigma(model_output, sample, sigma)?;
        let derivative = sample.f_sub(&x0)?.f_div_scalar(f64::from(sigma))?;
        self.derivatives.push(derivative);
        if self.derivatives.len() > ORDER {
            drop(self.derivatives.remove(0));
        }
        let order = (i + 1).min(ORDER);
        let sigmas = &self.s.table.sigmas;
        // sample + sum(coeff * derivative for coeff, derivative in zip(coeffs, reversed(derivatives)))
        let mut sum: Option<Tensor> = None;
        for (current, d) in (0..order).zip(self.derivatives.iter().rev()) {
            let coeff = lms_coefficient(sigmas, order, i, current);
            let term = d.f_mul_scalar(coeff)?;
            sum = Some(match sum {
                None => term,
                Some(s) => s.f_add(&term)?,
            });
        }
        let prev_sample = match sum {
            Some(s) => sample.f_add(&s)?,
            None => sample.shallow_clone(),
        };
        Ok(StepOutput {
            prev_sample,
            pred_original_sample: x0,
        })
    }

    fn box_clone(&self) -> Box<dyn Sampler> {
        Box::new(Lms {
            s: self.s.clone(),
            derivatives: clone_tensors(&self.derivatives),
        })
    }
}
