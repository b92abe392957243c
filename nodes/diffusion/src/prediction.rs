//! What a model predicts (`prediction_type`) and the conversions between
//! its output, the noise ε and the clean sample x_0.
//!
//! With x_t = α·x_0 + σ·ε ([`Coefficients`]: α = √ᾱ_t, σ = √(1−ᾱ_t) for the
//! DDPM forward process; DPM-Solver's alpha_t, sigma_t) and, for
//! v-prediction (Salimans & Ho 2022), v = α·ε − σ·x_0:
//! - epsilon: x_0 = (x_t − σ·ε)/α
//! - sample: ε = (x_t − α·x_0)/σ
//! - v_prediction: x_0 = α·x_t − σ·v, ε = α·v + σ·x_t
//!
//! The tensor ops run in diffusers' order (`schedulers/scheduling_ddim.py`,
//! `step`, "2. compute predicted original sample from predicted noise"), so
//! the result depends only on how the two scalars are computed:
//! [`predict_f32_diffusers`] takes them as diffusers' float32 0-d tensors
//! (bit for bit on the CPU; the samplers), [`PredictionType::to_eps`] and
//! [`PredictionType::from_eps`] in f64 from an f64 ᾱ (the guidance nodes).
use crate::names::ConfigName;
use crate::{scalar, Result};
use tch::Tensor;

/// `prediction_type` of a scheduler config: what the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

impl ConfigName for PredictionType {
    const ALL: &'static [(&'static str, Self)] = &[
        ("epsilon", PredictionType::Epsilon),
        ("v_prediction", PredictionType::VPrediction),
        ("sample", PredictionType::Sample),
    ];
}

/// α and σ of x_t = α·x_0 + σ·ε, as the scalars the tensor ops multiply by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coefficients {
    pub alpha: f64,
    pub sigma: f64,
}

impl Coefficients {
    /// diffusers' `alpha_prod_t ** 0.5` and `(1 - alpha_prod_t) ** 0.5` on
    /// float32 0-d tensors (libtorch's square root, [`crate::scalar`]).
    pub fn diffusers_f32(alpha_bar: f32) -> Result<Coefficients> {
        Ok(Coefficients {
            alpha: f64::from(scalar::sqrt(alpha_bar)?),
            sigma: f64::from(scalar::sqrt(1.0f32 - alpha_bar)?),
        })
    }

    /// √ᾱ and √(1−ᾱ) in f64.
    pub fn exact(alpha_bar: f64) -> Coefficients {
        Coefficients {
            alpha: alpha_bar.sqrt(),
            sigma: (1.0 - alpha_bar).sqrt(),
        }
    }

    /// Given float32 α and σ (DPM-Solver's `_sigma_to_alpha_sigma_t`).
    pub fn new(alpha: f32, sigma: f32) -> Coefficients {
        Coefficients {
            alpha: f64::from(alpha),
            sigma: f64::from(sigma),
        }
    }
}

impl PredictionType {
    /// x_0 from the model output at x_t.
    pub fn x0_with(self, output: &Tensor, x: &Tensor, c: Coefficients) -> Result<Tensor> {
        Ok(match self {
            PredictionType::Epsilon => x
                .f_sub(&output.f_mul_scalar(c.sigma)?)?
                .f_div_scalar(c.alpha)?,
            PredictionType::Sample => output.shallow_clone(),
            PredictionType::VPrediction => x
                .f_mul_scalar(c.alpha)?
                .f_sub(&output.f_mul_scalar(c.sigma)?)?,
        })
    }

    /// ε from the model output at x_t.
    pub fn eps_with(self, output: &Tensor, x: &Tensor, c: Coefficients) -> Result<Tensor> {
        Ok(match self {
            PredictionType::Epsilon => output.shallow_clone(),
            PredictionType::Sample => x
                .f_sub(&output.f_mul_scalar(c.alpha)?)?
                .f_div_scalar(c.sigma)?,
            PredictionType::VPrediction => output
                .f_mul_scalar(c.alpha)?
                .f_add(&x.f_mul_scalar(c.sigma)?)?,
        })
    }

    /// The model output of this type that ε at x_t implies (the inverse of
    /// [`PredictionType::eps_with`]): v = (ε − σ·x_t)/α, x_0 = (x_t − σ·ε)/α.
    pub fn from_eps_with(self, eps: &Tensor, x: &Tensor, c: Coefficients) -> Result<Tensor> {
        match self {
            PredictionType::Epsilon => Ok(eps.shallow_clone()),
            PredictionType::VPrediction => Ok(eps
                .f_sub(&x.f_mul_scalar(c.sigma)?)?
                .f_div_scalar(c.alpha)?),
            // x_0 from ε: the epsilon conversion.
            PredictionType::Sample => PredictionType::Epsilon.x0_with(eps, x, c),
        }
    }

    /// ε from the model output at x_t with ᾱ = `a`, scalars in f64.
    pub fn to_eps(self, output: &Tensor, x: &Tensor, a: f64) -> Result<Tensor> {
        self.eps_with(output, x, Coefficients::exact(a))
    }

