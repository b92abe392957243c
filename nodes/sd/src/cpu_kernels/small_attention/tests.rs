use super::*;
use tch::{Device, Kind};

/// softmax(q kᵀ · scale) v in float64, the plain formula.
fn reference(q: &[f32], k: &[f32], v: &[f32], s: Shape, scale: f32) -> Vec<f32> {
    let mut out = vec![0f32; s.heads * s.queries * s.value_dim];
    for h in 0..s.heads {
        for i in 0..s.queries {
            let qi = &q[(h * s.queries + i) * s.head_dim..][..s.head_dim];
            let scores: Vec<f64> = (0..s.keys)
                .map(|j| {
                    let kj = &k[(h * s.keys + j) * s.head_dim..][..s.head_dim];
                    qi.iter()
                        .zip(kj)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for c in 0..s.value_dim {
                let sum: f64 = (0..s.keys)
                    .map(|j| weights[j] * v[(h * s.keys + j) * s.value_dim + c] as f64)
                    .sum();
                out[(h * s.queries + i) * s.value_dim + c] = (sum / total) as f32;
            }
        }
    }
    out
}

/// Deterministic values in [-2, 2).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn exp_has_float_precision_over_its_range() {
    let scalar = pulp::Scalar::new();
    let mut worst = 0f64;
    for i in 0..=175_000 {
        let x = -87.0 + i as f32 * 0.001;
        let got = exp_lanes(scalar, x) as f64;
        let want = (x as f64).exp();
        worst = worst.max(((got - want) / want).abs());
    }
    assert!(worst < 2e-7, "worst relative error {worst:e}");
    assert_eq!(exp_lanes(scalar, 0.0), 1.0);
    // Below the range: clamped to e^-87, a weight of ~1.6e-38.
    assert!(exp_lanes(scalar, -1000.0) < 2e-38);
}

#[test]
fn matches_the_formula_on_ragged_shapes() {
    let mut seed = 1;
    for (heads, queries, keys, head_dim, value_dim) in [
        (1, 1, 1, 1, 1),
        (2, 7, 3, 4, 4),
        (3, 9, 77, 8, 8),
        (1, 17, 96, 4, 2),
        (2, 8, 5, 3, 7),
        (16, 24, 24, 8, 8),
    ] {
        let s = Shape {
            heads,
            queries,
            keys,
            head_dim,
            value_dim,
        };
        let q = values(heads * queries * head_dim, seed);
        let k = values(heads * keys * head_dim, seed + 1);
        let v = values(heads * keys * value_dim, seed + 2);
        seed += 3;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let diff = max_abs_diff(
            &attend(&q, &k, &v, s, scale),
            &reference(&q, &k, &v, s, scale),
        );
        assert!(diff < 1e-6, "{s:?}: max abs difference {diff:e}");
    }
}

#[test]
fn large_scores_stay_finite() {
    // Scores of several hundred: exp without the max subtracted overflows.
    let s = Shape {
        heads: 1,
        queries: 5,
        keys: 9,
        head_dim: 4,
        value_dim: 4,
    };
    let q: Vec<f32> = values(20, 7).iter().map(|x| x * 40.0).collect();
    let (k, v) = (values(36, 8), values(36, 9));
    let got = attend(&q, &k, &v, s, 0.5);
    assert!(got.iter().all(|x| x.is_finite()));
    assert!(max_abs_diff(&got, &reference(&q, &k, &v, s, 0.5)) < 1e-5);
}

#[test]
fn agrees_with_libtorch_and_keeps_the_shape() {
    tch::manual_seed(0);
    for (q_size, kv_keys, dv) in [
        (vec![2i64, 8, 96, 4], 96, 4),
        (vec![2, 8, 96, 4], 77, 4),
        (vec![2, 8, 24, 8], 77, 8),
        (vec![5, 11, 3], 13, 6),
    ] {
        let q_size = q_size.as_slice();
        let q = Tensor::randn(q_size, (Kind::Float, Device::Cpu));
        let mut k_size = q_size.to_vec();
        let n = k_size.len();
        k_size[n - 2] = kv_keys;
        let k = Tensor::randn(k_size.as_slice(), (Kind::Float, Device::Cpu));
        k_size[n - 1] = dv;
        let v = Tensor::randn(k_size.as_slice(), (Kind::Float, Device::Cpu));
        for scale in [None, Some(0.3)] {
            let ours = try_attention(&q, &k, &v, false, scale)
                .expect("eligible")
                .unwrap();
            let theirs = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                false,
                scale,
                false,
            );
            assert_eq!(ours.size(), theirs.size());
            let diff = (ours - theirs).abs().max().double_value(&[]);
            assert!(
                diff < 1e-6,
                "{q_size:?} keys {kv_keys}: max abs difference {diff:e}"
            );
        }
    }
}

