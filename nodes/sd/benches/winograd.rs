//! diffgraph's Winograd F(2x2, 3x3) convolution against the kernel
//! `diffgraph_nodes_sd::conv` chooses without it (oneDNN; the im2col + GEMM
//! form for large weights at 16x16 and below), per shape, in one process at
//! `BENCH_THREADS` threads (default 2): the 3x3 stride-1 convolutions of an
//! SD1.5 U-Net at 512x512 (64x64, 32x32 and 16x16 latents, batch 2), of the
//! SD VAE decoder (batch 1), and a few around the kernel's size limits.
//! Usage: `cargo bench -p diffgraph-nodes-sd --bench winograd`; prints one
//! line per shape: milliseconds per call (median of `BENCH_RUNS`, default 5,
//! alternating the two kernels after one warm-up call each) and the ratio.
use diffgraph_nodes_sd::cpu_kernels::winograd;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    tch::set_num_threads(env("BENCH_THREADS", 2) as i32);
    let runs = env("BENCH_RUNS", 5);
    let _guard = tch::no_grad_guard();
    let opts = (Kind::Float, Device::Cpu);
    println!(
        "3x3 stride 1 padding 1: batch, in -> out, size | GMACs | Winograd ms | without, ms | ratio"
    );
    for (n, c, o, hw) in [
        (2, 320, 320, 64),
        (2, 640, 320, 64),
        (2, 960, 320, 64),
        (2, 640, 640, 64),
        (2, 320, 640, 32),
        (2, 640, 640, 32),
        (2, 960, 640, 32),
        (2, 1280, 640, 32),
        (2, 1280, 1280, 32),
        (2, 640, 1280, 16),
        (2, 1280, 1280, 16),
        (2, 1920, 1280, 16),
        (2, 2560, 1280, 16),
        (2, 1280, 1280, 12),
        (1, 512, 512, 64),
        (1, 512, 512, 128),
        (1, 256, 256, 256),
        (1, 128, 128, 512),
        (2, 128, 128, 64),
        (2, 64, 64, 64),
        (2, 128, 256, 32),
    ] {
        tch::manual_seed(1);
        let x = Tensor::randn([n, c, hw, hw], opts);
        let w = Tensor::randn([o, c, 3, 3], opts) / ((c * 9) as f64).sqrt();
        let b = Tensor::randn([o], opts);
        let ours = || {
            winograd::try_conv2d(&x, &w, Some(&b), 1, 1)
                .expect("a shape the kernel takes")
                .unwrap()
        };
        let theirs = || {
            winograd::ENABLED.set(false);
            let out = diffgraph_nodes_sd::conv::conv2d(&x, &w, Some(&b), 1, 1);
            winograd::ENABLED.set(true);
            out
        };
        let time = |f: &dyn Fn() -> Tensor| {
            let t = Instant::now();
            let _ = std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        };
        let macs = (n * hw * hw * o * c * 9) as f64 / 1e9;
        if winograd::try_conv2d(&x, &w, Some(&b), 1, 1).is_none() {
            let t = median((0..runs).map(|_| time(&theirs)).collect());
            println!("{n}, {c} -> {o}, {hw}x{hw} | {macs:.2} | (not taken) | {t:.1} |");
            continue;
        }
        let err = (ours() - theirs()).abs().max().double_value(&[]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            a.push(time(&ours));
            b.push(time(&theirs));
        }
        let (a, b) = (median(a), median(b));
        println!(
            "{n}, {c} -> {o}, {hw}x{hw} | {macs:.2} | {a:.1} | {b:.1} | {:.2} (max abs diff {err:.1e})",
            a / b
        );
    }
}
