//! float32 scalar math exactly as diffusers does it on 0-d torch tensors.
//!
//! Addition, subtraction, multiplication and division are IEEE-exact, so
//! Rust's `f32` ops give torch's results. `x ** 0.5`, `torch.log` and
//! `torch.exp` are libtorch kernels (MKL's vector math on x86-64), which do
//! not always round like IEEE/libm, and MKL picks its kernels per CPU vendor
//! and instruction set: torch's float32 square root differs from the
//! correctly rounded one for 6 of SD's 1000 training sigmas on Intel AVX-512,
//! 0 on Intel AVX2 and 190 on non-Intel CPUs (generic kernels), which moves
//! Karras timesteps by an ulp (hence one scheduler fixture per kind of
//! machine, `tests/fixtures/schedulers_reference*.json`). These helpers therefore run them through
//! libtorch on a 0-d float32 CPU tensor, the same code that runs under
//! diffusers (about a microsecond each).
use crate::Result;
use tch::{Device, Kind, Tensor};

fn unary(x: f32, op: impl Fn(&Tensor) -> Result<Tensor, tch::TchError>) -> Result<f32> {
    let t = Tensor::f_scalar_tensor(f64::from(x), (Kind::Float, Device::Cpu))?;
    Ok(op(&t)?.f_double_value(&[])? as f32)
}

/// `x ** 0.5` (`torch.sqrt`) for a float32 0-d tensor.
pub fn sqrt(x: f32) -> Result<f32> {
    unary(x, |t| t.f_sqrt())
}

/// `torch.sqrt` of a float32 tensor's values (the vectorised kernel gives
/// the same values as the 0-d one).
pub fn sqrt_all(x: &[f32]) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(&Tensor::from_slice(x).f_sqrt()?)?)
}

/// `torch.log(x)` for a float32 0-d tensor.
pub fn log(x: f32) -> Result<f32> {
    unary(x, |t| t.f_log())
}

/// `torch.exp(x)` for a float32 0-d tensor.
pub fn exp(x: f32) -> Result<f32> {
    unary(x, |t| t.f_exp())
}

/// `tensor * s` for a float32 scalar `s` (a 0-d tensor or a Python float
/// times a float32 tensor: libtorch multiplies by `s` as float32).
pub fn mul(t: &Tensor, s: f32) -> Result<Tensor> {
    Ok(t.f_mul_scalar(f64::from(s))?)
}

/// `tensor / s` for a float32 scalar `s`.
pub fn div(t: &Tensor, s: f32) -> Result<Tensor> {
    Ok(t.f_div_scalar(f64::from(s))?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_and_exp_are_close_to_libm() {
        for x in [0.001f32, 0.5, 1.0, 3.0, 14.6] {
            assert!(
                (super::log(x).unwrap() - x.ln()).abs()
                    <= 2.0 * f32::EPSILON * x.ln().abs().max(1.0)
            );
            assert!((super::exp(-x).unwrap() - (-x).exp()).abs() <= 2.0 * f32::EPSILON);
            assert!((super::sqrt(x).unwrap() - x.sqrt()).abs() <= f32::EPSILON * x.sqrt());
        }
        assert_eq!(super::log(0.0).unwrap(), f32::NEG_INFINITY);
    }
}
