//! Which kernel runs a 2-D convolution on the CPU.
//!
//! bfloat16 convolutions on a CPU without bfloat16 arithmetic run in float32
//! ([`crate::cpu_precision`]), by the rules below.
//!
//! Small 3x3 convolutions (under 8M multiply-adds and 2^16 weights) run
//! diffgraph's own direct kernel, [`crate::cpu_kernels::small_conv`]:
//! oneDNN's per-call cost is most of their time. Large 3x3 "same"
//! convolutions (outputs from 12x12, weights from 2^19 elements) run as
//! Winograd F(2x2, 3x3), [`crate::cpu_kernels::winograd`]. The rest is below.
//!
//! libtorch sends every batched float32 CPU convolution to oneDNN. Measured on
//! this project's machine (AVX2, 2 threads; BENCHMARKS.md, "Convolution
//! kernels"), oneDNN's direct kernels are slow when the output is small and
//! the weights are large: the 3x3 convolutions of an SD-size U-Net's two
//! deepest levels (8x8 and 16x16 at 512x512) run at 45-100 GFLOP/s, where
//! the same product written as im2col + one GEMM runs at 100-150. The GEMM
//! takes the whole batch at once (the images' columns side by side), so the
//! weight, the large operand there, is packed once and not once per image:
//! an SD1.5-size U-Net call at an 8x8 latent (64x64 pixels) took 0.57-0.66 s
//! that way against 1.05 s with one GEMM per image.
//! Those levels hold about 40% of an SD1.5 step's convolution time. At larger
//! outputs, and for smaller weights, oneDNN is as fast or faster, so the rule
//! is by output size and weight size, and by nothing else: the same shapes
//! always take the same kernel, so a seed always gives the same image. The
//! stride-1 3x3 ones from 12x12 up now go to Winograd first (it needs 2.25x
//! fewer multiply-adds), so the GEMM form runs the 8x8 level and the strided
//! convolutions.
//!
//! The GEMM form sums in another order than oneDNN: an SD1.5-size U-Net's
//! output differs from diffusers' by float32 rounding (3.9e-6 max abs at an
//! output scale of 1.3, `scripts/bench/unet_parity.sh`), well inside every
//! parity tolerance. Gradients flow through both forms (classifier guidance).
use std::sync::atomic::{AtomicI64, Ordering};
use tch::{Device, Kind, Tensor};

/// Output positions (height x width) at or below which a float32 CPU
/// convolution with a kernel larger than 1x1 runs as im2col + GEMM...
pub const GEMM_MAX_OUTPUT_POSITIONS: i64 = 16 * 16;

/// ...when its weight has at least this many elements (640 -> 1280 channels at
/// 3x3 and up). Below it oneDNN's kernels win or tie (640 -> 640 and smaller,
/// down to the tiny test models' convolutions).
pub const GEMM_MIN_WEIGHT_ELEMENTS: i64 = 1 << 22;

static GEMM_MAX: AtomicI64 = AtomicI64::new(GEMM_MAX_OUTPUT_POSITIONS);

/// Sets the output size limit of the GEMM form for this process; 0 sends
/// every convolution to libtorch (the benchmarks compare the two in one run).
pub fn set_gemm_max_output_positions(positions: i64) {
    GEMM_MAX.store(positions, Ordering::Relaxed);
}

/// `x.conv2d(weight, bias, stride, padding)` with square kernels, dilation 1
/// and one group, through the faster kernel for its shape.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: i64,
    padding: i64,
) -> Tensor {
    use crate::cpu_precision::{float32, widened_kind};
    if let Some(kind) = widened_kind(x, weight) {
        let bias = bias.map(float32);
        return conv2d(
            &float32(x),
            &float32(weight),
            bias.as_ref(),
            stride,
            padding,
        )
        .to_kind(kind);
    }
    // An error reading the operands is libtorch's own: its convolution below
    // reports it.
    use crate::cpu_kernels::{small_conv, winograd};
    if let Some(Ok(out)) = small_conv::try_conv2d(x, weight, bias, stride, padding) {
        return out;
    }
    if let Some(Ok(out)) = winograd::try_conv2d(x, weight, bias, stride, padding) {
        return out;
    }
    match gemm_shape(x, weight, stride, padding) {
        Some((out_h, out_w)) => im2col_gemm(x, weight, bias, stride, padding, out_h, out_w),
        None => x.conv2d(weight, bias, [stride; 2], [padding; 2], [1, 1], 1),
    }
}

