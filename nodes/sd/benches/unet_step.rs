//! diffgraph's side of `scripts/bench/sd.sh` (b): one guided U-Net step of an
//! SD1.5-size U-Net with random weights, batch 2 (uncond + cond) at 64x64,
//! plus the CFG mix, exactly what UNetStep + CFGMixer do per iteration.
//! Usage: `cargo bench -p diffgraph-nodes-sd --bench unet_step -- fp32|bf16`.
//! Prints one JSON object: median of 3 timed steps after one warm-up.
use diffgraph_nodes_sd::unet::{OneOrMany, UNet, UNetConfig};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    let dtype = std::env::args()
        .skip(1)
        .find(|a| a == "fp32" || a == "bf16")
        .unwrap_or_else(|| "fp32".into());
    let kind = if dtype == "bf16" {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    let threads: i32 = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    tch::set_num_threads(threads);
    let config = UNetConfig {
        cross_attention_dim: OneOrMany::One(768),
        ..UNetConfig::default()
    };
    let unet = UNet::random(&config, kind, Device::Cpu, 0).expect("SD1.5 config");
    tch::manual_seed(1);
    let sample = Tensor::randn([1, 4, 64, 64], (Kind::Float, Device::Cpu));
    let cond = Tensor::randn([1, 77, 768], (Kind::Float, Device::Cpu));
    let uncond = Tensor::randn([1, 77, 768], (Kind::Float, Device::Cpu));
    let mut times = Vec::new();
    for _ in 0..4 {
        let t = Instant::now();
        let x = Tensor::cat(&[&sample, &sample], 0);
        let ctx = Tensor::cat(&[&uncond, &cond], 0);
        let out = unet.forward(&x, 981.0, &ctx).to_kind(Kind::Float);
        let halves = out.chunk(2, 0);
        let _mixed = &halves[0] + (&halves[1] - &halves[0]) * 7.5;
        times.push(t.elapsed().as_secs_f64());
    }
    let mut timed = times[1..].to_vec();
    timed.sort_by(f64::total_cmp);
    println!(
        "{{\"step_s\": {:.4}, \"peak_rss_mib\": {:.0}}}",
        timed[timed.len() / 2],
        peak_rss_mib()
    );
}
