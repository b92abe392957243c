//! The throughput half of latent diffusion's sampling-efficiency figure
//! (Rombach et al. 2022, Fig. 6/7: quality vs throughput for downsampling
//! factors f = 1 .. 32), measured for diffgraph's UNet2DModel on this
//! machine: one fixed-width U-Net (random weights) producing 64x64 images,
//! run on latents of 64/f for f = 1, 2, 4, 8, and the VQ decoder of each f
//! (f = 1: pixel space, no decoder). Samples/s is the batch over the time
//! of 50 steps plus one decoder call. Every configuration is timed in turn, round after
//! round, so that a busy machine slows all of them alike.
//! Usage: `cargo bench -p diffgraph-nodes-sd --bench ldm_factor` (env
//! BENCH_THREADS, default 2; ROUNDS, default 3). Prints one JSON line per f.
use diffgraph_nodes_sd::unet2d::{UNet2D, UNet2DConfig};
use diffgraph_nodes_sd::vae::{Vae, VaeConfig};
use diffgraph_nodes_sd::weights::Weights;
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const IMAGE: i64 = 64;
const BATCH: i64 = 4;
const STEPS: f64 = 50.0;

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The same U-Net for every f: widths (64, 128, 128, 256), attention in
/// the two lowest-resolution levels, 3 channels in and out.
fn unet() -> UNet2D {
    let config = UNet2DConfig::from_json(
        r#"{"block_out_channels": [64, 128, 128, 256], "layers_per_block": 2,
            "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
            "attention_head_dim": 32, "in_channels": 3, "out_channels": 3}"#,
    )
    .expect("benchmark config");
    UNet2D::random(&config, Kind::Float, Device::Cpu, 0).expect("benchmark U-Net")
}

/// A VQ autoencoder of downsampling factor f (log2 f + 1 blocks, as the
/// paper's VQ-f4/f8 first stages), weights all zero (timing only).
fn decoder(f: i64) -> Vae {
    let blocks = (f as f64).log2() as usize + 1;
    let widths: Vec<i64> = [128, 256, 512, 512][..blocks].to_vec();
    let config = VaeConfig::from_json(
        &serde_json::json!({
            "_class_name": "VQModel", "block_out_channels": widths, "layers_per_block": 2,
            "down_block_types": vec!["DownEncoderBlock2D"; blocks],
            "up_block_types": vec!["UpDecoderBlock2D"; blocks],
            "latent_channels": 3, "num_vq_embeddings": 8192
        })
        .to_string(),
    )
    .expect("benchmark VQ config");
    let mut w = Weights::new(BTreeMap::new(), Kind::Float, Device::Cpu, "zeros");
    Vae::load(&config, &mut w).expect("benchmark VQ model")
}

fn seconds(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn main() {
    tch::set_num_threads(env("BENCH_THREADS", 2) as i32);
    let rounds = env("ROUNDS", 3);
    let unet = unet();
    let factors = [1i64, 2, 4, 8];
    let decoders: Vec<Option<Vae>> = factors
        .iter()
        .map(|&f| (f > 1).then(|| decoder(f)))
        .collect();
    let mut step_s = vec![Vec::new(); factors.len()];
    let mut decode_s = vec![Vec::new(); factors.len()];
    tch::manual_seed(1);
    for round in 0..=rounds {
        for (i, &f) in factors.iter().enumerate() {
            let x = Tensor::randn([BATCH, 3, IMAGE / f, IMAGE / f], (Kind::Float, Device::Cpu));
            let s = seconds(|| {
                let _ = unet.forward(&x, 500.0, None).expect("U-Net step");
            });
            let d = match &decoders[i] {
                Some(vq) => seconds(|| {
                    let _ = vq.decode(&x).expect("decode");
                }),
                None => 0.0,
            };
            if round > 0 {
                step_s[i].push(s);
                decode_s[i].push(d);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (i, &f) in factors.iter().enumerate() {
        let (s, d) = (median(&mut step_s[i]), median(&mut decode_s[i]));
        let per_batch = STEPS * s + d;
        println!(
            "{{\"f\": {f}, \"latent\": {}, \"step_s\": {s:.4}, \"decode_s\": {d:.4}, \"samples_per_s\": {:.3}, \"batch\": {BATCH}, \"steps\": {STEPS}}}",
            IMAGE / f,
            BATCH as f64 / per_batch
        );
    }
}