/// The output size when this convolution should run as im2col + GEMM. Runs
/// for every convolution, so the weight, a property of the layer, is looked at
/// first and the input only when the weight qualifies.
fn gemm_shape(x: &Tensor, weight: &Tensor, stride: i64, padding: i64) -> Option<(i64, i64)> {
    let &[out_ch, w_in, kh, kw] = weight.size().as_slice() else {
        return None;
    };
    if kh * kw == 1
        || out_ch * w_in * kh * kw < GEMM_MIN_WEIGHT_ELEMENTS
        || stride < 1
        || weight.kind() != Kind::Float
    {
        return None;
    }
    if x.device() != Device::Cpu || x.kind() != Kind::Float {
        return None;
    }
    let &[_, in_ch, h, w] = x.size().as_slice() else {
        return None;
    };
    if in_ch != w_in {
        return None;
    }
    let out_h = (h + 2 * padding - kh) / stride + 1;
    let out_w = (w + 2 * padding - kw) / stride + 1;
    (out_h > 0 && out_w > 0 && out_h * out_w <= GEMM_MAX.load(Ordering::Relaxed))
        .then_some((out_h, out_w))
}

/// out = W (out_ch x in_ch*k*k) · [columns(x[0]) | columns(x[1]) | ...] + b:
/// one GEMM over the whole batch, so the weight, the large operand at these
/// output sizes, is packed once rather than once per image.
fn im2col_gemm(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: i64,
    padding: i64,
    out_h: i64,
    out_w: i64,
) -> Tensor {
    let size = weight.size();
    let (batch, out_ch, kh, kw) = (x.size()[0], size[0], size[2], size[3]);
    let positions = out_h * out_w;
    // [batch, in*k*k, positions] -> [in*k*k, batch * positions]
    let columns = x
        .im2col([kh, kw], [1, 1], [padding; 2], [stride; 2])
        .permute([1, 0, 2])
        .reshape([-1, batch * positions]);
    let w = weight.reshape([out_ch, -1]);
    let out = match bias {
        Some(b) => b.view([out_ch, 1]).addmm(&w, &columns),
        None => w.mm(&columns),
    };
    out.view([out_ch, batch, out_h, out_w])
        .permute([1, 0, 2, 3])
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: i64, pad: i64) -> Tensor {
        x.conv2d(w, b, [stride; 2], [pad; 2], [1, 1], 1)
    }

    #[test]
    fn gemm_form_matches_libtorch_convolution() {
        tch::manual_seed(3);
        for (n, c, o, h, w, k, stride, pad, bias) in [
            (2, 1024, 512, 8, 8, 3, 1, 1, true),
            (1, 512, 1024, 9, 13, 3, 2, 1, true),
            (3, 768, 768, 16, 16, 3, 1, 0, false),
            (2, 512, 512, 5, 7, 4, 2, 2, true),
        ] {
            let x = Tensor::randn([n, c, h, w], (Kind::Float, Device::Cpu));
            // Unit-scale outputs (weights ~ 1/sqrt(fan-in)), so the bound is
            // float32 rounding over a fan-in of up to 9216 terms.
            let wt = Tensor::randn([o, c, k, k], (Kind::Float, Device::Cpu))
                / ((c * k * k) as f64).sqrt();
            let b = bias.then(|| Tensor::randn([o], (Kind::Float, Device::Cpu)));
            assert!(gemm_shape(&x, &wt, stride, pad).is_some());
            let ours = conv2d(&x, &wt, b.as_ref(), stride, pad);
            let theirs = reference(&x, &wt, b.as_ref(), stride, pad);
            assert_eq!(ours.size(), theirs.size());
            let err = (&ours - &theirs).abs().max().double_value(&[]);
            assert!(err < 5e-5, "{n}x{c}x{h}x{w} k{k} s{stride} p{pad}: {err}");
        }
    }

    #[test]
    fn large_outputs_and_other_kinds_keep_libtorch_convolution() {
        let w = Tensor::zeros([1024, 512, 3, 3], (Kind::Float, Device::Cpu));
        let big = Tensor::zeros([1, 512, 32, 32], (Kind::Float, Device::Cpu));
        let small_weight = Tensor::zeros([512, 512, 3, 3], (Kind::Float, Device::Cpu));
        assert!(gemm_shape(&big.narrow(2, 0, 8), &small_weight, 1, 1).is_none());
        assert!(gemm_shape(&big, &w, 1, 1).is_none());
        assert!(gemm_shape(&big, &w, 2, 1).is_some(), "16x16 after stride 2");
        let half = Tensor::zeros([1, 512, 8, 8], (Kind::BFloat16, Device::Cpu));
        assert!(gemm_shape(&half, &w.to_kind(Kind::BFloat16), 1, 1).is_none());
        let pointwise = Tensor::zeros([8192, 512, 1, 1], (Kind::Float, Device::Cpu));
        assert!(gemm_shape(&big.narrow(2, 0, 8), &pointwise, 1, 0).is_none());
    }

    /// Where the CPU lacks bfloat16 arithmetic, a bfloat16 convolution is the
    /// float32 one (by this module's rules) on widened operands, rounded;
    /// either way within bfloat16 rounding of libtorch's own kernel.
    #[test]
    fn half_precision_convolutions_round_the_float32_ones() {
        use crate::cpu_precision::{float32, native_bfloat16};
        tch::manual_seed(6);
        let kind = Kind::BFloat16;
        for (c, o, h, k, stride, pad) in [
            (16, 32, 9, 3, 1, 1),
            (8, 8, 6, 3, 2, 1),
            (24, 40, 5, 1, 1, 0),
        ] {
            let x = Tensor::randn([2, c, h, h], (Kind::Float, Device::Cpu)).to_kind(kind);
            let w = (Tensor::randn([o, c, k, k], (Kind::Float, Device::Cpu))
                / ((c * k * k) as f64).sqrt())
            .to_kind(kind);
            let b = Tensor::randn([o], (Kind::Float, Device::Cpu)).to_kind(kind);
            let ours = conv2d(&x, &w, Some(&b), stride, pad);
            assert_eq!(ours.kind(), kind);
            let theirs = reference(&x, &w, Some(&b), stride, pad);
            if !native_bfloat16() {
                let widened = conv2d(&float32(&x), &float32(&w), Some(&float32(&b)), stride, pad);
                assert!(ours.equal(&widened.to_kind(kind)));
            }
            // Outputs of scale ~1-3; bfloat16 keeps 8 significant bits.
            let err = (float32(&ours) - float32(&theirs))
                .abs()
                .max()
                .double_value(&[]);
            assert!(err < 0.05, "{c}->{o} at {h}: {err}");
        }
    }

    #[test]
    fn gradients_flow_through_the_gemm_form() {
        tch::manual_seed(4);
        let x = Tensor::randn([2, 1024, 6, 6], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let w = Tensor::randn([512, 1024, 3, 3], (Kind::Float, Device::Cpu)) * 0.03;
        let ours = conv2d(&x, &w, None, 1, 1).sum(Kind::Float);
        let g_ours = Tensor::run_backward(&[ours], &[&x], false, false).remove(0);
        let theirs = reference(&x, &w, None, 1, 1).sum(Kind::Float);
        let g_theirs = Tensor::run_backward(&[theirs], &[&x], false, false).remove(0);
        assert!((g_ours - g_theirs).abs().max().double_value(&[]) < 1e-5);
    }
}
