//! Seeded noise for stochastic steps (DDIM with eta > 0).
//!
//! Each step draws its noise as `torch.manual_seed(seed + step_index);
//! torch.randn(shape)` would: float32, on the CPU, from libtorch's default CPU
//! generator, then moved to the sample's device and dtype. The noise is thus
//! the same on every device and in every run, and a Python reference can draw
//! exactly the same values (scripts/fixtures/ddim_reference.py passes them to
//! diffusers as `variance_noise`). diffusers itself draws from the pipeline's
//! `generator` instead, so its stochastic samples match only with injected noise.
//!
//! `manual_seed` reseeds libtorch's global generator: the host runs one node
//! at a time, so nothing else draws in between.
use diffgraph_sdk::prelude::*;

/// Standard normal noise shaped, typed and placed like `like`, seeded by `seed + step_index`.
pub fn step_noise(seed: i64, step_index: usize, like: &Tensor) -> Result<Tensor, NodeError> {
    let step_seed = i64::try_from(step_index)
        .ok()
        .and_then(|i| seed.checked_add(i))
        .ok_or("noise seed overflows")?;
    tch::manual_seed(step_seed);
    let noise = Tensor::f_randn(like.size(), (Kind::Float, Device::Cpu))?;
    Ok(noise.f_to_device(like.device())?.f_to_kind(like.kind())?)
}
