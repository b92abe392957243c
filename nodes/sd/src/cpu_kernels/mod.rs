//! diffgraph's own CPU kernels: for the calls where libtorch's per-call cost
//! is most of the time, 3x3 convolutions under 8M multiply-adds
//! ([`small_conv`], instead of oneDNN) and attention with heads of at most 8
//! components ([`small_attention`], instead of the flash-attention kernel),
//! which the tiny test models and the demo are made of (BENCHMARKS.md,
//! "Small-head attention and small convolutions in Rust"); and large 3x3
//! "same" convolutions as Winograd F(2x2, 3x3) ([`winograd`]: 2.25x fewer
//! multiply-adds than oneDNN's direct kernels, for an SD U-Net's upper
//! levels and the VAE decoder).
//!
//! What they share: safe Rust only (the small kernels vectorised by `pulp`'s
//! runtime dispatch, AVX2+FMA where the CPU has it, scalar otherwise;
//! Winograd's transforms by the compiler around a libtorch GEMM); a call is
//! taken by its shape alone, so the same shapes always run the same kernel;
//! only float32 CPU tensors that need no gradient are taken (classifier
//! guidance's gradients stay with libtorch); operands are copied out of
//! libtorch into reused buffers ([`scratch`]), results are written straight
//! into libtorch tensors (`diffgraph_sdk::OwnedFloats`); each kernel has a
//! switch for benchmarks.
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Device, Kind, Tensor};

pub mod scratch;
pub mod small_attention;
pub mod small_conv;
pub mod winograd;

/// Whether a kernel (or `op_threads`' one-thread rule) applies in this
/// process: on unless a benchmark turns it off to time libtorch's own way in
/// the same run.
pub struct Switch(AtomicBool);

impl Switch {
    pub const fn on() -> Switch {
        Switch(AtomicBool::new(true))
    }

    pub fn set(&self, enabled: bool) {
        self.0.store(enabled, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A CPU float32 tensor whose result needs no gradient: the only operands
/// these kernels take.
fn plain_cpu_float(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float && !t.requires_grad()
}

/// Operands the kernels' tests share.
#[cfg(test)]
mod test_operands {
    use tch::{Device, Kind, Tensor};

    pub fn opts() -> (Kind, Device) {
        (Kind::Float, Device::Cpu)
    }

    /// Input, 3x3 weight scaled by 1/sqrt(fan-in) (outputs of size ~1) and
    /// bias of a convolution.
    pub fn conv_operands(n: i64, c: i64, o: i64, h: i64, w: i64) -> (Tensor, Tensor, Tensor) {
        let x = Tensor::randn([n, c, h, w], opts());
        let weight = Tensor::randn([o, c, 3, 3], opts()) / ((c * 9) as f64).sqrt();
        (x, weight, Tensor::randn([o], opts()))
    }
}
