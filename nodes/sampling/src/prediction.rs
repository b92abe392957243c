//! From the model's output to the predicted clean sample x0 and noise eps,
//! for each `prediction_type`, as in diffusers `schedulers/scheduling_ddim.py`
//! (`step`, "2. compute predicted original sample from predicted noise");
//! DDPM, PNDM and the Euler family use the same conversions.
//!
//! With the forward process x_t = sqrt(a)·x0 + sqrt(1-a)·eps (a = alphas_cumprod[t]):
//! - epsilon: x0 = (x_t - sqrt(1-a)·eps) / sqrt(a)
//! - sample: eps = (x_t - sqrt(a)·x0) / sqrt(1-a)
//! - v_prediction: x0 = sqrt(a)·x_t - sqrt(1-a)·v, eps = sqrt(a)·v + sqrt(1-a)·x_t
//!
//! The scalars are float32, as diffusers' 0-d float32 tensors are
//! (`beta_prod_t = 1 - alpha_prod_t`; `** 0.5` is libtorch's float32 sqrt,
//! `crate::scalar`), and the tensor ops run in the same order, so results
//! match diffusers bit for bit on the CPU.
use crate::schedule::PredictionType;
use diffgraph_sdk::prelude::*;

/// x0 and eps predicted from `model_output` for `sample` at cumulative alpha `alpha_prod_t`.
pub fn predict(
    prediction_type: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod_t: f32,
) -> Result<(Tensor, Tensor), NodeError> {
    let beta_prod_t = 1.0f32 - alpha_prod_t;
    let sqrt_a = f64::from(crate::scalar::sqrt(alpha_prod_t)?);
    let sqrt_b = f64::from(crate::scalar::sqrt(beta_prod_t)?);
    Ok(match prediction_type {
        PredictionType::Epsilon => {
            let x0 = sample
                .f_sub(&model_output.f_mul_scalar(sqrt_b)?)?
                .f_div_scalar(sqrt_a)?;
            (x0, model_output.shallow_clone())
        }
        PredictionType::Sample => {
            let eps = sample
                .f_sub(&model_output.f_mul_scalar(sqrt_a)?)?
                .f_div_scalar(sqrt_b)?;
            (model_output.shallow_clone(), eps)
        }
        PredictionType::VPrediction => {
            let x0 = sample
                .f_mul_scalar(sqrt_a)?
                .f_sub(&model_output.f_mul_scalar(sqrt_b)?)?;
            let eps = model_output
                .f_mul_scalar(sqrt_a)?
                .f_add(&sample.f_mul_scalar(sqrt_b)?)?;
            (x0, eps)
        }
    })
}
