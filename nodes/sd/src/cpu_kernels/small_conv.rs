//! Small 3x3 convolutions, computed in Rust on the CPU.
//!
//! Why: libtorch sends a float32 CPU convolution to oneDNN, which costs
//! 70-100 us per call before any arithmetic on the development machine (a
//! 4 -> 32-channel 3x3 convolution of 0.2M multiply-adds takes 74 us, 6
//! GFLOP/s), and reaches 50-70 GFLOP/s only from ~10M multiply-adds on. The
//! tiny SD test model's U-Net is made of 0.2-7M multiply-add convolutions and
//! spent ~60% of a step in them (the demo's has them at its upper levels).
//!
//! How: a direct convolution with eight (the CPU's vector width of) output
//! channels per vector lane. The input is copied once into a zero-padded
//! buffer and the weights repacked as [channel block][input channel][tap]
//! vectors, so the inner loop is branch-free: per input channel and tap, a
//! tile of 2 channel blocks x 4 output columns takes 2 weight vectors, 4
//! broadcast inputs and 8 fused multiply-adds, all in registers.
//! Vectorisation is `pulp`'s safe runtime dispatch (AVX2+FMA, or scalar), so
//! this module has no `unsafe`. Sums run in input-channel order: the result
//! differs from oneDNN's by float32 rounding only.
//!
//! When: float32 CPU tensors that need no gradient, a 3x3 kernel, any stride
//! and padding, fewer than [`MAX_MACS`] multiply-adds (inside `op_threads`'
//! one-thread range) and fewer than [`MAX_WEIGHT_ELEMENTS`] weights.
//! Measured per call against oneDNN on one thread, the tensor copies in and
//! out included (BENCHMARKS.md, "Small-head attention and small
//! convolutions"): 0.25-0.92x oneDNN's time for the tiny model's shapes,
//! ties (1.01-1.02x) at the rule's edges; 1.1x at 10-14M multiply-adds or
//! 74k weights at a 4x6 output, which stay with oneDNN.
use diffgraph_sdk::OwnedFloats;
use pulp::{Arch, Simd, WithSimd};
use tch::Tensor;

use super::scratch::Scratch;
use super::{plain_cpu_float, Switch};

/// Convolutions of this many multiply-adds or more stay with oneDNN.
pub const MAX_MACS: i64 = 1 << 23;

/// Weights of this many elements or more stay with oneDNN: repacking them
/// costs more than the kernel gains when the output is small (128 -> 64
/// channels at 4x6 was 1.1x oneDNN's time, 96 -> 64 0.9x).
pub const MAX_WEIGHT_ELEMENTS: i64 = 1 << 16;

/// On unless a benchmark turns it off ([`super::Switch`]).
pub static ENABLED: Switch = Switch::on();

/// Sizes of one convolution: input [batch, in_ch, h, w], weight [out_ch,
/// in_ch, 3, 3].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub in_ch: usize,
    pub out_ch: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    pub padding: usize,
}

/// The kernel size this module takes.
const K: usize = 3;

impl ConvShape {
    /// From libtorch's sizes: input [batch, in_ch, h, w], `out_ch` filters,
    /// `stride` and `padding` (all checked non-negative by the caller).
    pub fn new(input: [i64; 4], out_ch: i64, stride: i64, padding: i64) -> ConvShape {
        let u = |v: i64| v as usize;
        let [batch, in_ch, h, w] = input;
        ConvShape {
            batch: u(batch),
            in_ch: u(in_ch),
            out_ch: u(out_ch),
            h: u(h),
            w: u(w),
            stride: u(stride),
            padding: u(padding),
        }
    }

    /// The sizes of a call diffgraph's convolution kernels can take at all:
    /// a weight [out_ch, in_ch, 3, 3], an input [batch, in_ch, h, w], a bias
    /// of [out_ch] or none, every one a float32 CPU tensor that needs no
    /// gradient, no empty dimension. `weight_fits(out_ch, in_ch)`, the
    /// kernel's own rule on the weight (a property of the layer), is asked
    /// before the input is looked at: this runs for every convolution.
    pub fn of_plain_call(
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: i64,
        padding: i64,
        weight_fits: impl Fn(i64, i64) -> bool,
    ) -> Option<ConvShape> {
        let &[out_ch, w_in, 3, 3] = weight.size().as_slice() else {
            return None;
        };
        if !weight_fits(out_ch, w_in) {
            return None;
        }
        let &[batch, in_ch, h, w] = x.size().as_slice() else {
            return None;
        };
        let bias_fits = bias.is_none_or(|b| b.size() == [out_ch] && plain_cpu_float(b));
        if in_ch != w_in
            || [batch, in_ch, out_ch, h, w].contains(&0)
            || !bias_fits
            || !plain_cpu_float(x)
            || !plain_cpu_float(weight)
        {
            return None;
        }
        Some(ConvShape::new(
            [batch, in_ch, h, w],
            out_ch,
            stride,
            padding,
        ))
    }

    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.padding - K) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.padding - K) / self.stride + 1
    }

    /// Elements of the output.
    pub fn out_len(&self) -> usize {
        self.batch * self.out_ch * self.out_h() * self.out_w()
    }
}

