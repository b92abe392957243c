//! Attention for small head sizes, computed in Rust on the CPU.
//!
//! Why: libtorch's CPU flash-attention kernel
//! (`_scaled_dot_product_flash_attention_for_cpu`) runs two GEMMs per block
//! of queries and keys and a vectorised `exp` per score. With heads of 4 or 8
//! components the GEMMs are nearly empty calls and the `exp` (~1.1 ns per
//! score on the development machine) is most of the time. The tiny test
//! models and the embedded demo have such heads; real SD models (40 to 160
//! components) do not, and keep libtorch's kernel.
//!
//! How: eight (or the CPU's vector width of) queries at a time, one per
//! vector lane, walk all the keys: the scores, the running maximum, the
//! softmax weights and the weighted sum of values are lane-wise vector
//! operations with no horizontal reductions, and `exp` is a polynomial of
//! ~1e-7 relative error (`exp_lanes`). The exact softmax is kept: a first
//! pass over the keys finds each query's maximum score, a second subtracts it
//! before `exp` (the same stabilisation as `torch.softmax`). Vectorisation is
//! `pulp`'s safe runtime dispatch (AVX2+FMA where the CPU has it, scalar
//! otherwise), so this module has no `unsafe`.
//!
//! When: CPU float32 tensors that need no gradient, no causal mask, head and
//! value sizes of at most [`MAX_HEAD_DIM`], and fewer scores than
//! [`crate::op_threads::ATTENTION_SERIAL_BELOW_SCORES`] (the range that runs
//! on one thread anyway). Measured per call against libtorch's kernel on one
//! thread, the tensor copies included (BENCHMARKS.md, "Small-head attention
//! and small convolutions"): 0.42-0.60x its time at 4 components, 0.71-0.74x
//! at 8, 2x and more at 16 and 32.
use diffgraph_sdk::OwnedFloats;
use pulp::{Arch, Simd, WithSimd};
use tch::Tensor;

use super::scratch::Scratch;
use super::{plain_cpu_float, Switch};
use crate::op_threads::ATTENTION_SERIAL_BELOW_SCORES;

/// Largest head (and value) size this kernel takes: from 16 components on,
/// libtorch's GEMM-based kernel is faster (BENCHMARKS.md).
pub const MAX_HEAD_DIM: i64 = 8;

/// On unless a benchmark turns it off ([`super::Switch`]).
pub static ENABLED: Switch = Switch::on();

/// Sizes of one attention call, heads flattened with the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub heads: usize,
    pub queries: usize,
    pub keys: usize,
    pub head_dim: usize,
    pub value_dim: usize,
}

/// `softmax(q kᵀ · scale) v` for `q` [..., queries, d], `k` [..., keys, d],
/// `v` [..., keys, dv] when the call is one this kernel takes (module
/// docs); `None` otherwise, and the caller uses libtorch's kernel.
pub fn try_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    is_causal: bool,
    scale: Option<f64>,
) -> Option<Result<Tensor, tch::TchError>> {
    let shape = eligible(q, k, v, is_causal)?;
    let scale = scale.unwrap_or(1.0 / (shape.head_dim as f64).sqrt()) as f32;
    Some(run(q, k, v, shape, scale))
}

/// The shape of a call this kernel takes, or `None`.
fn eligible(q: &Tensor, k: &Tensor, v: &Tensor, is_causal: bool) -> Option<Shape> {
    if is_causal || !ENABLED.is_on() || [q, k, v].iter().any(|t| !plain_cpu_float(t)) {
        return None;
    }
    let (qs, ks, vs) = (q.size(), k.size(), v.size());
    let rank = qs.len();
    if rank < 2 || ks.len() != rank || vs.len() != rank {
        return None;
    }
    let lead = &qs[..rank - 2];
    if ks[..rank - 2] != *lead || vs[..rank - 2] != *lead || vs[rank - 2] != ks[rank - 2] {
        return None;
    }
    let (queries, keys, head_dim, value_dim) =
        (qs[rank - 2], ks[rank - 2], qs[rank - 1], vs[rank - 1]);
    if ks[rank - 1] != head_dim || head_dim > MAX_HEAD_DIM || value_dim > MAX_HEAD_DIM {
        return None;
    }
    let heads: i64 = lead.iter().product();
    if [heads, queries, keys, head_dim, value_dim].contains(&0)
        || heads * queries * keys >= ATTENTION_SERIAL_BELOW_SCORES
    {
        return None;
    }
    Some(Shape {
        heads: heads as usize,
        queries: queries as usize,
        keys: keys as usize,
        head_dim: head_dim as usize,
        value_dim: value_dim as usize,
    })
}

