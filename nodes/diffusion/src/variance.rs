//! The variance of a DDPM step (Ho et al. 2020) and the `variance_type`
//! that chooses it, following diffusers `schedulers/scheduling_ddpm.py`
//! (`_get_variance`, `step`) and guided-diffusion `gaussian_diffusion.py`
//! (`p_mean_variance`).
//!
//! For the step from t to t_prev (ᾱ_prev = 1 after the last step), with
//! β_t = 1 − ᾱ_t/ᾱ_prev and the posterior variance of q(x_prev | x_t, x_0)
//! β̃_t = (1 − ᾱ_prev)/(1 − ᾱ_t)·β_t (eq. 7), clamped at 1e-20:
//! - fixed_small: Σ = β̃_t; fixed_small_log: the same, its standard
//!   deviation taken as exp(½·log Σ); fixed_large: Σ = β_t.
//! - learned_range (Nichol & Dhariwal 2021, eq. 15): the model outputs
//!   v ∈ [−1, 1] per element and log Σ = frac·log β_t + (1 − frac)·log β̃_t
//!   with frac = (v + 1)/2.
//! - learned: the model outputs log Σ itself (guided-diffusion's
//!   `ModelVarType.LEARNED`). diffusers' DDPMScheduler instead takes the
//!   values as Σ (`predicted_variance ** 0.5`); no diffusers model uses it.
//!
//! Scalars are float32, as diffusers' 0-d tensors.
use crate::names::ConfigName;
use crate::{scalar, Error, Result};
use tch::Tensor;

/// `variance_type` of a DDPM config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceType {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
    Learned,
    LearnedRange,
}

impl ConfigName for VarianceType {
    const ALL: &'static [(&'static str, Self)] = &[
        ("fixed_small", VarianceType::FixedSmall),
        ("fixed_small_log", VarianceType::FixedSmallLog),
        ("fixed_large", VarianceType::FixedLarge),
        ("learned", VarianceType::Learned),
        ("learned_range", VarianceType::LearnedRange),
    ];
}

impl VarianceType {
    /// The kinds that need no model output.
    pub const FIXED: [VarianceType; 3] = [
        VarianceType::FixedSmall,
        VarianceType::FixedSmallLog,
        VarianceType::FixedLarge,
    ];

    /// Whether the model predicts the variance (extra output channels).
    pub fn is_learned(self) -> bool {
        !Self::FIXED.contains(&self)
    }

    /// Names of the [`VarianceType::FIXED`] kinds.
    pub fn fixed_names() -> Vec<&'static str> {
        Self::FIXED.iter().map(|v| v.name()).collect()
    }
}

/// β_t and β̃_t of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepVariance {
    /// β_t = 1 − ᾱ_t/ᾱ_prev (`current_beta_t`).
    pub beta: f32,
    /// β̃_t, clamped at 1e-20 (`torch.clamp(variance, min=1e-20)`).
    pub posterior: f32,
}

impl StepVariance {
    /// The step from cumulative alpha `a_t` to `a_prev`.
    pub fn new(a_t: f32, a_prev: f32) -> StepVariance {
        let beta = 1.0f32 - a_t / a_prev;
        StepVariance {
            beta,
            posterior: ((1.0f32 - a_prev) / (1.0f32 - a_t) * beta).max(1e-20),
        }
    }

    /// Σ of a fixed kind (an error for the learned ones, which need the model's values).
    pub fn fixed(self, kind: VarianceType) -> Result<f32> {
        match kind {
            VarianceType::FixedSmall | VarianceType::FixedSmallLog => Ok(self.posterior),
            VarianceType::FixedLarge => Ok(self.beta),
            learned => Err(learned_error(learned)),
        }
    }

    /// The standard deviation `DDPMScheduler.step` scales the noise by, in
    /// its float32 arithmetic: `Σ ** 0.5`, or `exp(0.5 · log Σ)` for fixed_small_log.
    pub fn fixed_std(self, kind: VarianceType) -> Result<f32> {
        match kind {
            VarianceType::FixedSmallLog => scalar::exp(0.5f32 * scalar::log(self.posterior)?),
            kind => scalar::sqrt(self.fixed(kind)?),
        }
    }

