//! Timing of one forward of an SD1.5-size U-Net with random weights
//! (block_out_channels (320, 640, 1280, 1280), cross_attention_dim 768,
//! 64x64 latent, batch 2 as in a guided step), on CPU with 2 threads.
//! Prints, asserts nothing; run with
//! `cargo test --release -p diffgraph-nodes-sd --test unet_bench -- --ignored --nocapture`.
use diffgraph_nodes_sd::unet::{OneOrMany, UNet, UNetConfig};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[test]
#[ignore = "benchmark: minutes on CPU, 3.4 GB of memory"]
fn sd15_unet_forward_time() {
    tch::set_num_threads(2);
    let config = UNetConfig {
        cross_attention_dim: OneOrMany::One(768),
        ..UNetConfig::default()
    };
    for kind in [Kind::Float, Kind::BFloat16] {
        let start = Instant::now();
        let unet = UNet::random(&config, kind, Device::Cpu, 0).unwrap();
        let build = start.elapsed().as_secs_f64();
        tch::manual_seed(1);
        let sample = Tensor::randn([2, 4, 64, 64], (Kind::Float, Device::Cpu));
        let context = Tensor::randn([2, 77, 768], (Kind::Float, Device::Cpu));
        let mut times = Vec::new();
        for _ in 0..2 {
            let start = Instant::now();
            let out = unet.forward(&sample, 981.0, &context);
            times.push(start.elapsed().as_secs_f64());
            assert!(out.isfinite().all().int64_value(&[]) == 1);
        }
        println!("SD1.5-size U-Net {kind:?}, batch 2, 64x64, 2 threads: random init {build:.1} s, forward {:.2} s then {:.2} s", times[0], times[1]);
    }
}

/// One guided step (batch 2) of an SDXL-size U-Net (scripts/bench/sdxl_unet_config.json:
/// the stable-diffusion-xl-base-1.0 U-Net) with random weights, 128x128
/// latent (1024x1024 pixels), in `BENCH_KIND` (fp32 or bf16), `BENCH_THREADS`
/// threads; prints one JSON line (seconds, peak RSS MiB). Run by
/// scripts/bench/sdxl_unet.sh, one process per dtype.
#[test]
#[ignore = "benchmark: minutes on CPU, 10 GB of memory in fp32"]
fn sdxl_unet_step() {
    use diffgraph_nodes_sd::unet::Added;
    let threads = std::env::var("BENCH_THREADS").map_or(2, |t| t.parse().unwrap());
    tch::set_num_threads(threads);
    let name = std::env::var("BENCH_KIND").unwrap_or_else(|_| "fp32".into());
    let kind = if name == "bf16" {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench/sdxl_unet_config.json"
    );
    let config = UNetConfig::from_file(std::path::Path::new(path)).unwrap();
    let start = Instant::now();
    let unet = UNet::random(&config, kind, Device::Cpu, 0).unwrap();
    let init = start.elapsed().as_secs_f64();
    tch::manual_seed(1);
    let f = (Kind::Float, Device::Cpu);
    let sample = Tensor::randn([2, 4, 128, 128], f);
    let context = Tensor::randn([2, 77, 2048], f);
    let pooled = Tensor::randn([2, 1280], f);
    let ids = Tensor::from_slice(&[1024f32, 1024., 0., 0., 1024., 1024.])
        .view([1, 6])
        .repeat([2, 1]);
    let added = Added {
        text_embeds: &pooled,
        time_ids: &ids,
    };
    let start = Instant::now();
    let out = unet
        .try_forward_added(&sample, 981.0, &context, Some(&added))
        .unwrap();
    let step = start.elapsed().as_secs_f64();
    assert!(out.isfinite().all().int64_value(&[]) == 1);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    println!(
        "{{\"side\": \"diffgraph\", \"kind\": \"{name}\", \"init_s\": {init}, \"step_s\": {step}, \"peak_rss_mib\": {}}}",
        hwm / 1024.0
    );
}
