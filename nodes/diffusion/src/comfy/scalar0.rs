//! 0-d float32 CPU tensors: k-diffusion computes its step sizes on `sigmas[i]`
//! (0-d float32 tensors), so diffgraph does the same ops on the same kind of
//! tensor to get the same bits (log, exp, expm1, pow are libtorch kernels,
//! not IEEE-exact).
use crate::Result;
use tch::{Device, Kind, Tensor};

/// A 0-d float32 CPU tensor holding `x`.
pub fn t0(x: f32) -> Tensor {
    Tensor::scalar_tensor(f64::from(x), (Kind::Float, Device::Cpu))
}

/// The value of a 0-d (or one-element) float tensor.
pub fn val(t: &Tensor) -> Result<f32> {
    Ok(t.f_double_value(&[])? as f32)
}