fn run(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    shape: Shape,
    scale: f32,
) -> Result<Tensor, tch::TchError> {
    let mut size = q.size();
    *size.last_mut().expect("rank checked") = shape.value_dim as i64;
    let mut out = OwnedFloats::zeros(&size)?;
    attend_into(
        &Scratch::read(q)?,
        &Scratch::read(k)?,
        &Scratch::read(v)?,
        shape,
        scale,
        out.as_mut_slice(),
    );
    Ok(out.into_tensor())
}

/// The kernel on row-major slices: `q` [heads, queries, head_dim], `k`
/// [heads, keys, head_dim], `v` [heads, keys, value_dim]; returns [heads,
/// queries, value_dim].
pub fn attend(q: &[f32], k: &[f32], v: &[f32], shape: Shape, scale: f32) -> Vec<f32> {
    let mut out = vec![0f32; shape.heads * shape.queries * shape.value_dim];
    attend_into(q, k, v, shape, scale, &mut out);
    out
}

/// [`attend`] into `out` (every element is written).
pub fn attend_into(q: &[f32], k: &[f32], v: &[f32], shape: Shape, scale: f32, out: &mut [f32]) {
    let Shape {
        heads,
        queries,
        keys,
        head_dim,
        value_dim,
    } = shape;
    assert_eq!(
        q.len(),
        heads * queries * head_dim,
        "q does not match {shape:?}"
    );
    assert_eq!(
        k.len(),
        heads * keys * head_dim,
        "k does not match {shape:?}"
    );
    assert_eq!(
        v.len(),
        heads * keys * value_dim,
        "v does not match {shape:?}"
    );
    assert_eq!(
        out.len(),
        heads * queries * value_dim,
        "out does not match {shape:?}"
    );
    Arch::new().dispatch(Attend {
        q,
        k,
        v,
        shape,
        scale,
        out,
    });
}

struct Attend<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    shape: Shape,
    scale: f32,
    out: &'a mut [f32],
}

impl WithSimd for Attend<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Shape {
            heads,
            queries,
            keys,
            head_dim: d,
            value_dim: dv,
        } = self.shape;
        let lanes = S::F32_LANES;
        let blocks = queries.div_ceil(lanes);
        // One head's queries, scaled and transposed to [component][block]:
        // lane i of block b is query b * lanes + i (0 past the last query).
        let mut qt_floats = Scratch::zeroed(d * blocks * lanes);
        let mut lane_q = vec![simd.splat_f32s(0.0); d];
        let mut acc = vec![simd.splat_f32s(0.0); dv];
        let mut block_out = vec![0f32; lanes * dv];
        for h in 0..heads {
            let qh = &self.q[h * queries * d..][..queries * d];
            let kh = &self.k[h * keys * d..][..keys * d];
            let vh = &self.v[h * keys * dv..][..keys * dv];
            let oh = &mut self.out[h * queries * dv..][..queries * dv];
            let flat: &mut [f32] = &mut qt_floats;
            for (i, row) in qh.chunks_exact(d).enumerate() {
                for (c, &x) in row.iter().enumerate() {
                    flat[c * blocks * lanes + i] = x * self.scale;
                }
            }
            let qt: &[S::f32s] = bytemuck::cast_slice(&qt_floats);
            for b in 0..blocks {
                for (c, lane) in lane_q.iter_mut().enumerate() {
                    *lane = qt[c * blocks + b];
                }
                attend_block(simd, &lane_q, kh, vh, &mut acc, &mut block_out);
                let first = b * lanes;
                let n = lanes.min(queries - first);
                oh[first * dv..][..n * dv].copy_from_slice(&block_out[..n * dv]);
            }
        }
    }
}

