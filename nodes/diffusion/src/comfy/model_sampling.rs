//! ComfyUI's discrete-time model sampling (`comfy/model_sampling.py`:
//! `ModelSamplingDiscrete`, `EPS`, `V_PREDICTION`; betas from
//! `comfy/ldm/modules/diffusionmodules/util.py` `make_beta_schedule`). The
//! sampler works in sigmas, x = x0 + sigma·eps; the model sees
//! x / sqrt(sigma² + 1) at the training timestep whose log-sigma is nearest.
//!
//! Unlike diffusers (float32 `alphas_cumprod`, sigmas in float32), ComfyUI
//! computes betas, their cumulative product and the sigmas in float64 and
//! casts the sigmas and their logs to float32 at the end.
use super::scalar0::{t0, val};
use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// What the model's output means (ComfyUI's `EPS` and `V_PREDICTION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelPrediction {
    Eps,
    V,
}

impl ModelPrediction {
    /// From diffusers' `prediction_type` names.
    pub fn parse(name: &str) -> Result<ModelPrediction> {
        match name {
            "epsilon" | "eps" => Ok(ModelPrediction::Eps),
            "v_prediction" | "v" => Ok(ModelPrediction::V),
            other => Err(Error::from(format!(
                "prediction type `{other}` has no ComfyUI sampling here (expected epsilon or v_prediction)"
            ))),
        }
    }
}

/// `ModelSamplingDiscrete` with its prediction kind.
pub struct DiscreteSampling {
    /// float32 [timesteps], ascending.
    pub sigmas: Tensor,
    /// float32 logs (taken in float64).
    pub log_sigmas: Tensor,
    pub prediction: ModelPrediction,
}

impl Clone for DiscreteSampling {
    fn clone(&self) -> Self {
        DiscreteSampling {
            sigmas: self.sigmas.shallow_clone(),
            log_sigmas: self.log_sigmas.shallow_clone(),
            prediction: self.prediction,
        }
    }
}

impl DiscreteSampling {
    /// The "linear" schedule of ComfyUI (diffusers' `scaled_linear`):
    /// betas = linspace(sqrt(start), sqrt(end), n, float64)², SD's 0.00085,
    /// 0.012, 1000.
    pub fn linear(
        linear_start: f64,
        linear_end: f64,
        timesteps: i64,
        prediction: ModelPrediction,
    ) -> Result<DiscreteSampling> {
        if timesteps < 2 || linear_start <= 0.0 || linear_end <= linear_start {
            return Err(format!(
                "a discrete schedule needs >= 2 timesteps and 0 < linear_start < linear_end, got {timesteps}, {linear_start}, {linear_end}"
            )
            .into());
        }
        let d = (Kind::Double, Device::Cpu);
        let betas = Tensor::f_linspace(linear_start.powf(0.5), linear_end.powf(0.5), timesteps, d)?
            .f_pow_tensor_scalar(2)?;
        let alphas = betas.f_neg()?.f_add_scalar(1.0)?;
        let cumprod = alphas.f_cumprod(0, Kind::Double)?;
        let sigmas = cumprod
            .f_neg()?
            .f_add_scalar(1.0)?
            .f_div(&cumprod)?
            .f_pow_tensor_scalar(0.5)?;
        Ok(DiscreteSampling {
            log_sigmas: sigmas.f_log()?.f_to_kind(Kind::Float)?,
            sigmas: sigmas.f_to_kind(Kind::Float)?,
            prediction,
        })
    }

    /// SD 1.x/2.x's schedule.
    pub fn sd(prediction: ModelPrediction) -> Result<DiscreteSampling> {
        Self::linear(0.00085, 0.012, 1000, prediction)
    }

