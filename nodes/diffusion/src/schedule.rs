//! The noise schedule: the scheduler config keys every diffusers scheduler
//! class shares ([`ScheduleConfig`]), the betas and `alphas_cumprod`
//! ([`Schedule`]).
//!
//! Formulas follow diffusers `schedulers/scheduling_ddim.py`
//! (`DDIMScheduler.__init__` and `betas_for_alpha_bar`); the DDPM, PNDM, LMS,
//! Euler and DPM++ schedulers compute their betas the same way. The tensors are
//! built with the same libtorch ops on the CPU in float32 (`torch.linspace`,
//! `** 2`, `1.0 - betas`, `torch.cumprod`), so the values match bit for bit;
//! computing the product in f64 instead differs by ~1.5e-6 relative at t=999.
use crate::names::ConfigName;
use crate::prediction::PredictionType;
use crate::timesteps::TimestepSpacing;
use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// `beta_schedule` of the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal 2021 (guided-diffusion's "cosine").
    SquaredCosCapV2,
}

impl ConfigName for BetaSchedule {
    const ALL: &'static [(&'static str, Self)] = &[
        ("linear", BetaSchedule::Linear),
        ("scaled_linear", BetaSchedule::ScaledLinear),
        ("squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2),
        ("cosine", BetaSchedule::SquaredCosCapV2),
    ];
}

/// The config keys every scheduler class has, with the field names of
/// diffusers' `scheduler_config.json`. [`Default`] is diffusers' class
/// defaults for them (the `__init__` signatures of diffusers 0.42, DDIM's
/// "leading" spacing aside); what a class adds is its own config.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleConfig {
    pub num_train_timesteps: i64,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, replacing beta_start/beta_end/beta_schedule.
    pub trained_betas: Option<Vec<f64>>,
    pub steps_offset: i64,
    pub timestep_spacing: TimestepSpacing,
    pub prediction_type: PredictionType,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            steps_offset: 0,
            timestep_spacing: TimestepSpacing::Linspace,
            prediction_type: PredictionType::Epsilon,
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
}

impl Schedule {
    pub fn new(config: ScheduleConfig) -> Result<Schedule> {
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
        Ok(Schedule {
            config,
            betas,
            alphas_cumprod,
        })
    }

    pub fn num_train_timesteps(&self) -> i64 {
        self.config.num_train_timesteps
    }

    /// `alphas_cumprod[t]`, or an error for a timestep outside the schedule.
    pub fn alpha_cumprod(&self, t: i64) -> Result<f32> {
        usize::try_from(t)
            .ok()
            .and_then(|i| self.alphas_cumprod.get(i).copied())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "timestep {t} is outside the schedule's 0..{}",
                    self.alphas_cumprod.len()
                ))
            })
    }

    /// DDIM's and PNDM's `final_alpha_cumprod`, the cumulative alpha after the
    /// last step: 1.0 when `set_alpha_to_one`, else `alphas_cumprod[0]`.
    pub fn final_alpha_cumprod(&self, set_alpha_to_one: bool) -> f32 {
        if set_alpha_to_one {
            1.0
        } else {
            self.alphas_cumprod[0]
        }
    }

    /// `alphas_cumprod[prev]`, or `final_alpha` when `prev < 0`
    /// (scheduling_ddim.py, `step` and `_get_variance`).
    pub fn alpha_cumprod_prev(&self, prev: i64, final_alpha: f32) -> Result<f32> {
        if prev < 0 {
            Ok(final_alpha)
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
fn betas(config: &ScheduleConfig) -> Result<Tensor> {
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

/// diffusers `betas_for_alpha_bar` with the cosine transform (guided-diffusion
/// `get_named_beta_schedule("cosine")`): computed in f64 with float division
/// `i / n` (the earlier Rust ports divided integers and got all-zero betas),
/// then rounded to float32 as `torch.tensor(betas, dtype=torch.float32)` does.
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
pub(crate) mod tests {
    use super::*;

    /// Stable Diffusion's schedule keys (the tests' reference config).
    pub fn sd_config() -> ScheduleConfig {
        ScheduleConfig {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            steps_offset: 1,
            timestep_spacing: TimestepSpacing::Leading,
            ..ScheduleConfig::default()
        }
    }

    #[test]
    fn sd_schedule_endpoints() {
        let s = Schedule::new(sd_config()).unwrap();
        assert_eq!(s.alphas_cumprod.len(), 1000);
        assert_eq!(s.final_alpha_cumprod(false), s.alphas_cumprod[0]);
        assert!((s.betas[0] - 0.00085).abs() < 1e-9);
        assert!((s.betas[999] - 0.012).abs() < 1e-8);
        assert!(s.alpha_cumprod(1000).is_err());
        assert!(s.alpha_cumprod(-1).is_err());
        assert_eq!(s.alpha_cumprod_prev(-5, 1.0).unwrap(), 1.0);
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
        assert_eq!(
            BetaSchedule::parse("beta_schedule", "cosine").unwrap(),
            BetaSchedule::SquaredCosCapV2
        );
    }
}
