//! Heun's method (Karras et al. 2022, Algorithm 1 without churn), following
//! diffusers `schedulers/scheduling_heun_discrete.py`. Each iteration of the
//! loop calls the model once and `step` once; predictor and corrector
//! alternate across iterations:
//!
//! - the n spaced sigmas s_0..s_{n-1} (Karras optional) and a final 0 become
//!   `[s_0, s_1, s_1, ..., s_{n-1}, s_{n-1}, 0]`, the timesteps
//!   `[t_0, t_1, t_1, ..., t_{n-1}, t_{n-1}]` (2n - 1 model calls; order 2);
//! - predictor (no stored state): d = (x - x0(sigma_i)) / sigma_i, dt =
//!   sigma_{i+1} - sigma_i, x_next = x + d·dt (an Euler step), keeping d, dt, x;
//! - corrector: d' = (x_next - x0(sigma_i)) / sigma_i with the model's output at
//!   x_next, x_prev = x + (d + d')/2 · dt from the stored x.
//! - x0 as for Euler, clamped to ±clip_sample_range when clip_sample.
use crate::sampler::{check_step_inputs, ClipSample, Sampler, StepInput, StepOutput};
use crate::samplers::sigma_common::{sigma_sampler_methods, SigmaSchedule};
use crate::samplers::{SamplerInfo, COMMON};
use diffgraph_diffusion::sigmas::SigmaTable;
use diffgraph_diffusion::{Result, ScheduleConfig};
use diffgraph_sdk::tch::Tensor;

pub const INFO: SamplerInfo = SamplerInfo {
    name: "heun",
    class_name: "HeunDiscreteScheduler",
    defaults: || ScheduleConfig {
        beta_start: 0.00085,
        beta_end: 0.012,
        ..ScheduleConfig::default()
    },
    karras: true,
    build: |s| {
        let karras = s.flag("use_karras_sigmas", false)?;
        let clip = ClipSample::read(s, false)?;
        Ok(Box::new(Heun::new(
            s.schedule.clone(),
            karras,
            clip,
            s.steps,
        )?))
    },
    ..COMMON
};

/// What the predictor leaves for the corrector.
struct Predicted {
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

pub struct Heun {
    s: SigmaSchedule,
    clip: ClipSample,
    predicted: Option<Predicted>,
}

impl Heun {
    pub fn new(config: ScheduleConfig, karras: bool, clip: ClipSample, steps: i64) -> Result<Heun> {
        let base = SigmaSchedule::new(config, steps, karras, false)?;
        let (t, s) = (&base.table.timesteps, &base.table.sigmas);
        // torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        let mut sigmas = vec![s[0]];
        sigmas.extend(s[1..s.len() - 1].iter().flat_map(|&x| [x, x]));
        sigmas.push(s[s.len() - 1]);
        // torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
        let mut timesteps = vec![t[0]];
        timesteps.extend(t[1..].iter().flat_map(|&x| [x, x]));
        Ok(Heun {
            s: base.with_table(SigmaTable { timesteps, sigmas }),
            clip,
            predicted: None,
        })
    }
}

impl Sampler for Heun {
    sigma_sampler_methods!();

    fn info(&self) -> &'static SamplerInfo {
        &INFO
    }

    fn order(&self) -> usize {
        2
    }

    fn is_multistep(&self) -> bool {
        true
    }

    fn step(&mut self, input: StepInput) -> Result<StepOutput> {
        let (model_output, sample) = (input.model_output, input.sample);
        check_step_inputs(model_output, sample)?;
        let i = input.index;
        let first_order = self.predicted.is_none();
        let (sigma, sigma_next) = if first_order {
            (self.s.sigma(i)?, self.s.sigma(i + 1)?)
        } else {
            let prev = i
                .checked_sub(1)
                .ok_or("Heun: a corrector step cannot come first")?;
            (self.s.sigma(prev)?, self.s.sigma(i)?)
        };
        let sigma_hat = sigma; // sigma * (gamma + 1), gamma = 0
        let sigma_input = if first_order { sigma_hat } else { sigma_next };
        let x0 = self
            .s
            .prediction_type()
            .x0_from_sigma(model_output, sample, sigma_input)?;
        let x0 = self.clip.apply(x0)?;
        let (derivative, dt, base) = match self.predicted.take() {
            None => {
                let derivative = sample.f_sub(&x0)?.f_div_scalar(f64::from(sigma_hat))?;
                let dt = sigma_next - sigma_hat;
                self.predicted = Some(Predicted {
                    derivative: derivative.shallow_clone(),
                    dt,
                    sample: sample.shallow_clone(),
                });
                (derivative, dt, sample.shallow_clone())
            }
            Some(p) => {
                let d = sample.f_sub(&x0)?.f_div_scalar(f64::from(sigma_next))?;
                let derivative = p.derivative.f_add(&d)?.f_div_scalar(2.0)?;
                (derivative, p.dt, p.sample)
            }
        };
        let prev_sample = base.f_add(&derivative.f_mul_scalar(f64::from(dt))?)?;
        Ok(StepOutput {
            prev_sample,
            pred_original_sample: x0,
        })
    }

    fn box_clone(&self) -> Box<dyn Sampler> {
        Box::new(Heun {
            s: self.s.clone(),
            clip: self.clip,
            predicted: self.predicted.as_ref().map(|p| Predicted {
                derivative: p.derivative.shallow_clone(),
                dt: p.dt,
                sample: p.sample.shallow_clone(),
            }),
        })
    }
}