/// `x.conv2d(weight, bias, stride, padding)` when the call is one this
/// kernel takes (module docs); `None` otherwise, and the caller uses
/// libtorch.
pub fn try_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: i64,
    padding: i64,
) -> Option<Result<Tensor, tch::TchError>> {
    let shape = eligible(x, weight, bias, stride, padding)?;
    Some(run(x, weight, bias, shape))
}

/// The shape of a call this kernel takes, or `None`.
fn eligible(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: i64,
    padding: i64,
) -> Option<ConvShape> {
    if stride < 1 || padding < 0 || !ENABLED.is_on() {
        return None;
    }
    let weight_fits = |out_ch: i64, in_ch: i64| out_ch * in_ch * 9 < MAX_WEIGHT_ELEMENTS;
    let shape = ConvShape::of_plain_call(x, weight, bias, stride, padding, weight_fits)?;
    let (h, w, p) = (shape.h, shape.w, shape.padding);
    if h + 2 * p < K || w + 2 * p < K {
        return None;
    }
    let macs = shape.batch * shape.out_h() * shape.out_w() * shape.out_ch * shape.in_ch * K * K;
    ((macs as i64) < MAX_MACS).then_some(shape)
}

fn run(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    shape: ConvShape,
) -> Result<Tensor, tch::TchError> {
    let bias = bias.map(Scratch::read).transpose()?;
    let size = [shape.batch, shape.out_ch, shape.out_h(), shape.out_w()].map(|v| v as i64);
    let mut out = OwnedFloats::zeros(&size)?;
    conv3x3_into(
        &Scratch::read(x)?,
        &Scratch::read(weight)?,
        bias.as_deref(),
        shape,
        out.as_mut_slice(),
    );
    Ok(out.into_tensor())
}

/// The kernel on row-major slices: `x` [batch, in_ch, h, w], `weight`
/// [out_ch, in_ch, 3, 3], `bias` [out_ch]; returns [batch, out_ch, out_h, out_w].
pub fn conv3x3(x: &[f32], weight: &[f32], bias: Option<&[f32]>, shape: ConvShape) -> Vec<f32> {
    let mut out = vec![0f32; shape.out_len()];
    conv3x3_into(x, weight, bias, shape, &mut out);
    out
}

/// [`conv3x3`] into `out` (every element is written).
pub fn conv3x3_into(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: ConvShape,
    out: &mut [f32],
) {
    let s = shape;
    assert_eq!(
        x.len(),
        s.batch * s.in_ch * s.h * s.w,
        "x does not match {s:?}"
    );
    assert_eq!(
        weight.len(),
        s.out_ch * s.in_ch * K * K,
        "weight does not match {s:?}"
    );
    assert!(
        bias.is_none_or(|b| b.len() == s.out_ch),
        "bias does not match {s:?}"
    );
    assert!(
        s.stride >= 1 && s.h + 2 * s.padding >= K && s.w + 2 * s.padding >= K,
        "{s:?}"
    );
    assert_eq!(out.len(), s.out_len(), "out does not match {s:?}");
    Arch::new().dispatch(Conv {
        x,
        weight,
        bias,
        shape,
        out,
    });
}

struct Conv<'a> {
    x: &'a [f32],
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
    shape: ConvShape,
    out: &'a mut [f32],
}

/// Where one tile reads and writes.
struct Geometry {
    in_ch: usize,
    out_ch: usize,
    padded_h: usize,
    padded_w: usize,
    out_h: usize,
    out_w: usize,
    stride: usize,
}