#[test]
fn reads_strided_inputs() {
    // The U-Net hands over transposed views ([B, L, H, D] -> [B, H, L, D]).
    tch::manual_seed(1);
    let x = Tensor::randn([2, 96, 8, 4], (Kind::Float, Device::Cpu)).transpose(1, 2);
    let ours = try_attention(&x, &x, &x, false, None)
        .expect("eligible")
        .unwrap();
    let theirs =
        Tensor::scaled_dot_product_attention(&x, &x, &x, None::<Tensor>, 0.0, false, None, false);
    // q = k: large scores on the diagonal, outputs up to ~3 in size.
    let diff = (ours - theirs).abs().max().double_value(&[]);
    assert!(diff < 5e-6, "max abs difference {diff:e}");
}

#[test]
fn leaves_other_calls_to_libtorch() {
    let opts = (Kind::Float, Device::Cpu);
    let small = Tensor::zeros([2, 8, 96, 4], opts);
    assert!(
        try_attention(&small, &small, &small, true, None).is_none(),
        "causal"
    );
    let wide = Tensor::zeros([2, 8, 96, 16], opts);
    assert!(
        try_attention(&wide, &wide, &wide, false, None).is_none(),
        "head size 16"
    );
    let double = Tensor::zeros([2, 8, 96, 4], (Kind::Double, Device::Cpu));
    assert!(
        try_attention(&double, &double, &double, false, None).is_none(),
        "float64"
    );
    let grad = Tensor::zeros([2, 8, 96, 4], opts).set_requires_grad(true);
    assert!(
        try_attention(&grad, &small, &small, false, None).is_none(),
        "needs a gradient"
    );
    let many = Tensor::zeros([2, 8, 256, 4], opts);
    assert!(
        try_attention(&many, &many, &many, false, None).is_none(),
        "2^20 scores"
    );
    let broadcast = Tensor::zeros([1, 8, 96, 4], opts);
    assert!(
        try_attention(&small, &broadcast, &broadcast, false, None).is_none(),
        "broadcast batch"
    );
    let empty = Tensor::zeros([2, 8, 0, 4], opts);
    assert!(
        try_attention(&empty, &small, &small, false, None).is_none(),
        "no queries"
    );
}

#[test]
fn the_scalar_path_agrees_with_the_formula() {
    // CPUs without AVX2+FMA run the same code one lane wide.
    let s = Shape {
        heads: 3,
        queries: 10,
        keys: 13,
        head_dim: 5,
        value_dim: 3,
    };
    let (q, k, v) = (values(150, 21), values(195, 22), values(117, 23));
    let mut out = vec![0f32; 90];
    let attend = Attend {
        q: &q,
        k: &k,
        v: &v,
        shape: s,
        scale: 0.45,
        out: &mut out,
    };
    pulp::Simd::vectorize(pulp::Scalar::new(), attend);
    let diff = max_abs_diff(&out, &reference(&q, &k, &v, s, 0.45));
    assert!(diff < 1e-6, "max abs difference {diff:e}");
}
