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
