//! bfloat16 models on a CPU without bfloat16 arithmetic.
//!
//! Why: libtorch runs bfloat16 convolutions and matrix products natively only
//! where the CPU has instructions for them (oneDNN's AVX-512 BF16 and AMX
//! kernels). On other x86 CPUs it falls back to generic loops: on the
//! development machine (AVX2) a bfloat16 3x3 convolution of an SD1.5 U-Net's
//! 64x64 level took 28.6 s instead of 95 ms in float32, a bfloat16 linear
//! layer 7-10x longer (BENCHMARKS.md, "bfloat16 on a CPU without bfloat16
//! arithmetic"), so a bfloat16 SD1.5 step took minutes.
//!
//! So on such a CPU the heavy ops of a bfloat16 model (convolutions, linear
//! layers, attention, ADM's 1-D convolutions and attention products) widen
//! their operands to float32 (exact), run the float32 kernel, and round the
//! result to bfloat16. That is the arithmetic of libtorch's bfloat16 kernels
//! too (bfloat16 products accumulated in float32, rounded once): the results
//! differ by summation order only (the ADM classifiers' bfloat16 logits are
//! bit-identical to guided-diffusion's run on such a CPU; its tiny U-Nets'
//! outputs differ by 5.5e-3, under one bfloat16 step at their scale).
//! Weights are widened per call, so the model's memory stays bfloat16; the
//! transient copy is one layer's weight. Elementwise ops and norms stay in
//! bfloat16: libtorch vectorises them and they run as fast as in float32.
//!
//! float16 keeps libtorch's kernels: they round differently from one
//! float32-accumulated product (widening moved the ADM float16 U-Nets 2.3e-3,
//! over two float16 steps, away from guided-diffusion's output on the same
//! CPU), and float16 on a CPU is otherwise rare.
//!
//! The rule depends on the CPU's features and the operands' type only, so on
//! one machine the same seed always gives the same image.
use tch::{Device, Kind, Tensor};

/// Whether this CPU has bfloat16 arithmetic instructions that libtorch's
/// kernels use (oneDNN's AVX-512 BF16 and AMX kernels; Arm's BF16 extension).
pub fn native_bfloat16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("bf16")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        true
    }
}

/// `Some(BFloat16)` when an op on `x` and `other` should run in float32
/// here: both bfloat16 CPU tensors and this CPU without bfloat16 arithmetic.
/// Mismatched kinds give `None`, so libtorch's op reports them as before.
pub fn widened_kind(x: &Tensor, other: &Tensor) -> Option<Kind> {
    let kind = Kind::BFloat16;
    (x.kind() == kind
        && other.kind() == kind
        && x.device() == Device::Cpu
        && other.device() == Device::Cpu
        && !native_bfloat16())
    .then_some(kind)
}

/// `t` as float32 (a copy; differentiable, so gradients flow through).
pub fn float32(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float)
}

/// `x.linear(weight, bias)`, in float32 where [`widened_kind`] says so.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    match widened_kind(x, weight) {
        Some(kind) => float32(x)
            .linear(&float32(weight), bias.map(float32).as_ref())
            .to_kind(kind),
        None => x.linear(weight, bias),
    }
}

/// `Tensor::einsum(equation, [a, b])`, in float32 where [`widened_kind`]
/// says so (rounded per product, as libtorch's half kernels round).
pub fn einsum(equation: &str, a: &Tensor, b: &Tensor) -> Tensor {
    match widened_kind(a, b) {
        Some(kind) => {
            Tensor::einsum(equation, &[float32(a), float32(b)], None::<i64>).to_kind(kind)
        }
        None => Tensor::einsum(equation, &[a, b], None::<i64>),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(shape: &[i64], kind: Kind) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu)).to_kind(kind)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (float32(a) - float32(b)).abs().max().double_value(&[])
    }

    #[test]
    fn only_bfloat16_without_native_arithmetic_is_widened() {
        let bf = randn(&[2, 2], Kind::BFloat16);
        let expected = (!native_bfloat16()).then_some(Kind::BFloat16);
        assert_eq!(widened_kind(&bf, &bf), expected);
        for other in [Kind::Float, Kind::Half] {
            let t = randn(&[2, 2], other);
            assert_eq!(widened_kind(&t, &t), None, "{other:?}");
            assert_eq!(widened_kind(&bf, &t), None, "mismatched kinds");
            assert_eq!(widened_kind(&t, &bf), None, "mismatched kinds");
        }
    }

    /// Where the CPU lacks the arithmetic, the result is exactly the float32
    /// op on widened operands, rounded; either way it stays within bfloat16
    /// rounding of libtorch's own kernel.
    #[test]
    fn linear_is_the_rounded_float32_product() {
        tch::manual_seed(5);
        let kind = Kind::BFloat16;
        let x = randn(&[3, 7, 96], kind);
        let w = (randn(&[40, 96], Kind::Float) / 10.0).to_kind(kind);
        let b = randn(&[40], kind);
        let ours = linear(&x, &w, Some(&b));
        assert_eq!(ours.kind(), kind);
        let libtorch = x.linear(&w, Some(&b));
        if native_bfloat16() {
            assert!(ours.equal(&libtorch));
        } else {
            let widened = float32(&x).linear(&float32(&w), Some(&float32(&b)));
            assert!(ours.equal(&widened.to_kind(kind)));
        }
        // One rounding of outputs of scale ~1-3: bfloat16 keeps 8 bits.
        assert!(max_diff(&ours, &libtorch) < 0.07);
        let (e, f) = (randn(&[2, 5, 8], kind), randn(&[2, 5, 6], kind));
        let ours = einsum("bct,bcs->bts", &e, &f);
        assert_eq!(ours.kind(), kind);
        let libtorch = Tensor::einsum("bct,bcs->bts", &[&e, &f], None::<i64>);
        assert!(max_diff(&ours, &libtorch) < 0.07);
    }

    #[test]
    fn gradients_flow_through_the_widened_op() {
        let x = randn(&[4, 8], Kind::BFloat16).set_requires_grad(true);
        let w = randn(&[3, 8], Kind::BFloat16);
        let y = linear(&x, &w, None).to_kind(Kind::Float).sum(Kind::Float);
        let g = Tensor::run_backward(&[y], &[&x], false, false).remove(0);
        assert_eq!(g.kind(), Kind::BFloat16);
        let expected = w.to_kind(Kind::Float).sum_dim_intlist(0, true, Kind::Float);
        assert!(max_diff(&g, &expected.expand([4, 8], false)) < 0.05);
    }
}