    /// log Σ per element for a learned kind, from the model's variance
    /// channels `values` (`learned_range`: v ∈ [−1, 1]; `learned`: log Σ),
    /// in diffusers' order of operations.
    pub fn learned_log_variance(self, kind: VarianceType, values: &Tensor) -> Result<Tensor> {
        match kind {
            VarianceType::Learned => Ok(values.shallow_clone()),
            VarianceType::LearnedRange => {
                let min_log = f64::from(scalar::log(self.posterior)?);
                let max_log = f64::from(scalar::log(self.beta)?);
                // frac = (predicted_variance + 1) / 2
                let frac = values.f_add_scalar(1.0)?.f_div_scalar(2.0)?;
                // frac * max_log + (1 - frac) * min_log
                let one_minus = frac.f_neg()?.f_add_scalar(1.0)?;
                Ok(frac
                    .f_mul_scalar(max_log)?
                    .f_add(&one_minus.f_mul_scalar(min_log)?)?)
            }
            fixed => Err(Error::Invalid(format!(
                "variance_type {} is fixed; it takes no model values",
                fixed.name()
            ))),
        }
    }
}

fn learned_error(kind: VarianceType) -> Error {
    Error::Invalid(format!(
        "variance_type {} needs the model's variance output (learned_log_variance)",
        kind.name()
    ))
}

/// Σ of the DDPM step at timestep `t` from `a_t` to `a_prev`, for a fixed
/// kind: 0 at t = 0, where `DDPMScheduler.step` adds no noise.
pub fn ddpm_variance(t: i64, a_t: f32, a_prev: f32, kind: VarianceType) -> Result<f32> {
    if t == 0 {
        return Ok(0.0);
    }
    StepVariance::new(a_t, a_prev).fixed(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1000 linear betas 1e-4..0.02 in f64 and their cumulative alphas.
    fn linear() -> (Vec<f64>, Vec<f64>) {
        let betas: Vec<f64> = (0..1000)
            .map(|i| 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0)
            .collect();
        let a = betas
            .iter()
            .scan(1.0, |acc, b| {
                *acc *= 1.0 - b;
                Some(*acc)
            })
            .collect();
        (betas, a)
    }

    #[test]
    fn fixed_kinds_are_the_posterior_variance_and_beta() {
        let (betas, a) = linear();
        let t = 500;
        let want = (1.0 - a[t - 1]) / (1.0 - a[t]) * betas[t];
        let got = ddpm_variance(
            t as i64,
            a[t] as f32,
            a[t - 1] as f32,
            VarianceType::FixedSmall,
        );
        let got = f64::from(got.unwrap());
        assert!((got - want).abs() / want < 1e-4, "{got} vs {want}");
        let large = ddpm_variance(
            t as i64,
            a[t] as f32,
            a[t - 1] as f32,
            VarianceType::FixedLarge,
        );
        assert!((f64::from(large.unwrap()) - betas[t]).abs() / betas[t] < 1e-4);
        assert_eq!(
            ddpm_variance(0, a[0] as f32, 1.0, VarianceType::FixedSmall).unwrap(),
            0.0
        );
        // The last step of a schedule ending at t = 1 goes to a_prev = 1: clamped, not negative.
        let last = ddpm_variance(1, a[1] as f32, 1.0, VarianceType::FixedSmall).unwrap();
        assert_eq!(last, 1e-20);
        assert!(ddpm_variance(5, 0.5, 0.6, VarianceType::LearnedRange).is_err());
        let s = StepVariance::new(a[t] as f32, a[t - 1] as f32);
        let small_log = s.fixed_std(VarianceType::FixedSmallLog).unwrap();
        assert!((small_log - s.posterior.sqrt()).abs() <= 2.0 * f32::EPSILON * small_log);
    }

    #[test]
    fn learned_range_interpolates_log_variance() {
        // guided-diffusion p_mean_variance: v = -1 -> log beta_tilde, v = 1 -> log beta, v = 0 -> the midpoint.
        let (_, a) = linear();
        let s = StepVariance::new(a[300] as f32, a[299] as f32);
        let v = Tensor::from_slice(&[-1.0f32, 1.0, 0.0]);
        let got = Vec::<f32>::try_from(
            &s.learned_log_variance(VarianceType::LearnedRange, &v)
                .unwrap(),
        )
        .unwrap();
        let (lo, hi) = (s.posterior.ln(), s.beta.ln());
        for (g, w) in got.iter().zip([lo, hi, 0.5 * (lo + hi)]) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {lo}, {hi}");
        }
        assert!(lo < hi, "beta_tilde < beta");
        let learned = s.learned_log_variance(VarianceType::Learned, &v).unwrap();
        assert!(learned.equal(&v));
        assert!(s
            .learned_log_variance(VarianceType::FixedSmall, &v)
            .is_err());
        assert!(VarianceType::LearnedRange.is_learned() && !VarianceType::FixedLarge.is_learned());
    }
}
