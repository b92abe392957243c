//! DPM-Solver++(2M) (Lu et al. 2022), following diffusers
//! `schedulers/scheduling_dpmsolver_multistep.py` with
//! `algorithm_type="dpmsolver++"` (`set_timesteps`, `convert_model_output`,
//! `dpm_solver_first_order_update`, `multistep_dpm_solver_second_order_update`):
//!
//! - integer timesteps (`spacing::dpm_timesteps`); sigmas interpolated there,
//!   or Karras sigmas over the whole training range whose timesteps are
//!   `round(_sigma_to_t)` (not rounded for squaredcos_cap_v2, then truncated);
//!   then 0 (`final_sigmas_type="zero"`) or sigma_min;
//! - alpha_t = 1 / sqrt(sigma² + 1), sigma_t = sigma·alpha_t,
//!   lambda = log(alpha_t) - log(sigma_t), h = lambda_next - lambda_cur;
//! - the model output becomes x0 (epsilon (x - sigma_t·eps) / alpha_t;
//!   v_prediction alpha_t·x - sigma_t·v; sample as is);
//! - first order: x' = (sigma_t/sigma_s)·x - alpha_t·(exp(-h) - 1)·x0;
//! - second order (midpoint): r0 = h_0 / h, D1 = (1/r0)·(x0 - x0_prev),
//!   x' = (sigma_t/sigma_s0)·x - alpha_t·(exp(-h) - 1)·x0 - 0.5·alpha_t·(exp(-h) - 1)·D1
//!   (heun: + alpha_t·((exp(-h) - 1)/h + 1)·D1 instead);
//! - the first step is first order; so is the last (`lower_order_final`,
//!   always with a final sigma of 0), and with fewer than 15 steps the
//!   second-to-last is at most second order.
//!
//! The scalar log/exp run through libtorch (`crate::scalar`) as diffusers'.
//!
//! Karras sigmas with squaredcos_cap_v2 betas give repeated timesteps (10
//! steps: 998, 998, 998, 998, 997, ...); diffusers then starts at the second
//! 998 (`index_for_timestep`) and fails at the last step. Here the state's
//! step index is carried, so such a schedule runs from its first entry.
use crate::sampler::{check_step_inputs, Sampler, StepInput, StepOutput};
use crate::samplers::sigma_common::FinalSigmas;
use crate::samplers::{SamplerInfo, Setup, COMMON};
use diffgraph_diffusion::prediction::Coefficients;
use diffgraph_diffusion::scalar::{self, mul};
use diffgraph_diffusion::sigmas::{self, alpha_sigma_t as alpha_sigma};
use diffgraph_diffusion::{
    numpy, timesteps, BetaSchedule, ConfigName, Error, Result, Schedule, ScheduleConfig,
    VarianceType,
};
use diffgraph_sdk::tch::{Kind, Tensor};
use std::sync::Arc;

pub const INFO: SamplerInfo = SamplerInfo {
    name: "dpmpp_2m",
    class_name: "DPMSolverMultistepScheduler",
    karras: true,
    // Accepted as diffusers does, without effect; learned variances are refused.
    variance_types: &VarianceType::FIXED,
    build: |s| {
        let config = DpmConfig::read(s)?;
        Ok(Box::new(DpmSolver::new(
            s.schedule.clone(),
            config,
            s.steps,
        )?))
    },
    ..COMMON
};

/// DPM-Solver's `solver_type`: how the second-order term is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

impl ConfigName for SolverType {
    const ALL: &'static [(&'static str, Self)] = &[
        ("midpoint", SolverType::Midpoint),
        ("heun", SolverType::Heun),
    ];
}

/// DPMSolverMultistepScheduler's own keys, with diffusers' class defaults
/// (`algorithm_type` must be "dpmsolver++").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpmConfig {
    /// 1 or 2 (2M).
    pub solver_order: i64,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub use_karras_sigmas: bool,
    pub final_sigmas_type: FinalSigmas,
}

impl DpmConfig {
    pub fn read(s: &Setup) -> Result<DpmConfig> {
        s.file.expect("algorithm_type", &["dpmsolver++"])?;
        Ok(DpmConfig {
            solver_order: s.int("solver_order", 2)?,
            solver_type: s.name("solver_type", SolverType::Midpoint)?,
            lower_order_final: s.flag("lower_order_final", true)?,
            euler_at_final: s.flag("euler_at_final", false)?,
            use_karras_sigmas: s.flag("use_karras_sigmas", false)?,
            final_sigmas_type: s.name("final_sigmas_type", FinalSigmas::Zero)?,
        })
    }
}

pub struct DpmSolver {
    schedule: Arc<Schedule>,
    own: DpmConfig,
    timesteps: Arc<[f32]>,
    sigmas: Arc<[f32]>,
    /// The x0 of the previous step (diffusers' `model_outputs[-2]`).
    previous: Option<Tensor>,
    lower_order_nums: i64,
}

fn lambda(alpha: f32, sigma: f32) -> Result<f32> {
    Ok(scalar::log(alpha)? - scalar::log(sigma)?)
}

