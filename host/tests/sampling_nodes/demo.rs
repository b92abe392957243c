//! Sampling loops with the exact denoiser (they must land on one of the
//! procedural images) and graphs/exact_denoiser.json.
use super::*;

/// Deterministic standard normal noise (xorshift + Box-Muller), independent
/// of libtorch's global generator, which parallel tests reseed.
fn gaussian(shape: &[i64], seed: u64) -> Tensor {
    let n: i64 = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let values: Vec<f32> = (0..n)
        .map(|_| {
            ((-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos()) as f32
        })
        .collect();
    Tensor::from_slice(&values).view(shape)
}

/// The demo's sampling loop; `sched_inputs` configures the scheduler.
fn sampling_loop(sched_inputs: &str, noise: &str) -> String {
    format!(
        r#"{{"nodes": {{
        "sched": {{"type": "DDIMScheduler", "inputs": {{{sched_inputs}}}}},
        "images": {{"type": "ProceduralImages", "inputs": {{"width": 32, "height": 32}}}},
        "loop": {{"type": "Loop",
            "inputs": {{"over": ["sched", "timesteps"], "latent": {noise}}},
            "body": {{
                "denoise": {{"type": "ExactDenoiser", "inputs": {{"sample": ["loop", "latent"], "timestep": ["loop", "item"],
                    "alphas_cumprod": ["sched", "alphas_cumprod"], "images": ["images", "images"]}}}},
                "step": {{"type": "SchedulerStep", "inputs": {{"state": ["sched", "state"],
                    "model_output": ["denoise", "model_output"], "timestep": ["loop", "item"], "sample": ["loop", "latent"]}}}}
            }},
            "next": {{"latent": ["step", "prev_sample"]}}}}}}}}"#
    )
}

/// For each batch element: the index of the nearest procedural image and the max abs distance to it.
fn nearest_images(latent: &Tensor, images: &Tensor) -> Vec<(usize, f64)> {
    let k = images.size()[0];
    (0..latent.size()[0])
        .map(|b| {
            let x = latent.get(b);
            (0..k)
                .map(|i| {
                    (
                        i as usize,
                        (&x - images.get(i)).abs().max().double_value(&[]),
                    )
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap()
        })
        .collect()
}

fn sample_with(sched_inputs: &str, noise: Tensor) -> (Tensor, Tensor) {
    let text = sampling_loop(sched_inputs, r#"["images", "images"]"#);
    let outcome = run_with(
        &[SAMPLING],
        &text,
        vec![("loop", "latent", noise)],
        Some(&["loop", "images"]),
    );
    (
        tensor(&outcome, "loop", "latent"),
        tensor(&outcome, "images", "images"),
    )
}

#[test]
fn ddim_loop_with_exact_denoiser_lands_on_a_procedural_image() {
    let _rng = rng_lock();
    let noise = gaussian(&[4, 3, 32, 32], 2024);
    let (latent, images) = sample_with(r#""steps": 20, "set_alpha_to_one": true"#, noise.copy());
    assert_eq!(latent.size(), vec![4, 3, 32, 32]);
    let nearest = nearest_images(&latent, &images);
    eprintln!("DDIM 20 steps, set_alpha_to_one: nearest images {nearest:?}");
    for (b, (k, err)) in nearest.iter().enumerate() {
        assert!(
            *err <= 1e-2,
            "batch element {b} ends {err} (max abs) from its nearest image {k}"
        );
    }
    // The start really is noise, far from every image.
    assert!(nearest_images(&noise, &images)
        .iter()
        .all(|(_, d)| *d > 2.0));

    // SD's default config ends at alphas_cumprod[0] instead of 1: the final
    // sample is sqrt(a0)·x_k plus sqrt(1 - a0) (~0.029) times the noise direction.
    let (latent, images) = sample_with(r#""steps": 20"#, noise.copy());
    let a0 = f64::from(
        to_vec(&tensor(
            &run_with(
                &[SAMPLING],
                &super::ddim::scheduler_graph("", ""),
                vec![],
                Some(&["sched"]),
            ),
            "sched",
            "alphas_cumprod",
        ))[0],
    );
    for (b, (k, _)) in nearest_images(&latent, &images).into_iter().enumerate() {
        let residual =
            (latent.get(b as i64) - images.get(k as i64) * a0.sqrt()) / (1.0 - a0).sqrt();
        let std = residual.std(true).double_value(&[]);
        assert!(
            (0.5..1.5).contains(&std),
            "element {b}: the residual should be unit-scale noise, std {std}"
        );
    }

    // Stochastic DDIM (eta = 1) lands on images too.
    let (latent, images) = sample_with(
        r#""steps": 50, "eta": 1.0, "seed": 5, "set_alpha_to_one": true"#,
        noise,
    );
    for (b, (k, err)) in nearest_images(&latent, &images).into_iter().enumerate() {
        assert!(
            err <= 1e-2,
            "eta=1: batch element {b} ends {err} from image {k}"
        );
    }
}

/// graphs/exact_denoiser.json end to end (with the core plugin for
/// GaussianNoise, LatentToImage and SaveImage).
#[test]
fn demo_graph_samples_one_of_the_images() {
    let _rng = rng_lock();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../graphs/exact_denoiser.json"
    ))
    .expect("demo graph");
    let mut exec = Executor::new(common::registry_with(&[SAMPLING, "diffgraph_nodes_core"]));
    let out = tempfile::tempdir().expect("temp dir");
    exec.set_output_dir(out.path().to_str().unwrap());
    let checked =
        diffgraph::parse_graph(&text, &[], &exec.registry, true).unwrap_or_else(|e| panic!("{e}"));
    let outcome = exec
        .run(&checked, Some(&["sampling", "images", "save"]), &Silent)
        .unwrap_or_else(|e| panic!("{e}"));
    let latent = tensor(&outcome, "sampling", "latent");
    assert_eq!(latent.size(), vec![1, 3, 64, 64]);
    let nearest = nearest_images(&latent, &tensor(&outcome, "images", "images"));
    assert!(
        nearest[0].1 <= 1e-2,
        "the demo ends {} from its nearest image",
        nearest[0].1
    );
    let png = out.path().join("exact_denoiser.png");
    assert!(
        std::fs::metadata(&png)
            .map(|m| m.len() > 100)
            .unwrap_or(false),
        "{} was not written",
        png.display()
    );
}

/// A Scheduler loop carrying the state, with ScaleModelInput and the exact
/// denoiser at the level SchedulerAlphaBar reports (which also holds for
/// fractional Karras timesteps and the Euler family's scaled input).
fn carried_loop(sched_inputs: &str) -> String {
    format!(
        r#"{{"nodes": {{
        "sched": {{"type": "Scheduler", "inputs": {{{sched_inputs}}}}},
        "images": {{"type": "ProceduralImages", "inputs": {{"width": 32, "height": 32}}}},
        "loop": {{"type": "Loop",
            "inputs": {{"over": ["sched", "timesteps"], "latent": ["images", "images"], "state": ["sched", "state"]}},
            "body": {{
                "scale": {{"type": "ScaleModelInput", "inputs": {{"state": ["loop", "state"], "sample": ["loop", "latent"],
                    "timestep": ["loop", "item"]}}}},
                "level": {{"type": "SchedulerAlphaBar", "inputs": {{"state": ["loop", "state"], "timestep": ["loop", "item"]}}}},
                "denoise": {{"type": "ExactDenoiser", "inputs": {{"sample": ["scale", "sample"],
                    "alpha_bar": ["level", "alpha_bar"], "images": ["images", "images"]}}}},
                "step": {{"type": "SchedulerStep", "inputs": {{"state": ["loop", "state"],
                    "model_output": ["denoise", "model_output"], "timestep": ["loop", "item"], "sample": ["loop", "latent"]}}}}
            }},
            "next": {{"latent": ["step", "prev_sample"], "state": ["step", "state"]}}}},
        "sigma": {{"type": "SchedulerAlphaBar", "inputs": {{"state": ["sched", "state"]}}}}}}}}"#
    )
}

