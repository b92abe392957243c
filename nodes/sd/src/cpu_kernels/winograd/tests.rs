use super::*;
use tch::Kind;

use crate::cpu_kernels::test_operands::conv_operands as operands;

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

/// Against libtorch's convolution: odd and even sizes (cut tiles), one to
/// four threads, chunks of one tile row up to the whole batch (chunks that
/// cross images), with and without bias. Outputs are of scale ~1, so the
/// bound is float32 rounding over fan-ins up to 2880.
#[test]
fn matches_libtorch_on_ragged_shapes_threads_and_chunks() {
    tch::manual_seed(21);
    for (n, c, o, h, w, threads, chunk_floats, bias) in [
        (1, 1, 1, 1, 1, 1, 1 << 22, true),
        (1, 3, 5, 2, 3, 2, 1 << 22, true),
        (2, 8, 16, 7, 9, 3, 1, true),
        (2, 16, 8, 10, 6, 2, 16 * 16 * 3 * 4, false),
        (3, 5, 7, 5, 13, 4, 16 * 5 * 7 * 2, true),
        (2, 320, 32, 12, 16, 2, 16 * 320 * 8 * 5, true),
        (1, 64, 96, 33, 31, 2, 1 << 22, true),
    ] {
        let (x, weight, b) = operands(n, c, o, h, w);
        let theirs = x.conv2d(&weight, bias.then_some(&b), [1, 1], [1, 1], [1, 1], 1);
        let s = ConvShape::new([n, c, h, w], o, 1, 1);
        let bias_floats = floats(&b);
        let u = transform_weights(&weight).unwrap();
        let bias = bias.then_some(bias_floats.as_slice());
        let ours = convolve(&floats(&x), &u, bias, s, threads, chunk_floats).unwrap();
        let theirs = floats(&theirs);
        let err = ours
            .as_slice()
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            err < 5e-5,
            "{s:?} threads {threads} chunk {chunk_floats}: {err}"
        );
    }
}

#[test]
fn the_tensor_entry_takes_large_same_convolutions_only() {
    tch::manual_seed(22);
    let (x, weight, bias) = operands(2, 256, 256, 32, 32);
    const { assert!(256 * 256 * 9 >= MIN_WEIGHT_ELEMENTS) };
    let ours = try_conv2d(&x, &weight, Some(&bias), 1, 1)
        .expect("taken")
        .unwrap();
    let theirs = x.conv2d(&weight, Some(&bias), [1, 1], [1, 1], [1, 1], 1);
    assert_eq!(ours.size(), theirs.size());
    let err = (&ours - &theirs).abs().max().double_value(&[]);
    assert!(err < 5e-5, "{err}");
    // Not taken: stride 2, padding 0, a small output, a small weight,
    // operands that need a gradient, another kind.
    assert!(try_conv2d(&x, &weight, Some(&bias), 2, 1).is_none());
    assert!(try_conv2d(&x, &weight, Some(&bias), 1, 0).is_none());
    let small_output = x.narrow(2, 0, 8).narrow(3, 0, 16);
    assert!(try_conv2d(&small_output, &weight, Some(&bias), 1, 1).is_none());
    let small = weight.narrow(0, 0, 128);
    assert!(try_conv2d(&x, &small, None, 1, 1).is_none());
    let grad = x.shallow_clone().set_requires_grad(true);
    assert!(try_conv2d(&grad, &weight, Some(&bias), 1, 1).is_none());
    let double = x.to_kind(Kind::Double);
    assert!(try_conv2d(&double, &weight.to_kind(Kind::Double), None, 1, 1).is_none());
}

#[test]
fn splits_cover_every_item_once() {
    assert_eq!(split_counts(10, 3), vec![3, 3, 4]);
    assert_eq!(split_counts(2, 4), vec![1, 1]);
    assert_eq!(split_counts(0, 2), vec![0]);
    assert_eq!(split_counts(5, 1), vec![5]);
}
