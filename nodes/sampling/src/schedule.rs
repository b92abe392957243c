//! The noise schedule shared by every sampler: the scheduler config, the
//! betas and `alphas_cumprod`. Reading a diffusers `scheduler_config.json`
//! into a [`ScheduleConfig`] is `crate::config`'s job.
//!
//! Formulas follow diffusers `schedulers/scheduling_ddim.py`
//! (`DDIMScheduler.__init__` and `betas_for_alpha_bar`); the DDPM, PNDM, LMS,
//! Euler and DPM++ schedulers compute their betas the same way. The tensors are
//! built with the same libtorch ops on the CPU in float32 (`torch.linspace`,
//! `** 2`, `1.0 - betas`, `torch.cumprod`), so the values match bit for bit;
//! computing the product in f64 instead differs by ~1.5e-6 relative at t=999.
use diffgraph_sdk::prelude::*;

/// `beta_schedule` of the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
}

/// `timestep_spacing` of the config (see `crate::spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Linspace,
    Trailing,
}

/// `prediction_type` of the config: what the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

/// Names of a config enum, as written in diffusers configs and graph files.
pub trait ConfigName: Sized + Copy + 'static {
    const ALL: &'static [(&'static str, Self)];

    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|(n, _)| *n).collect()
    }

    fn parse(what: &str, s: &str) -> Result<Self, NodeError> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                NodeError::new(format!(
                    "{what} `{s}` is not supported; use one of: {}",
                    Self::names().join(", ")
                ))
            })
    }
}

impl ConfigName for BetaSchedule {
    const ALL: &'static [(&'static str, Self)] = &[
        ("linear", BetaSchedule::Linear),
        ("scaled_linear", BetaSchedule::ScaledLinear),
        ("squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2),
    ];
}

impl ConfigName for TimestepSpacing {
    const ALL: &'static [(&'static str, Self)] = &[
        ("leading", TimestepSpacing::Leading),
        ("linspace", TimestepSpacing::Linspace),
        ("trailing", TimestepSpacing::Trailing),
    ];
}

impl ConfigName for PredictionType {
    const ALL: &'static [(&'static str, Self)] = &[
        ("epsilon", PredictionType::Epsilon),
        ("v_prediction", PredictionType::VPrediction),
        ("sample", PredictionType::Sample),
    ];
}

/// DDPM's `variance_type` (the learned variants need a model that predicts
/// its variance and are not supported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceType {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
}

/// `final_sigmas_type` of the Euler and DPM-Solver schedulers: the sigma
/// after the last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalSigmas {
    Zero,
    SigmaMin,
}

/// DPM-Solver's `solver_type`: how the second-order term is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

impl ConfigName for VarianceType {
    const ALL: &'static [(&'static str, Self)] = &[
        ("fixed_small", VarianceType::FixedSmall),
        ("fixed_small_log", VarianceType::FixedSmallLog),
        ("fixed_large", VarianceType::FixedLarge),
    ];
}

impl ConfigName for FinalSigmas {
    const ALL: &'static [(&'static str, Self)] = &[
        ("zero", FinalSigmas::Zero),
        ("sigma_min", FinalSigmas::SigmaMin),
    ];
}

impl ConfigName for SolverType {
    const ALL: &'static [(&'static str, Self)] = &[
        ("midpoint", SolverType::Midpoint),
        ("heun", SolverType::Heun),
    ];
}

/// A scheduler config, with the field names of diffusers' `scheduler_config.json`.
/// Each sampler reads only the fields its diffusers class has.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleConfig {
    pub num_train_timesteps: i64,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, replacing beta_start/beta_end/beta_schedule.
    pub trained_betas: Option<Vec<f64>>,
    pub steps_offset: i64,
    pub set_alpha_to_one: bool,
    pub timestep_spacing: TimestepSpacing,
    pub prediction_type: PredictionType,
    /// Clamp the predicted x0 to ±`clip_sample_range` (DDIM, DDPM, Heun).
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// PNDM: skip the Runge-Kutta warm-up (only `true` is supported).
    pub skip_prk_steps: bool,
    /// LMS, Euler, Heun, DPM-Solver: Karras et al. (2022) sigmas.
    pub use_karras_sigmas: bool,
    /// DDPM.
    pub variance_type: VarianceType,
    /// Euler, DPM-Solver.
    pub final_sigmas_type: FinalSigmas,
    /// DPM-Solver: 1 or 2 (2M).
    pub solver_order: i64,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
}

impl Default for ScheduleConfig {
    /// Stable Diffusion's scheduler config (diffusers
    /// `loaders/single_file_utils.py`); the diffusers *class* defaults differ.
    fn default() -> Self {
        ScheduleConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            steps_offset: 1,
            set_alpha_to_one: false,
            timestep_spacing: TimestepSpacing::Leading,
            prediction_type: PredictionType::Epsilon,
            clip_sample: false,
            clip_sample_range: 1.0,
            trained_betas: None,
            skip_prk_steps: true,
            use_karras_sigmas: false,
            variance_type: VarianceType::FixedSmall,
            final_sigmas_type: FinalSigmas::Zero,
            solver_order: 2,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
        }
    }
}

/// Betas and cumulative alphas of a config, in float32.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub config: ScheduleConfig,
    pub betas: Vec<f32>,
    /// `alphas_cumprod[t]` = prod_{s <= t} (1 - betas[s]).
    pub alphas_cumprod: Vec<f32>,
    /// Used for the step after the last one (prev timestep < 0): 1.0 when
    /// `set_alpha_to_one`, else `alphas_cumprod[0]`.
    pub final_alpha_cumprod: f32,
}

