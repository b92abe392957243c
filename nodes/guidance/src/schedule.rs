//! What the guidance nodes need from the noise schedule: ᾱ_t looked up in the
//! scheduler's `alphas_cumprod`, the DDPM posterior variance of one step, and
//! the conversions between model output types at a given ᾱ_t.
//!
//! Notation (Ho et al. 2020): x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, and for
//! v-prediction (Salimans & Ho 2022) v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0.
use diffgraph_sdk::prelude::*;

/// The timestep as an index of `alphas_cumprod`: guidance looks ᾱ_t up, so
/// only integer timesteps (DDIM, DDPM, PNDM, and the Euler family with
/// "leading"/"trailing" spacing) are accepted.
pub fn integer_timestep(name: &str, t: f64, len: i64) -> Result<i64, NodeError> {
    if !t.is_finite() || t.fract() != 0.0 {
        return Err(format!(
            "input `{name}`: timestep {t} is not an integer; guidance looks alpha_bar_t up in \
             alphas_cumprod[t], so it needs integer timesteps"
        )
        .into());
    }
    if t < 0.0 || t >= len as f64 {
        return Err(format!(
            "input `{name}`: timestep {t} is outside alphas_cumprod, which has {len} entries"
        )
        .into());
    }
    Ok(t as i64)
}

/// `alphas_cumprod[t]` as float32 (the scheduler's dtype), checked to be a 1-D table.
pub fn alpha_bar(alphas_cumprod: &Tensor, t: i64) -> Result<f32, NodeError> {
    Ok(alphas_cumprod.f_double_value(&[t])? as f32)
}

/// Length of the `alphas_cumprod` input, which must be 1-D.
pub fn table_len(alphas_cumprod: &Tensor) -> Result<i64, NodeError> {
    match alphas_cumprod.size().as_slice() {
        [n] if *n > 0 => Ok(*n),
        other => Err(format!(
            "input `alphas_cumprod`: expected the scheduler's 1-D table, got shape {other:?}"
        )
        .into()),
    }
}

/// DDPM's `variance_type` (diffusers `DDPMScheduler._get_variance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceType {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
}

impl VarianceType {
    pub const NAMES: [&'static str; 3] = ["fixed_small", "fixed_small_log", "fixed_large"];

    pub fn parse(s: &str) -> Result<VarianceType, NodeError> {
        match s {
            "fixed_small" => Ok(VarianceType::FixedSmall),
            "fixed_small_log" => Ok(VarianceType::FixedSmallLog),
            "fixed_large" => Ok(VarianceType::FixedLarge),
            _ => Err(format!(
                "input `variance_type`: {s:?} is not one of {:?}",
                Self::NAMES
            )
            .into()),
        }
    }
}

/// Σ, the variance of the noise DDPMScheduler adds when stepping from t to
/// t_prev (ᾱ_prev = 1 when t_prev < 0), computed in float32 as diffusers does:
/// β_t = 1 − ᾱ_t/ᾱ_prev, Σ = max((1 − ᾱ_prev)/(1 − ᾱ_t)·β_t, 1e-20) for
/// fixed_small (the posterior variance β̃_t of Ho et al. 2020, eq. 7) and
/// fixed_small_log (whose exp(½·log Σ) is the same standard deviation), β_t for
/// fixed_large. At t = 0 diffusers adds no noise, so Σ = 0.
pub fn ddpm_variance(t: i64, a_t: f32, a_prev: f32, variance_type: VarianceType) -> f32 {
    if t == 0 {
        return 0.0;
    }
    let beta_t = 1.0f32 - a_t / a_prev;
    match variance_type {
        VarianceType::FixedSmall | VarianceType::FixedSmallLog => {
            ((1.0f32 - a_prev) / (1.0f32 - a_t) * beta_t).max(1e-20)
        }
        VarianceType::FixedLarge => beta_t,
    }
}

/// What a model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    V,
    Sample,
}