    /// The model output implied by ε at x_t with ᾱ = `a`, scalars in f64.
    pub fn from_eps(self, eps: &Tensor, x: &Tensor, a: f64) -> Result<Tensor> {
        self.from_eps_with(eps, x, Coefficients::exact(a))
    }

    /// x_0 from the output of a sigma-parameterised model input x = x_0 + σ·ε
    /// (diffusers `scheduling_euler_discrete.py`, `step`, "1. compute
    /// predicted original sample (x_0) from sigma-scaled predicted noise"):
    /// epsilon `x − σ·ε`; v_prediction `v·(−σ/(σ² + 1) ** 0.5) + x/(σ² + 1)`;
    /// sample: the output itself. float32 scalars.
    pub fn x0_from_sigma(self, output: &Tensor, x: &Tensor, sigma: f32) -> Result<Tensor> {
        Ok(match self {
            PredictionType::Epsilon => x.f_sub(&output.f_mul_scalar(f64::from(sigma))?)?,
            PredictionType::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                let c_out = -sigma / scalar::sqrt(s2)?;
                output
                    .f_mul_scalar(f64::from(c_out))?
                    .f_add(&x.f_div_scalar(f64::from(s2))?)?
            }
            PredictionType::Sample => output.shallow_clone(),
        })
    }
}

/// x_0 and ε from `output` at x_t with cumulative alpha `alpha_prod_t`, with
/// diffusers' float32 scalars: matches diffusers bit for bit on the CPU.
pub fn predict_f32_diffusers(
    prediction_type: PredictionType,
    output: &Tensor,
    x: &Tensor,
    alpha_prod_t: f32,
) -> Result<(Tensor, Tensor)> {
    let c = Coefficients::diffusers_f32(alpha_prod_t)?;
    Ok((
        prediction_type.x0_with(output, x, c)?,
        prediction_type.eps_with(output, x, c)?,
    ))
}

/// ε re-derived from a (clipped) x_0 at x_t: ε = (x_t − √ᾱ·x_0)/√(1−ᾱ),
/// with diffusers' float32 scalars. diffusers `DDIMScheduler.step` with
/// `use_clipped_model_output=True` ("the pred_epsilon is always re-derived
/// from the clipped x_0 in Glide"); guided-diffusion's `ddim_sample` does the
/// same (`_predict_eps_from_xstart`, in its own float64 tables: see
/// [`crate::gaussian`]).
pub fn eps_from_x0_f32_diffusers(x0: &Tensor, x: &Tensor, alpha_prod_t: f32) -> Result<Tensor> {
    PredictionType::Sample.eps_with(x0, x, Coefficients::diffusers_f32(alpha_prod_t)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eps_from_a_clipped_x0_is_the_sample_conversion() {
        let a = 0.25f32;
        let x = Tensor::from_slice(&[3.0f32, -0.5]);
        let x0 = Tensor::from_slice(&[1.0f32, -0.2]);
        // (x - 0.5·x0)/sqrt(0.75)
        let want = Tensor::from_slice(&[2.5f32 / 0.75f32.sqrt(), -0.4 / 0.75f32.sqrt()]);
        let got = eps_from_x0_f32_diffusers(&x0, &x, a).unwrap();
        assert!((got - want).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn conversions_round_trip_and_match_the_definitions() {
        let (x0, eps) = (
            Tensor::from_slice(&[0.3f64, -1.2, 0.7, 2.0]),
            Tensor::from_slice(&[-0.5f64, 0.9, 1.1, -0.2]),
        );
        let a = 0.3f64;
        let x = &x0 * a.sqrt() + &eps * (1.0 - a).sqrt();
        let v = &eps * a.sqrt() - &x0 * (1.0 - a).sqrt();
        let c = Coefficients::exact(a);
        for (p, out) in [
            (PredictionType::Epsilon, &eps),
            (PredictionType::VPrediction, &v),
            (PredictionType::Sample, &x0),
        ] {
            let close =
                |t: &Tensor, want: &Tensor| (t - want).abs().max().double_value(&[]) < 1e-12;
            assert!(close(&p.to_eps(out, &x, a).unwrap(), &eps), "{p:?} -> eps");
            assert!(close(&p.x0_with(out, &x, c).unwrap(), &x0), "{p:?} -> x0");
            assert!(
                close(&p.from_eps(&eps, &x, a).unwrap(), out),
                "eps -> {p:?}"
            );
        }
    }

    #[test]
    fn sigma_form_is_the_scaled_alpha_form() {
        // x = x0 + sigma·eps is sqrt(sigma² + 1)·x_t with a = 1/(sigma² + 1).
        let sigma = 2.0f32;
        let x = Tensor::from_slice(&[1.0f32, -3.0]);
        let eps = Tensor::from_slice(&[0.5f32, 0.25]);
        let got = PredictionType::Epsilon
            .x0_from_sigma(&eps, &x, sigma)
            .unwrap();
        let want = &x - &eps * 2.0;
        assert!((&got - &want).abs().max().double_value(&[]) < 1e-6);
    }
}