#[test]
fn every_sampler_lands_on_a_procedural_image_with_a_carried_state() {
    let _rng = rng_lock();
    let noise = gaussian(&[2, 3, 32, 32], 99);
    for sampler in [
        "ddim",
        "ddpm",
        "pndm",
        "lms",
        "euler",
        "euler_ancestral",
        "heun",
        "dpmpp_2m",
    ] {
        for schedule in ["normal", "karras"] {
            if schedule == "karras" && !["lms", "euler", "heun", "dpmpp_2m"].contains(&sampler) {
                continue;
            }
            let inputs = format!(
                r#""sampler": "{sampler}", "schedule": "{schedule}", "steps": 30, "timestep_spacing": "trailing", "seed": 3"#
            );
            let text = carried_loop(&inputs);
            let init = run_with(&[SAMPLING], &text, vec![], Some(&["sched"]));
            let sigma = float(&init, "sched", "init_noise_sigma");
            let outcome = run_with(
                &[SAMPLING],
                &text,
                vec![("loop", "latent", &noise * sigma)],
                Some(&["loop", "images"]),
            );
            let (latent, images) = (
                tensor(&outcome, "loop", "latent"),
                tensor(&outcome, "images", "images"),
            );
            for (b, (k, err)) in nearest_images(&latent, &images).into_iter().enumerate() {
                // The last step ends at alphas_cumprod[0] or sigma 0: within ~0.03·noise of the image.
                assert!(
                    err <= 0.15,
                    "{sampler} {schedule}: element {b} ends {err} from image {k}"
                );
            }
        }
    }
}

#[test]
fn a_multistep_sampler_needs_the_carried_state() {
    let text = r#"{"nodes": {
        "sched": {"type": "Scheduler", "inputs": {"sampler": "dpmpp_2m", "steps": 5}},
        "images": {"type": "ProceduralImages", "inputs": {"width": 8, "height": 8}},
        "loop": {"type": "Loop", "inputs": {"over": ["sched", "timesteps"], "latent": ["images", "images"]},
            "body": {
                "step": {"type": "SchedulerStep", "inputs": {"state": ["sched", "state"],
                    "model_output": ["loop", "latent"], "timestep": ["loop", "item"], "sample": ["loop", "latent"]}}
            },
            "next": {"latent": ["step", "prev_sample"]}}}}"#;
    let mut exec = Executor::new(common::registry_with(&[SAMPLING]));
    let checked = diffgraph::parse_graph(text, &[], &exec.registry, false).unwrap();
    let Err(err) = exec.run(&checked, Some(&["loop"]), &Silent) else {
        panic!("must fail")
    };
    let err = err.to_string();
    assert!(
        err.contains("multistep") && err.contains("Carry the scheduler state"),
        "{err}"
    );
}