impl Prediction {
    pub const NAMES: [&'static str; 3] = ["epsilon", "v_prediction", "sample"];

    pub fn parse(s: &str) -> Result<Prediction, NodeError> {
        match s {
            "epsilon" => Ok(Prediction::Epsilon),
            "v_prediction" => Ok(Prediction::V),
            "sample" => Ok(Prediction::Sample),
            _ => Err(format!(
                "input `prediction_type`: {s:?} is not one of {:?}",
                Self::NAMES
            )
            .into()),
        }
    }

    /// ε from the model output at x_t: v ↦ √ᾱ·v + √(1−ᾱ)·x_t,
    /// x_0 ↦ (x_t − √ᾱ·x_0)/√(1−ᾱ).
    pub fn to_eps(self, output: &Tensor, x: &Tensor, a: f64) -> Result<Tensor, NodeError> {
        let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
        Ok(match self {
            Prediction::Epsilon => output.shallow_clone(),
            Prediction::V => output.f_mul_scalar(sa)?.f_add(&x.f_mul_scalar(sb)?)?,
            Prediction::Sample => x.f_sub(&output.f_mul_scalar(sa)?)?.f_div_scalar(sb)?,
        })
    }

    /// The inverse of [`Prediction::to_eps`] at the same x_t:
    /// v = (ε − √(1−ᾱ)·x_t)/√ᾱ, x_0 = (x_t − √(1−ᾱ)·ε)/√ᾱ.
    pub fn from_eps(self, eps: &Tensor, x: &Tensor, a: f64) -> Result<Tensor, NodeError> {
        let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
        Ok(match self {
            Prediction::Epsilon => eps.shallow_clone(),
            Prediction::V => eps.f_sub(&x.f_mul_scalar(sb)?)?.f_div_scalar(sa)?,
            Prediction::Sample => x.f_sub(&eps.f_mul_scalar(sb)?)?.f_div_scalar(sa)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip_and_match_the_definitions() {
        tch::manual_seed(3);
        let (x0, eps) = (
            Tensor::randn([8, 2], (Kind::Double, Device::Cpu)),
            Tensor::randn([8, 2], (Kind::Double, Device::Cpu)),
        );
        let a = 0.3f64;
        let x = &x0 * a.sqrt() + &eps * (1.0 - a).sqrt();
        let v = &eps * a.sqrt() - &x0 * (1.0 - a).sqrt();
        for (p, out) in [
            (Prediction::Epsilon, &eps),
            (Prediction::V, &v),
            (Prediction::Sample, &x0),
        ] {
            let e = p.to_eps(out, &x, a).unwrap();
            assert!(
                (&e - &eps).abs().max().double_value(&[]) < 1e-12,
                "{p:?} -> eps"
            );
            let back = p.from_eps(&e, &x, a).unwrap();
            assert!(
                (&back - out).abs().max().double_value(&[]) < 1e-12,
                "eps -> {p:?}"
            );
        }
    }

    #[test]
    fn ddpm_variance_is_the_posterior_variance() {
        // 1000 linear betas 1e-4..0.02: a single-step DDPM variance is beta_tilde_t.
        let betas: Vec<f64> = (0..1000)
            .map(|i| 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0)
            .collect();
        let mut a = vec![1.0f64; 1000];
        let mut acc = 1.0;
        for (i, b) in betas.iter().enumerate() {
            acc *= 1.0 - b;
            a[i] = acc;
        }
        let t = 500;
        let want = (1.0 - a[t - 1]) / (1.0 - a[t]) * betas[t];
        let got = ddpm_variance(
            t as i64,
            a[t] as f32,
            a[t - 1] as f32,
            VarianceType::FixedSmall,
        );
        assert!(
            (f64::from(got) - want).abs() / want < 1e-4,
            "{got} vs {want}"
        );
        let large = ddpm_variance(
            t as i64,
            a[t] as f32,
            a[t - 1] as f32,
            VarianceType::FixedLarge,
        );
        assert!((f64::from(large) - betas[t]).abs() / betas[t] < 1e-4);
        assert_eq!(
            ddpm_variance(0, a[0] as f32, 1.0, VarianceType::FixedSmall),
            0.0
        );
        // The last step of a schedule ending at t = 1 goes to a_prev = 1: clamped, not negative.
        assert_eq!(
            ddpm_variance(1, a[1] as f32, 1.0, VarianceType::FixedSmall),
            1e-20
        );
    }

    #[test]
    fn timesteps_must_index_the_table() {
        assert_eq!(integer_timestep("timestep", 999.0, 1000).unwrap(), 999);
        let e = integer_timestep("timestep", 12.5, 1000).unwrap_err().0;
        assert!(e.contains("not an integer"), "{e}");
        assert!(integer_timestep("timestep", 1000.0, 1000)
            .unwrap_err()
            .0
            .contains("outside"));
        assert!(integer_timestep("timestep", -1.0, 1000).is_err());
    }
}