impl WithSimd for Conv<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let s = self.shape;
        let lanes = S::F32_LANES;
        let blocks = s.out_ch.div_ceil(lanes);
        let zero = simd.splat_f32s(0.0);
        let block_len = s.in_ch * K * K;
        // Weights as [block][input channel][tap] vectors, lane i of block b
        // holding output channel b * lanes + i (0 past the last channel).
        let mut packed_floats = Scratch::zeroed(blocks * block_len * lanes);
        let flat: &mut [f32] = &mut packed_floats;
        for (o, filters) in self.weight.chunks_exact(block_len).enumerate() {
            let (block, lane) = (o / lanes, o % lanes);
            for (i, &w) in filters.iter().enumerate() {
                flat[(block * block_len + i) * lanes + lane] = w;
            }
        }
        let packed: &[S::f32s] = bytemuck::cast_slice(&packed_floats);
        let mut bias = vec![zero; blocks];
        if let Some(b) = self.bias {
            bytemuck::cast_slice_mut::<_, f32>(&mut bias)[..s.out_ch].copy_from_slice(b);
        }
        let g = Geometry {
            in_ch: s.in_ch,
            out_ch: s.out_ch,
            padded_h: s.h + 2 * s.padding,
            padded_w: s.w + 2 * s.padding,
            out_h: s.out_h(),
            out_w: s.out_w(),
            stride: s.stride,
        };
        let mut padded = Scratch::zeroed(s.in_ch * g.padded_h * g.padded_w);
        let image_len = s.in_ch * s.h * s.w;
        let out_len = s.out_ch * g.out_h * g.out_w;
        for (x, out) in self
            .x
            .chunks_exact(image_len)
            .zip(self.out.chunks_exact_mut(out_len))
        {
            for (src, dst) in x.chunks_exact(s.w).zip(0..) {
                let (c, y) = (dst / s.h, dst % s.h);
                let row = (c * g.padded_h + y + s.padding) * g.padded_w + s.padding;
                padded[row..][..s.w].copy_from_slice(src);
            }
            let mut block = 0;
            while block < blocks {
                let pair = block + 1 < blocks;
                for y in 0..g.out_h {
                    let tiles = Tiles {
                        simd,
                        packed,
                        bias: &bias,
                        input: &padded,
                        g: &g,
                        block,
                        y,
                    };
                    if pair {
                        tiles.row::<2>(out);
                    } else {
                        tiles.row::<1>(out);
                    }
                }
                block += if pair { 2 } else { 1 };
            }
        }
    }
}

/// One output row of one or two channel blocks.
struct Tiles<'a, S: Simd> {
    simd: S,
    packed: &'a [S::f32s],
    bias: &'a [S::f32s],
    input: &'a [f32],
    g: &'a Geometry,
    block: usize,
    y: usize,
}

impl<S: Simd> Tiles<'_, S> {
    /// The row in tiles of 4 output columns, then 2, then 1.
    #[inline(always)]
    fn row<const BLOCKS: usize>(&self, out: &mut [f32]) {
        let mut x = 0;
        while x + 4 <= self.g.out_w {
            self.tile::<BLOCKS, 4>(x, out);
            x += 4;
        }
        if x + 2 <= self.g.out_w {
            self.tile::<BLOCKS, 2>(x, out);
            x += 2;
        }
        if x < self.g.out_w {
            self.tile::<BLOCKS, 1>(x, out);
        }
    }

    /// Output columns x..x+COLS of `BLOCKS` (1 or 2) channel blocks: the
    /// accumulators stay in registers over all input channels and taps.
    #[inline(always)]
    fn tile<const BLOCKS: usize, const COLS: usize>(&self, x: usize, out: &mut [f32]) {
        let (simd, g) = (self.simd, self.g);
        let block_len = g.in_ch * K * K;
        let last = self.block + BLOCKS - 1;
        let (w0, w1) = (
            &self.packed[self.block * block_len..][..block_len],
            &self.packed[last * block_len..][..block_len],
        );
        let mut acc0 = [self.bias[self.block]; COLS];
        let mut acc1 = [self.bias[last]; COLS];
        let span = (COLS - 1) * g.stride + K;
        let plane_len = g.padded_h * g.padded_w;
        for c in 0..g.in_ch {
            let plane = &self.input[c * plane_len..][..plane_len];
            let (taps0, taps1) = (&w0[c * K * K..][..K * K], &w1[c * K * K..][..K * K]);
            for ky in 0..K {
                let row = &plane[(self.y * g.stride + ky) * g.padded_w + x * g.stride..][..span];
                for kx in 0..K {
                    let (a, b) = (taps0[ky * K + kx], taps1[ky * K + kx]);
                    for t in 0..COLS {
                        let v = simd.splat_f32s(row[t * g.stride + kx]);
                        acc0[t] = simd.mul_add_e_f32s(a, v, acc0[t]);
                        if BLOCKS == 2 {
                            acc1[t] = simd.mul_add_e_f32s(b, v, acc1[t]);
                        }
                    }
                }
            }
        }
        let plane = g.out_h * g.out_w;
        for (i, acc) in [acc0, acc1].iter().take(BLOCKS).enumerate() {
            for (t, v) in acc.iter().enumerate() {
                let lanes: &[f32] = bytemuck::cast_slice(std::slice::from_ref(v));
                let first = (self.block + i) * S::F32_LANES;
                for (lane, &value) in lanes
                    .iter()
                    .enumerate()
                    .take(g.out_ch.saturating_sub(first))
                {
                    out[(first + lane) * plane + self.y * g.out_w + x + t] = value;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
