//! One reverse step of guided-diffusion on tensors: `p_mean_variance`,
//! `p_sample` with `condition_mean`, `ddim_sample` with `condition_score`
//! (`guided_diffusion/gaussian_diffusion.py`). Each table value is rounded
//! to float32 where the reference's `_extract_into_tensor(...).float()` does,
//! and the tensor arithmetic follows the reference's order.
use super::tables::GaussianDiffusion;
use crate::{scalar, Result};
use tch::Tensor;

/// `ModelVarType`: what the model's variance channels mean, if any.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ModelVar {
    /// The model outputs log Σ (channels C..2C).
    Learned,
    /// The model outputs v in [-1, 1]: log Σ = (v+1)/2·log β + (1−(v+1)/2)·log β̃.
    LearnedRange,
    /// β̃ (the posterior variance), log clipped at step 0.
    FixedSmall,
    /// β, with β̃₁ at step 0.
    FixedLarge,
}

/// `p_mean_variance`'s result.
pub struct MeanVar {
    pub mean: Tensor,
    pub variance: Tensor,
    pub log_variance: Tensor,
    pub pred_xstart: Tensor,
}

fn f(v: f64) -> f64 {
    v as f32 as f64
}

impl GaussianDiffusion {
    /// `_predict_xstart_from_eps`.
    fn xstart_from_eps(&self, x: &Tensor, i: usize, eps: &Tensor) -> Tensor {
        x * f(self.sqrt_recip_alphas_cumprod[i]) - eps * f(self.sqrt_recipm1_alphas_cumprod[i])
    }

    /// `_predict_eps_from_xstart`.
    fn eps_from_xstart(&self, x: &Tensor, i: usize, x0: &Tensor) -> Tensor {
        (x * f(self.sqrt_recip_alphas_cumprod[i]) - x0) / f(self.sqrt_recipm1_alphas_cumprod[i])
    }

    /// `q_posterior_mean_variance`'s mean.
    fn posterior_mean(&self, x0: &Tensor, x: &Tensor, i: usize) -> Tensor {
        x0 * f(self.posterior_mean_coef1[i]) + x * f(self.posterior_mean_coef2[i])
    }

    /// `p_mean_variance` from the model's output at respaced step `i`
    /// (output [B, C or 2C, ...]: ε or x₀, then the variance channels).
    pub fn p_mean_variance(
        &self,
        output: &Tensor,
        x: &Tensor,
        i: usize,
        var: ModelVar,
        predict_xstart: bool,
        clip_denoised: bool,
    ) -> Result<MeanVar> {
        if i >= self.num_timesteps() {
            return Err(format!("step {i} is beyond the {} steps", self.num_timesteps()).into());
        }
        let c = x.size()[1];
        let learned = matches!(var, ModelVar::Learned | ModelVar::LearnedRange);
        let want = if learned { 2 * c } else { c };
        if output.size()[1] != want || output.size()[0] != x.size()[0] {
            return Err(format!(
                "model output {:?} does not fit sample {:?} ({} channels expected for {var:?} variance)",
                output.size(),
                x.size(),
                want
            )
            .into());
        }
        let (out, variance, log_variance) = match var {
            ModelVar::Learned | ModelVar::LearnedRange => {
                let parts = output.split(c, 1);
                let log_var = if var == ModelVar::Learned {
                    parts[1].shallow_clone()
                } else {
                    let min_log = f(self.posterior_log_variance_clipped[i]);
                    let max_log = f(self.betas[i].ln());
                    let frac = (&parts[1] + 1.0) / 2.0;
                    &frac * max_log + (1.0 - &frac) * min_log
                };
                (parts[0].shallow_clone(), log_var.exp(), log_var)
            }
            ModelVar::FixedSmall | ModelVar::FixedLarge => {
                let v = match (var, i) {
                    (ModelVar::FixedSmall, _) => self.posterior_variance[i],
                    (_, 0) => self.posterior_variance[1],
                    _ => self.betas[i],
                };
                let lv = if var == ModelVar::FixedSmall {
                    self.posterior_log_variance_clipped[i]
                } else {
                    v.ln()
                };
                (
                    output.shallow_clone(),
                    x.ones_like() * f(v),
                    x.ones_like() * f(lv),
                )
            }
        };
        let x0 = if predict_xstart {
            out
        } else {
            self.xstart_from_eps(x, i, &out)
        };
        let x0 = if clip_denoised {
            x0.clamp(-1.0, 1.0)
        } else {
            x0
        };
        Ok(MeanVar {
            mean: self.posterior_mean(&x0, x, i),
            variance,
            log_variance,
            pred_xstart: x0,
        })
    }

    /// `p_sample`: `condition_mean` (mean + Σ·grad, with the model's own Σ)
    /// when `grad` (the scaled classifier gradient) is given, then
    /// mean + exp(log Σ / 2)·noise except at step 0.
    pub fn p_sample(
        &self,
        mv: &MeanVar,
        i: usize,
        grad: Option<&Tensor>,
        noise: &Tensor,
    ) -> Tensor {
        let mean = match grad {
            Some(g) => &mv.mean + &mv.variance * g,
            None => mv.mean.shallow_clone(),
        };
        if i == 0 {
            mean
        } else {
            mean + (&mv.log_variance * 0.5).exp() * noise
        }
    }

    /// `ddim_sample` with `eta`: `condition_score` (ε re-derived from the
    /// clipped x₀, shifted by −√(1−ᾱ)·grad, x₀ re-derived) when `grad` is
    /// given, then DDIM's equation 12; `noise` is used only when eta > 0 and
    /// i > 0 (the reference draws it every step anyway).
    pub fn ddim_sample(
        &self,
        mv: &MeanVar,
        x: &Tensor,
        i: usize,
        grad: Option<&Tensor>,
        eta: f64,
        noise: &Tensor,
    ) -> Result<Tensor> {
        let ab = self.alphas_cumprod[i] as f32;
        let abp = self.alphas_cumprod_prev[i] as f32;
        let x0 = match grad {
            Some(g) => {
                let eps = self.eps_from_xstart(x, i, &mv.pred_xstart);
                let eps = eps - g * f64::from(scalar::sqrt(1.0 - ab)?);
                self.xstart_from_eps(x, i, &eps)
            }
            None => mv.pred_xstart.shallow_clone(),
        };
        let eps = self.eps_from_xstart(x, i, &x0);
        let sigma =
            eta as f32 * scalar::sqrt((1.0 - abp) / (1.0 - ab))? * scalar::sqrt(1.0 - ab / abp)?;
        let mean = x0 * f64::from(scalar::sqrt(abp)?)
            + eps * f64::from(scalar::sqrt(1.0 - abp - sigma * sigma)?);
        Ok(if i == 0 || sigma == 0.0 {
            mean
        } else {
            mean + noise * f64::from(sigma)
        })
    }
}