/// One block of queries (`lane_q[c]`: component c of each lane's query)
/// against all keys; writes the block's rows [lane][value_dim] to `out`
/// (`acc`: value_dim vectors of scratch).
#[inline(always)]
fn attend_block<S: Simd>(
    simd: S,
    lane_q: &[S::f32s],
    k: &[f32],
    v: &[f32],
    acc: &mut [S::f32s],
    out: &mut [f32],
) {
    let (d, dv) = (lane_q.len(), acc.len());
    // Pass 1: each query's largest score. Pass 2 recomputes the scores (d
    // multiply-adds each, cheaper than storing them at these head sizes).
    let mut max = simd.splat_f32s(f32::NEG_INFINITY);
    for key in k.chunks_exact(d) {
        max = simd.max_f32s(max, score(simd, lane_q, key));
    }
    let mut total = simd.splat_f32s(0.0);
    acc.fill(simd.splat_f32s(0.0));
    for (key, value) in k.chunks_exact(d).zip(v.chunks_exact(dv)) {
        let p = exp_lanes(simd, simd.sub_f32s(score(simd, lane_q, key), max));
        total = simd.add_f32s(total, p);
        for (a, &vc) in acc.iter_mut().zip(value) {
            *a = simd.mul_add_e_f32s(p, simd.splat_f32s(vc), *a);
        }
    }
    let inv = simd.div_f32s(simd.splat_f32s(1.0), total);
    for (c, a) in acc.iter().enumerate() {
        let row = simd.mul_f32s(*a, inv);
        let lanes: &[f32] = bytemuck::cast_slice(std::slice::from_ref(&row));
        for (i, &x) in lanes.iter().enumerate() {
            out[i * dv + c] = x;
        }
    }
}

/// Each lane's query dotted with one key.
#[inline(always)]
fn score<S: Simd>(simd: S, lane_q: &[S::f32s], key: &[f32]) -> S::f32s {
    let mut x = simd.splat_f32s(0.0);
    for (&qc, &kc) in lane_q.iter().zip(key) {
        x = simd.mul_add_e_f32s(qc, simd.splat_f32s(kc), x);
    }
    x
}

/// 1.5 * 2^23: adding it rounds a float below 2^22 in magnitude to an
/// integer, which then sits in the low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;

/// e^x per lane for x <= 88 (inputs below -87 give e^-87 ≈ 1.6e-38, not
/// smaller), relative error under 1e-7. The classic range reduction and
/// minimax polynomial of Cephes' `expf` (Moshier, cephes/single/expf.c):
/// x = n ln2 + r with |r| <= ln2/2, ln2 split in two parts so that n·ln2
/// is exact, e^r by a degree-7 polynomial, 2^n built in the exponent bits.
#[inline(always)]
fn exp_lanes<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let x = simd.max_f32s(x, simd.splat_f32s(-87.0));
    let shifted = simd.mul_add_e_f32s(
        x,
        simd.splat_f32s(std::f32::consts::LOG2_E),
        simd.splat_f32s(ROUNDER),
    );
    let n = simd.sub_f32s(shifted, simd.splat_f32s(ROUNDER));
    let r = simd.mul_add_e_f32s(n, simd.splat_f32s(-0.693_359_4), x);
    let r = simd.mul_add_e_f32s(n, simd.splat_f32s(2.121_944_4e-4), r);
    let mut p = simd.splat_f32s(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_66,
        0.5,
    ] {
        p = simd.mul_add_e_f32s(p, r, simd.splat_f32s(c));
    }
    let e_r = simd.add_f32s(
        simd.mul_add_e_f32s(simd.mul_f32s(p, r), r, r),
        simd.splat_f32s(1.0),
    );
    // 2^n: the biased exponent n + 127 in bits 23..31 (n >= -126 here).
    let n_bits = simd.sub_u32s(
        simd.transmute_u32s_f32s(shifted),
        simd.splat_u32s(ROUNDER.to_bits()),
    );
    let biased = simd.add_u32s(n_bits, simd.splat_u32s(127));
    let two_n = simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(biased, simd.splat_u32s(23)));
    simd.mul_f32s(e_r, two_n)
}

#[cfg(test)]
mod tests;
