//! diffgraph's small-shape kernels against libtorch's, per shape, in one
//! process on one thread: `small_conv` vs oneDNN's convolution and
//! `small_attention` vs the flash-attention kernel. Shapes are the tiny SD
//! test model's (16x24 images: 8x12 and 4x6 latents), the demo's (16x16
//! latent) and a few around the size limits.
//! Usage: `cargo bench -p diffgraph-nodes-sd --bench small_kernels`; prints
//! one line per shape: microseconds per call (median of 7 runs of 100
//! calls, alternating the two kernels), and their ratio.
use diffgraph_nodes_sd::cpu_kernels::scratch::Scratch;
use diffgraph_nodes_sd::cpu_kernels::{small_attention, small_conv};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Median microseconds per call of `ours` and `theirs`, alternated.
fn time_pair(ours: &dyn Fn() -> Tensor, theirs: &dyn Fn() -> Tensor) -> (f64, f64) {
    let per_call = |f: &dyn Fn() -> Tensor| {
        let t = Instant::now();
        for _ in 0..100 {
            let _ = std::hint::black_box(f());
        }
        t.elapsed().as_secs_f64() * 1e4
    };
    for _ in 0..20 {
        let _ = (ours(), theirs());
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        a.push(per_call(ours));
        b.push(per_call(theirs));
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    (a[3], b[3])
}

fn main() {
    tch::set_num_threads(1);
    let _guard = tch::no_grad_guard();
    let opts = (Kind::Float, Device::Cpu);
    println!("convolution 3x3, batch 2: in -> out, input, stride | MMACs | small_conv us | oneDNN us | ratio");
    for (c, o, h, w, stride) in [
        (4, 32, 8, 12, 1),
        (32, 32, 8, 12, 1),
        (32, 32, 8, 12, 2),
        (32, 64, 4, 6, 1),
        (64, 64, 4, 6, 1),
        (128, 64, 4, 6, 1),
        (96, 64, 4, 6, 1),
        (64, 64, 8, 12, 1),
        (96, 32, 8, 12, 1),
        (64, 32, 8, 12, 1),
        (32, 4, 8, 12, 1),
        (4, 32, 16, 16, 1),
        (32, 32, 16, 16, 1),
        (64, 64, 16, 16, 2),
        (96, 64, 8, 12, 1),
        (128, 64, 8, 12, 1),
        (64, 128, 16, 16, 1),
        (128, 128, 2, 2, 1),
        (256, 128, 2, 2, 1),
        (128, 128, 4, 4, 1),
        (256, 128, 4, 4, 1),
        (128, 128, 8, 8, 1),
        (192, 64, 8, 8, 1),
    ] {
        let x = Tensor::randn([2, c, h, w], opts);
        let weight = Tensor::randn([o, c, 3, 3], opts);
        let bias = Tensor::randn([o], opts);
        let (oh, ow) = ((h + 2 - 3) / stride + 1, (w + 2 - 3) / stride + 1);
        let macs = 2 * oh * ow * o * c * 9;
        let ours = || {
            let shape = small_conv::ConvShape {
                batch: 2,
                in_ch: c as usize,
                out_ch: o as usize,
                h: h as usize,
                w: w as usize,
                stride: stride as usize,
                padding: 1,
            };
            // The path `small_conv::try_conv2d` takes, also past its size limit.
            let read = |t: &Tensor| Scratch::read(t).unwrap();
            let mut out = Scratch::zeroed(shape.out_len());
            let bias = read(&bias);
            small_conv::conv3x3_into(&read(&x), &read(&weight), Some(&bias), shape, &mut out);
            Tensor::from_slice(&out)
        };
        let theirs = || x.conv2d(&weight, Some(&bias), [stride; 2], [1, 1], [1, 1], 1);
        let (a, b) = time_pair(&ours, &theirs);
        println!(
            "{c} -> {o}, {h}x{w}, stride {stride} | {:.2} | {a:.1} | {b:.1} | {:.2}",
            macs as f64 / 1e6,
            a / b
        );
    }
    println!("attention: batch x heads, queries, keys, head size | small_attention us | flash us | ratio");
    for (heads, queries, keys, d) in [
        (16, 96, 96, 4),
        (16, 96, 77, 4),
        (16, 24, 24, 8),
        (16, 24, 77, 8),
        (8, 256, 77, 8),
        (16, 64, 64, 4),
        (8, 64, 64, 16),
        (8, 64, 64, 32),
    ] {
        // [batch 2, heads, tokens, d], as the U-Net calls it.
        let q = Tensor::randn([2, heads / 2, queries, d], opts);
        let k = Tensor::randn([2, heads / 2, keys, d], opts);
        let v = Tensor::randn([2, heads / 2, keys, d], opts);
        let shape = small_attention::Shape {
            heads: heads as usize,
            queries: queries as usize,
            keys: keys as usize,
            head_dim: d as usize,
            value_dim: d as usize,
        };
        // The path `small_attention::try_attention` takes, also past its limits.
        let ours = || {
            let read = |t: &Tensor| Scratch::read(t).unwrap();
            let mut out = Scratch::zeroed(q.numel());
            let scale = 1.0 / (d as f32).sqrt();
            small_attention::attend_into(&read(&q), &read(&k), &read(&v), shape, scale, &mut out);
            Tensor::from_slice(&out)
        };
        let theirs = || {
            Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                false,
                None,
                false,
            )
        };
        let (a, b) = time_pair(&ours, &theirs);
        println!(
            "{heads}, {queries}, {keys}, {d} | {a:.1} | {b:.1} | {:.2}",
            a / b
        );
    }
}
