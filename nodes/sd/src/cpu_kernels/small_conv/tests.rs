use super::*;
use tch::{Device, Kind};

use crate::cpu_kernels::test_operands::{conv_operands as operands, opts};

#[test]
fn matches_libtorch_on_ragged_shapes() {
    tch::manual_seed(11);
    // Channel counts off the vector width, outputs 1 to 13 wide (every tile
    // tail), strides 1 to 3, paddings 0 to 2.
    for (n, c, o, h, w, stride, padding) in [
        (1, 1, 1, 3, 3, 1, 0),
        (2, 4, 32, 8, 12, 1, 1),
        (2, 32, 4, 8, 12, 1, 1),
        (1, 5, 17, 7, 9, 2, 1),
        (3, 3, 12, 5, 13, 1, 2),
        (1, 16, 24, 6, 6, 3, 0),
        (2, 64, 64, 4, 6, 1, 1),
        (1, 7, 9, 2, 2, 1, 1),
    ] {
        let (x, weight, bias) = operands(n, c, o, h, w);
        for b in [Some(&bias), None] {
            let ours = try_conv2d(&x, &weight, b, stride, padding)
                .expect("eligible")
                .unwrap();
            let theirs = x.conv2d(&weight, b, [stride; 2], [padding; 2], [1, 1], 1);
            assert_eq!(ours.size(), theirs.size());
            // Outputs up to ~5 in size, sums of up to 576 products in another
            // order than oneDNN's: float32 rounding is ~1e-6.
            let diff = (ours - theirs).abs().max().double_value(&[]);
            assert!(
                diff < 1e-5,
                "{:?}: max abs difference {diff:e}",
                (n, c, o, h, w, stride, padding)
            );
        }
    }
}

#[test]
fn reads_strided_inputs() {
    tch::manual_seed(12);
    let (x, weight, bias) = operands(2, 8, 16, 10, 6);
    let x = x.transpose(2, 3); // [2, 8, 6, 10], not contiguous
    let ours = try_conv2d(&x, &weight, Some(&bias), 1, 1)
        .expect("eligible")
        .unwrap();
    let theirs = x.conv2d(&weight, Some(&bias), [1, 1], [1, 1], [1, 1], 1);
    assert!((ours - theirs).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn leaves_other_calls_to_libtorch() {
    let x = Tensor::zeros([2, 32, 8, 12], opts());
    let w = Tensor::zeros([32, 32, 3, 3], opts());
    let pointwise = Tensor::zeros([32, 32, 1, 1], opts());
    assert!(try_conv2d(&x, &pointwise, None, 1, 0).is_none(), "1x1");
    let grad = Tensor::zeros([2, 32, 8, 12], opts()).set_requires_grad(true);
    assert!(
        try_conv2d(&grad, &w, None, 1, 1).is_none(),
        "needs a gradient"
    );
    let double = Tensor::zeros([2, 32, 8, 12], (Kind::Double, Device::Cpu));
    assert!(
        try_conv2d(&double, &w.to_kind(Kind::Double), None, 1, 1).is_none(),
        "float64"
    );
    let large = Tensor::zeros([2, 64, 16, 16], opts());
    let large_w = Tensor::zeros([64, 64, 3, 3], opts());
    assert!(
        try_conv2d(&large, &large_w, None, 1, 1).is_none(),
        "19M multiply-adds"
    );
    let heavy_w = Tensor::zeros([64, 128, 3, 3], opts());
    let deep = Tensor::zeros([2, 128, 4, 6], opts());
    assert!(
        try_conv2d(&deep, &heavy_w, None, 1, 1).is_none(),
        "73.7k weights"
    );
    let other_in = Tensor::zeros([2, 16, 8, 12], opts());
    assert!(
        try_conv2d(&other_in, &w, None, 1, 1).is_none(),
        "channel mismatch"
    );
    let wrong_bias = Tensor::zeros([31], opts());
    assert!(
        try_conv2d(&x, &w, Some(&wrong_bias), 1, 1).is_none(),
        "bias size"
    );
    let tiny = Tensor::zeros([1, 32, 1, 1], opts());
    assert!(
        try_conv2d(&tiny, &w, None, 1, 0).is_none(),
        "input smaller than the kernel"
    );
    assert!(try_conv2d(&x, &w, None, 0, 1).is_none(), "stride 0");
}

#[test]
fn the_scalar_path_agrees_with_the_vector_path() {
    // CPUs without AVX2+FMA run the same code one lane wide.
    tch::manual_seed(13);
    let shape = ConvShape {
        batch: 2,
        in_ch: 5,
        out_ch: 11,
        h: 7,
        w: 9,
        stride: 2,
        padding: 1,
    };
    let read = |t: &Tensor| Scratch::read(t).unwrap();
    let (x, weight, bias) = operands(2, 5, 11, 7, 9);
    let (x, weight, bias) = (read(&x), read(&weight), read(&bias));
    let vector = conv3x3(&x, &weight, Some(&bias), shape);
    let mut scalar = vec![0f32; shape.out_len()];
    let conv = Conv {
        x: &x,
        weight: &weight,
        bias: Some(&bias),
        shape,
        out: &mut scalar,
    };
    pulp::Simd::vectorize(pulp::Scalar::new(), conv);
    let diff = vector
        .iter()
        .zip(&scalar)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-5, "max abs difference {diff:e}");
}
