//! Scheduler overhead per step, excluding the model: `ScaleModelInput` +
//! `SchedulerStep` as the nodes run them (`SchedulerState`), on a
//! [1, 4, 64, 64] float32 latent with a fixed model output, 20 steps, libtorch
//! with 2 threads. Ignored (a measurement, not a test); run side by side with
//! diffusers by scripts/fixtures/scheduler_benchmark.py, which parses the
//! `BENCH <sampler> <microseconds per step>` lines:
//!
//! ```sh
//! cargo test --release -p diffgraph-nodes-sampling --lib benchmark -- --ignored --nocapture
//! ```
use crate::config::{ConfigFile, Overrides};
use crate::noise::NoiseStream;
use crate::samplers::{self, SamplerInfo, SAMPLERS};
use crate::state::SchedulerState;
use diffgraph_sdk::prelude::*;
use std::time::Instant;

const STEPS: i64 = 20;
const RUNS: usize = 15;

/// Microseconds per step of one full run (median over `RUNS`).
fn per_step(info: &SamplerInfo, sample: &Tensor, model_output: &Tensor) -> f64 {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let sd = ConfigFile::stable_diffusion();
        let sampler = samplers::build(info, &sd, &Overrides::default(), STEPS, 0.0).unwrap();
        let mut state = SchedulerState::new(sampler, 0, NoiseStream::new(0, 0));
        let mut x = sample.shallow_clone();
        let start = Instant::now();
        for t in state.run_timesteps() {
            let t = Some(f64::from(t));
            let _input = state.scale_model_input(&x, t).unwrap();
            let (out, next) = state.step(model_output, t, &x).unwrap();
            x = out.prev_sample;
            state = next;
        }
        let steps = state.with_sampler(|s| s.timesteps().len());
        times.push(start.elapsed().as_secs_f64() * 1e6 / steps as f64);
    }
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn benchmark_scheduler_step_overhead() {
    tch::set_num_threads(2);
    let opts = (Kind::Float, Device::Cpu);
    let sample = Tensor::ones([1, 4, 64, 64], opts)
        .f_mul_scalar(0.5)
        .unwrap();
    let model_output = Tensor::ones([1, 4, 64, 64], opts)
        .f_mul_scalar(0.1)
        .unwrap();
    for info in SAMPLERS {
        per_step(info, &sample, &model_output); // warm-up
        println!(
            "BENCH {} {:.1}",
            info.name,
            per_step(info, &sample, &model_output)
        );
    }
}

/// The SDE samplers' noise (`brownian::BrownianNoise`, ComfyUI's
/// `BrownianTreeNoiseSampler`): microseconds per query over a 20-step
/// karras run of SD's sigmas on a [1, 4, 64, 64] float32 latent (median over
/// `RUNS` runs). scripts/fixtures/brownian_benchmark.py times ComfyUI's
/// sampler on the same queries.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn benchmark_brownian_noise_query() {
    use crate::brownian::BrownianNoise;
    use diffgraph_diffusion::comfy::scalar0::t0;
    use diffgraph_diffusion::comfy::{ksampler_sigmas, DiscreteSampling, ModelPrediction};
    tch::set_num_threads(2);
    let ms = DiscreteSampling::sd(ModelPrediction::Eps).unwrap();
    let sigmas = ksampler_sigmas(&ms, "karras", "dpmpp_2m_sde", STEPS as usize, 1.0).unwrap();
    let like = Tensor::zeros([1, 4, 64, 64], (Kind::Float, Device::Cpu));
    let mut times = Vec::new();
    for _ in 0..=RUNS {
        let noise = BrownianNoise::new(&sigmas, &like, 42).unwrap();
        let start = Instant::now();
        let queries = sigmas.windows(2).filter(|w| w[1] > 0.0).count();
        for w in sigmas.windows(2).filter(|w| w[1] > 0.0) {
            let _w = noise.noise(&t0(w[0]), &t0(w[1]), Device::Cpu).unwrap();
        }
        times.push(start.elapsed().as_secs_f64() * 1e6 / queries as f64);
    }
    times.remove(0); // warm-up
    times.sort_by(f64::total_cmp);
    println!("BENCH brownian {:.1}", times[RUNS / 2]);
}