impl Schedule {
    pub fn new(config: ScheduleConfig) -> Result<Schedule, NodeError> {
        let n = config.num_train_timesteps;
        if n < 1 {
            return Err(format!("num_train_timesteps must be at least 1, got {n}").into());
        }
        if !(config.beta_start.is_finite() && config.beta_end.is_finite()) {
            return Err("beta_start and beta_end must be finite".into());
        }
        let betas = betas(&config)?;
        // scheduling_ddim.py: alphas = 1.0 - betas; alphas_cumprod = torch.cumprod(alphas, dim=0)
        let alphas_cumprod = betas.ones_like().f_sub(&betas)?.f_cumprod(0, Kind::Float)?;
        let betas = Vec::<f32>::try_from(&betas)?;
        let alphas_cumprod = Vec::<f32>::try_from(&alphas_cumprod)?;
        if let Some(bad) = betas.iter().find(|b| !(**b >= 0.0 && **b < 1.0)) {
            return Err(
                format!("the config gives a beta of {bad}; betas must lie in [0, 1)").into(),
            );
        }
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Schedule {
            config,
            betas,
            alphas_cumprod,
            final_alpha_cumprod,
        })
    }

    pub fn num_train_timesteps(&self) -> i64 {
        self.config.num_train_timesteps
    }

    /// `alphas_cumprod[t]`, or an error for a timestep outside the schedule.
    pub fn alpha_cumprod(&self, t: i64) -> Result<f32, NodeError> {
        usize::try_from(t)
            .ok()
            .and_then(|i| self.alphas_cumprod.get(i).copied())
            .ok_or_else(|| {
                NodeError::new(format!(
                    "timestep {t} is outside the schedule's 0..{}",
                    self.alphas_cumprod.len()
                ))
            })
    }

    /// `alphas_cumprod[prev]`, or `final_alpha_cumprod` when `prev < 0`
    /// (scheduling_ddim.py, `step` and `_get_variance`).
    pub fn alpha_cumprod_prev(&self, prev: i64) -> Result<f32, NodeError> {
        if prev < 0 {
            Ok(self.final_alpha_cumprod)
        } else {
            self.alpha_cumprod(prev)
        }
    }

    /// `alphas_cumprod` as a float32 CPU tensor of shape [num_train_timesteps].
    pub fn alphas_cumprod_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.alphas_cumprod)
    }
}

/// The betas as a float32 CPU tensor (scheduling_ddim.py, `__init__`).
fn betas(config: &ScheduleConfig) -> Result<Tensor, NodeError> {
    let n = config.num_train_timesteps;
    let options = (Kind::Float, Device::Cpu);
    if let Some(betas) = &config.trained_betas {
        // torch.tensor(trained_betas, dtype=torch.float32)
        if betas.len() as i64 != n {
            return Err(format!(
                "trained_betas has {} values but num_train_timesteps is {n}",
                betas.len()
            )
            .into());
        }
        let betas: Vec<f32> = betas.iter().map(|&b| b as f32).collect();
        return Ok(Tensor::from_slice(&betas));
    }
    Ok(match config.beta_schedule {
        // torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
        BetaSchedule::Linear => Tensor::f_linspace(config.beta_start, config.beta_end, n, options)?,
        // torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
        BetaSchedule::ScaledLinear => {
            if config.beta_start < 0.0 || config.beta_end < 0.0 {
                return Err("scaled_linear needs beta_start and beta_end >= 0".into());
            }
            Tensor::f_linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n, options)?
                .f_pow_tensor_scalar(2)?
        }
        BetaSchedule::SquaredCosCapV2 => Tensor::from_slice(&betas_for_alpha_bar(n, 0.999)),
    })
}

/// diffusers `betas_for_alpha_bar` with the cosine transform: computed in f64
/// with float division `i / n` (the earlier Rust ports divided integers and
/// got all-zero betas), then rounded to float32 as `torch.tensor(betas,
/// dtype=torch.float32)` does.
pub fn betas_for_alpha_bar(n: i64, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_schedule_endpoints() {
        let s = Schedule::new(ScheduleConfig::default()).unwrap();
        assert_eq!(s.alphas_cumprod.len(), 1000);
        assert_eq!(s.final_alpha_cumprod, s.alphas_cumprod[0]);
        assert!((s.betas[0] - 0.00085).abs() < 1e-9);
        assert!((s.betas[999] - 0.012).abs() < 1e-8);
        assert!(s.alpha_cumprod(1000).is_err());
        assert!(s.alpha_cumprod(-1).is_err());
        assert_eq!(s.alpha_cumprod_prev(-5).unwrap(), s.alphas_cumprod[0]);
    }

    #[test]
    fn cosine_betas_are_not_zero() {
        let b = betas_for_alpha_bar(1000, 0.999);
        assert!(b.iter().all(|&x| x > 0.0 && x <= 0.999));
        assert_eq!(b[999], 0.999);
    }

    #[test]
    fn names_round_trip() {
        for name in TimestepSpacing::names() {
            assert_eq!(
                TimestepSpacing::parse("spacing", name).unwrap().name(),
                name
            );
        }
        assert!(PredictionType::parse("prediction_type", "eps").is_err());
    }
}