impl DpmSolver {
    pub fn new(config: ScheduleConfig, own: DpmConfig, steps: i64) -> Result<DpmSolver> {
        if !(1..=2).contains(&own.solver_order) {
            return Err(format!(
                "DPM-Solver with solver_order {} is not supported (1 or 2)",
                own.solver_order
            )
            .into());
        }
        let mut timesteps: Vec<f64> = timesteps::dpm_timesteps(&config, steps)?
            .into_iter()
            .map(|t| t as f64)
            .collect();
        let schedule = Schedule::new(config)?;
        let config = &schedule.config;
        let training = sigmas::training_sigmas(&schedule)?;
        let mut table: Vec<f64> = if own.use_karras_sigmas {
            let (min, max) = (
                f64::from(training[0]),
                f64::from(training[training.len() - 1]),
            );
            let karras = sigmas::karras(min, max, timesteps.len());
            let logs = sigmas::log_sigmas(&training);
            let round = config.beta_schedule != BetaSchedule::SquaredCosCapV2;
            timesteps = karras
                .iter()
                .map(|&s| {
                    let t = sigmas::sigma_to_t(s, &logs);
                    if round {
                        t.round_ties_even()
                    } else {
                        t.trunc()
                    }
                })
                .collect();
            karras
        } else {
            timesteps
                .iter()
                .map(|&t| numpy::interp(t, &training))
                .collect()
        };
        table.push(match own.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => f64::from(sigmas::sigma_min_final(&schedule)?),
        });
        Ok(DpmSolver {
            timesteps: timesteps
                .into_iter()
                .map(|t| t as f32)
                .collect::<Vec<_>>()
                .into(),
            sigmas: table
                .into_iter()
                .map(|s| s as f32)
                .collect::<Vec<_>>()
                .into(),
            schedule: Arc::new(schedule),
            own,
            previous: None,
            lower_order_nums: 0,
        })
    }

    fn sigma(&self, i: usize) -> Result<f32> {
        self.sigmas
            .get(i)
            .copied()
            .ok_or_else(|| Error::Invalid(format!("step {i} is past the end of the schedule")))
    }

    /// `convert_model_output` for dpmsolver++: the predicted x0.
    fn x0(&self, model_output: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigma(i)?)?;
        let c = Coefficients::new(alpha_t, sigma_t);
        let prediction_type = self.schedule.config.prediction_type;
        prediction_type.x0_with(model_output, sample, c)
    }
}

impl Sampler for DpmSolver {
    fn info(&self) -> &'static SamplerInfo {
        &INFO
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn init_noise_sigma(&self) -> Result<f32> {
        Ok(1.0)
    }

    fn is_multistep(&self) -> bool {
        true
    }

    fn step(&mut self, input: StepInput) -> Result<StepOutput> {
        let (model_output, i) = (input.model_output, input.index);
        check_step_inputs(model_output, input.sample)?;
        let config = &self.own;
        let n = self.timesteps.len();
        let lower_order_final = i + 1 == n
            && (config.euler_at_final
                || (config.lower_order_final && n < 15)
                || config.final_sigmas_type == FinalSigmas::Zero);
        let x0 = self.x0(model_output, input.sample, i)?;
        let sample = input.sample.f_to_kind(Kind::Float)?;

        let (alpha_t, sigma_t) = alpha_sigma(self.sigma(i + 1)?)?;
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigma(i)?)?;
        let h = lambda(alpha_t, sigma_t)? - lambda(alpha_s0, sigma_s0)?;
        let exp_m1 = scalar::exp(-h)? - 1.0;
        let first_order =
            config.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final;
        let prev_sample = match (&self.previous, first_order) {
            (Some(m1), false) => {
                let (alpha_s1, sigma_s1) = alpha_sigma(self.sigma(i - 1)?)?;
                let h_0 = lambda(alpha_s0, sigma_s0)? - lambda(alpha_s1, sigma_s1)?;
                let r0 = h_0 / h;
                let d1 = mul(&x0.f_sub(m1)?, 1.0f32 / r0)?;
                let base = mul(&sample, sigma_t / sigma_s0)?.f_sub(&mul(&x0, alpha_t * exp_m1)?)?;
                match config.solver_type {
                    SolverType::Midpoint => base.f_sub(&mul(&d1, 0.5f32 * (alpha_t * exp_m1))?)?,
                    SolverType::Heun => base.f_add(&mul(&d1, alpha_t * (exp_m1 / h + 1.0))?)?,
                }
            }
            _ => mul(&sample, sigma_t / sigma_s0)?.f_sub(&mul(&x0, alpha_t * exp_m1)?)?,
        };
        self.lower_order_nums = (self.lower_order_nums + 1).min(config.solver_order);
        self.previous = Some(x0.shallow_clone());
        Ok(StepOutput {
            prev_sample: prev_sample.f_to_kind(model_output.kind())?,
            pred_original_sample: x0,
        })
    }

    /// `alpha_t·x + sigma_t·noise` at the step's sigma.
    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        index: usize,
        _timestep: f32,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigma(index)?)?;
        Ok(mul(original, alpha_t)?.f_add(&mul(noise, sigma_t)?)?)
    }

    fn alpha_bar(&self, index: usize, _timestep: f32) -> Result<f64> {
        Ok(sigmas::alpha_bar_at(self.sigma(index)?))
    }

    fn box_clone(&self) -> Box<dyn Sampler> {
        Box::new(DpmSolver {
            schedule: self.schedule.clone(),
            own: self.own,
            timesteps: self.timesteps.clone(),
            sigmas: self.sigmas.clone(),
            previous: self.previous.as_ref().map(Tensor::shallow_clone),
            lower_order_nums: self.lower_order_nums,
        })
    }
}