    pub fn len(&self) -> usize {
        self.sigmas.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sigma_at(&self, i: usize) -> Result<f32> {
        val(&self.sigmas.f_get(i as i64)?)
    }

    pub fn sigma_min(&self) -> Result<f32> {
        self.sigma_at(0)
    }

    pub fn sigma_max(&self) -> Result<f32> {
        self.sigma_at(self.len() - 1)
    }

    /// `timestep(sigma)`: the training timestep whose log-sigma is nearest
    /// (the first on a tie, as `argmin`).
    pub fn timestep(&self, sigma: f32) -> Result<i64> {
        let dists = t0(sigma).f_log()?.f_sub(&self.log_sigmas)?.f_abs()?;
        Ok(dists.f_argmin(0, false)?.f_int64_value(&[])?)
    }

    /// `sigma(timestep)`: log-sigma interpolated linearly between the two
    /// neighbouring training timesteps (float32 ops as there).
    pub fn sigma(&self, timestep: f32) -> Result<f32> {
        let t = t0(timestep).f_clamp(0.0, (self.len() - 1) as f64)?;
        let low = t.f_floor()?.f_to_kind(Kind::Int64)?;
        let high = t.f_ceil()?.f_to_kind(Kind::Int64)?;
        let w = t.f_frac()?;
        let lo = self
            .log_sigmas
            .f_index_select(0, &low.f_reshape([1])?)?
            .f_reshape([])?;
        let hi = self
            .log_sigmas
            .f_index_select(0, &high.f_reshape([1])?)?
            .f_reshape([])?;
        let log_sigma = w
            .f_neg()?
            .f_add_scalar(1.0)?
            .f_mul(&lo)?
            .f_add(&w.f_mul(&hi)?)?;
        val(&log_sigma.f_exp()?)
    }

    /// `calculate_input`: x / (sigma² + 1) ** 0.5 (sigma_data = 1).
    pub fn calculate_input(&self, sigma: f32, x: &Tensor) -> Result<Tensor> {
        let s = t0(sigma).f_to_device(x.device())?;
        let denom = s
            .f_pow_tensor_scalar(2)?
            .f_add_scalar(1.0)?
            .f_pow_tensor_scalar(0.5)?;
        Ok(x.f_div(&denom)?)
    }

    /// `calculate_denoised`: the model's x0 from its output on the input
    /// `x` (unscaled) at `sigma`. EPS: x − out·sigma; V: x / (sigma² + 1) −
    /// out·sigma / (sigma² + 1) ** 0.5.
    pub fn calculate_denoised(&self, sigma: f32, output: &Tensor, x: &Tensor) -> Result<Tensor> {
        let s = t0(sigma).f_to_device(x.device())?;
        let output = output.f_to_kind(x.kind())?;
        Ok(match self.prediction {
            ModelPrediction::Eps => x.f_sub(&output.f_mul(&s)?)?,
            ModelPrediction::V => {
                let s2 = s.f_pow_tensor_scalar(2)?.f_add_scalar(1.0)?;
                x.f_mul_scalar(1.0)?.f_div(&s2)?.f_sub(
                    &output
                        .f_mul(&s)?
                        .f_mul_scalar(1.0)?
                        .f_div(&s2.f_pow_tensor_scalar(0.5)?)?,
                )?
            }
        })
    }

    /// `noise_scaling`: the sampler's starting point. At full denoise
    /// (`max_denoise`) noise·sqrt(1 + sigma²) + latent, else noise·sigma +
    /// latent.
    pub fn noise_scaling(
        &self,
        sigma: f32,
        noise: &Tensor,
        latent: &Tensor,
        max_denoise: bool,
    ) -> Result<Tensor> {
        let s = t0(sigma).f_to_device(noise.device())?;
        let scaled = if max_denoise {
            noise.f_mul(&s.f_pow_tensor_scalar(2.0)?.f_add_scalar(1.0)?.f_sqrt()?)?
        } else {
            noise.f_mul(&s)?
        };
        Ok(scaled.f_add(latent)?)
    }

    /// KSAMPLER's `max_denoise`: the first sigma is (within 1e-5 relative)
    /// the schedule's largest or above it.
    pub fn max_denoise(&self, first_sigma: f32) -> Result<bool> {
        let (max, s) = (f64::from(self.sigma_max()?), f64::from(first_sigma));
        Ok((max - s).abs() <= 1e-5 * max.abs().max(s.abs()) || s > max)
    }
}
