//! k-diffusion's step helpers on 0-d float32 tensors
//! (`comfy/k_diffusion/sampling.py`: `to_d`, `get_ancestral_step`, the
//! `t_fn` / `sigma_fn` of the DPM-Solver++ samplers).
use super::Method;
use diffgraph_diffusion::comfy::scalar0::{t0, val};
use diffgraph_diffusion::Result;
use diffgraph_sdk::tch::Tensor;

/// `to_d`: the Karras ODE derivative (x − denoised) / sigma.
pub fn to_d(x: &Tensor, sigma: &Tensor, denoised: &Tensor) -> Result<Tensor> {
    Ok(x.f_sub(denoised)?.f_div(sigma)?)
}

/// `get_ancestral_step(sigma_from, sigma_to, eta=1)`: (sigma_down, sigma_up).
pub fn ancestral(from: f32, to: f32) -> Result<(Tensor, Tensor)> {
    let (f, t) = (t0(from), t0(to));
    let (f2, t2) = (f.f_pow_tensor_scalar(2)?, t.f_pow_tensor_scalar(2)?);
    let candidate = t2
        .f_mul(&f2.f_sub(&t2)?)?
        .f_div(&f2)?
        .f_pow_tensor_scalar(0.5)?
        .f_mul_scalar(1.0)?;
    // Python's min(sigma_to, candidate): the candidate only when smaller.
    let up = if val(&candidate)? < to { candidate } else { t };
    let down = t2
        .f_sub(&up.f_pow_tensor_scalar(2)?)?
        .f_pow_tensor_scalar(0.5)?;
    Ok((down, up))
}

/// `t_fn`: −log(sigma).
pub fn t_fn(sigma: &Tensor) -> Result<Tensor> {
    Ok(sigma.f_log()?.f_neg()?)
}

/// `sigma_fn`: exp(−t).
pub fn sigma_fn(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_neg()?.f_exp()?)
}

/// Whether the step from `sigma` to `next` evaluates the model twice.
pub fn second_evaluation(method: Method, sigma: f32, next: f32) -> Result<bool> {
    Ok(match method {
        Method::Heun | Method::Dpm2 | Method::DpmppSde => next != 0.0,
        Method::Dpm2Ancestral | Method::Dpmpp2sAncestral => val(&ancestral(sigma, next)?.0)? != 0.0,
        _ => false,
    })
}
