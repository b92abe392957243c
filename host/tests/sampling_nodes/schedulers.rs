//! The Scheduler node for every sampler, through graphs, against diffusers
//! (tests/fixtures/schedulers_reference*.json): its outputs, 10-step
//! trajectories in a Loop that carries the scheduler state (ScaleModelInput,
//! SyntheticModel, SchedulerStep), img2img with AddNoise, seeded noise
//! continuing after GaussianNoise, config files and names.
use super::*;

/// The tests/fixtures/schedulers_reference*.json made under this machine's
/// libtorch math: libtorch's float32 sqrt, log and exp are MKL's vector
/// math, which rounds differently per CPU vendor and instruction set (see
/// scripts/fixtures/scheduler_reference.py). Each fixture records SD's
/// training sigmas as its torch computed them; the one equal bit for bit
/// to libtorch's here is the reference.
fn reference() -> Json {
    let dir = format!("{}/../tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let here = to_vec(&libtorch_training_sigmas());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/fixtures")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("schedulers_reference") && n.ends_with(".json"))
        .collect();
    names.sort();
    let mut tried = Vec::new();
    for name in names {
        let f = fixture(&name);
        let want = json_floats(&f["training_sigmas"]);
        let differ = (want.len() != here.len()) as usize
            + here
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
        if differ == 0 {
            eprintln!("scheduler reference: tests/fixtures/{name}");
            return f;
        }
        tried.push(format!("{name}: {differ} differ"));
    }
    panic!(
        "no scheduler fixture was made under this machine's libtorch math (SD training \
         sigmas: {}); make one with scripts/fixtures/scheduler_reference.py NAME",
        tried.join(", ")
    )
}

/// diffusers' SD training sigmas in its torch ops: betas =
/// `linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2`, `alphas_cumprod =
/// cumprod(1 - betas)`, `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`.
fn libtorch_training_sigmas() -> Tensor {
    let options = (DType::Float, Device::Cpu);
    let betas =
        Tensor::linspace(0.00085f64.sqrt(), 0.012f64.sqrt(), 1000, options).pow_tensor_scalar(2);
    let alphas_cumprod = (betas.ones_like() - &betas).cumprod(0, DType::Float);
    ((alphas_cumprod.ones_like() - &alphas_cumprod) / &alphas_cumprod).sqrt()
}

fn shaped(f: &Json, key: &str) -> Tensor {
    let shape = json_ints(&f["shape"]);
    Tensor::from_slice(&json_floats(&f[key])).view(shape.as_slice())
}

/// The Scheduler node's inputs for a fixture case (the node's defaults are
/// SD's config, as the fixture's).
fn scheduler_inputs(case: &Json) -> String {
    let mut inputs = format!(
        r#""sampler": {}, "steps": {}"#,
        case["sampler"], case["steps"]
    );
    if let Some(s) = case.get("spacing") {
        inputs += &format!(r#", "timestep_spacing": {s}"#);
    }
    if let Some(p) = case.get("prediction_type") {
        inputs += &format!(r#", "prediction_type": {p}"#);
    }
    if case["karras"] == true {
        inputs += r#", "schedule": "karras""#;
    }
    if let Some(eta) = case.get("eta").and_then(Json::as_f64) {
        inputs += &format!(r#", "eta": {eta}"#);
    }
    if let Some(seed) = case.get("seed").and_then(Json::as_i64) {
        inputs += &format!(r#", "seed": {seed}"#);
    }
    inputs
}

/// Scheduler `sched`, `extra` nodes, and a Loop `loop` over its timesteps
/// carrying `latent` (from `latent_from`) and the scheduler state.
fn loop_graph(sched_inputs: &str, latent_from: &str, extra: &str) -> String {
    format!(
        r#"{{"nodes": {{
        "sched": {{"type": "Scheduler", "inputs": {{{sched_inputs}}}}}{extra},
        "loop": {{"type": "Loop",
            "inputs": {{"over": ["sched", "timesteps"], "latent": {latent_from}, "state": ["sched", "state"]}},
            "body": {{
                "scale": {{"type": "ScaleModelInput", "inputs": {{"state": ["loop", "state"],
                    "sample": ["loop", "latent"], "timestep": ["loop", "item"]}}}},
                "model": {{"type": "SyntheticModel", "inputs": {{"sample": ["scale", "sample"],
                    "timestep": ["loop", "item"], "direction": ["sched", "alphas_cumprod"]}}}},
                "step": {{"type": "SchedulerStep", "inputs": {{"state": ["loop", "state"],
                    "model_output": ["model", "model_output"], "timestep": ["loop", "item"], "sample": ["loop", "latent"]}}}}
            }},
            "next": {{"latent": ["step", "prev_sample"], "state": ["step", "state"]}}}}}}}}"#
    )
}

fn assert_close(got: &[f32], want: &Json, tol: f64, what: &str) -> f64 {
    let err = max_abs(got, &json_floats(want));
    assert!(err <= tol, "{what}: max abs error {err}");
    err
}

#[test]
fn scheduler_outputs_match_diffusers() {
    let f = reference();
    let mut worst: f64 = 0.0;
    for case in f["schedules"].as_array().unwrap() {
        let text = format!(
            r#"{{"nodes": {{"sched": {{"type": "Scheduler", "inputs": {{{}}}}}}}}}"#,
            scheduler_inputs(case)
        );
        let out = run_with(&[SAMPLING], &text, vec![], Some(&["sched"]));
        let what = text.to_string();
        let as_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<_>>();
        worst = worst.max(assert_close(
            &as_f32(numbers(&out, "sched", "timesteps")),
            &case["timesteps"],
            1e-6,
            &what,
        ));
        worst = worst.max(assert_close(
            &as_f32(numbers(&out, "sched", "sigmas")),
            &case["sigmas"],
            1e-6,
            &what,
        ));
        let init = float(&out, "sched", "init_noise_sigma") as f32;
        worst = worst.max(assert_close(
            &[init],
            &Json::from(vec![case["init_noise_sigma"].clone()]),
            1e-6,
            &what,
        ));
    }
    eprintln!("Scheduler node timesteps/sigmas/init_noise_sigma: max abs error {worst:e}");
}

#[test]
fn loop_trajectories_match_diffusers() {
    let _rng = rng_lock();
    let f = reference();
    let (init, direction) = (shaped(&f, "init"), shaped(&f, "direction"));
    let mut worst: f64 = 0.0;
    let cases = f["trajectories"].as_array().unwrap();
    for case in cases {
        let text = loop_graph(
            &scheduler_inputs(case),
            r#"["sched", "alphas_cumprod"]"#,
            "",
        );
        let sigma = case["init_noise_sigma"].as_f64().unwrap() as f32;
        let tensors = vec![
            (
                "loop",
                "latent",
                init.f_mul_scalar(f64::from(sigma)).unwrap(),
            ),
            ("model", "direction", direction.copy()),
        ];
        let out = run_with(&[SAMPLING], &text, tensors, Some(&["loop"]));
        let what = scheduler_inputs(case);
        worst = worst.max(assert_close(
            &to_vec(&tensor(&out, "loop", "latent")),
            &case["final"],
            1e-5,
            &what,
        ));
    }
    eprintln!(
        "{} Loop trajectories (10 steps): final latent max abs error {worst:e}",
        cases.len()
    );
}

#[test]
fn img2img_matches_diffusers() {
    let _rng = rng_lock();
    let f = reference();
    let (clean, noise, direction) = (
        shaped(&f, "clean"),
        shaped(&f, "noise"),
        shaped(&f, "direction"),
    );
    let mut worst = (0.0f64, 0.0f64);
    for case in f["img2img"].as_array().unwrap() {
        let sched = format!(
            r#"{}, "strength": {}"#,
            scheduler_inputs(case),
            case["strength"]
        );
        let add_noise = r#", "noised": {"type": "AddNoise", "inputs": {"state": ["sched", "state"],
            "sample": ["sched", "alphas_cumprod"], "noise": ["sched", "alphas_cumprod"]}}"#;
        let text = loop_graph(&sched, r#"["noised", "noisy"]"#, add_noise);
        let tensors = vec![
            ("noised", "sample", clean.copy()),
            ("noised", "noise", noise.copy()),
            ("model", "direction", direction.copy()),
        ];
        let out = run_with(
            &[SAMPLING],
            &text,
            tensors,
            Some(&["noised", "loop", "sched"]),
        );
        let ts: Vec<f32> = numbers(&out, "sched", "timesteps")
            .into_iter()
            .map(|t| t as f32)
            .collect();
        assert_eq!(ts, json_floats(&case["timesteps"]), "{sched}");
        let en = assert_close(
            &to_vec(&tensor(&out, "noised", "noisy")),
            &case["noisy"],
            1e-6,
            &sched,
        );
        let ef = assert_close(
            &to_vec(&tensor(&out, "loop", "latent")),
            &case["final"],
            1e-5,
            &sched,
        );
        worst = (worst.0.max(en), worst.1.max(ef));
    }
    eprintln!(
        "img2img strength 0.6: noised max abs error {:e}, final {:e}",
        worst.0, worst.1
    );
}

/// GaussianNoise (core plugin) draws the initial latents from the seed's
/// generator and the scheduler continues that generator (`skip_draws: 1`):
/// diffusers' txt2img with `generator=torch.Generator("cpu").manual_seed(seed)`.
#[test]
fn stochastic_samplers_continue_gaussian_noise_like_diffusers() {
    if !common::target_dir()
        .join("libdiffgraph_nodes_core.so")
        .exists()
    {
        eprintln!("skipped: the core plugin is not built");
        return;
    }
    let _rng = rng_lock();
    let f = reference();
    let direction = shaped(&f, "direction");
    for case in f["pipeline"].as_array().unwrap() {
        let seed = &case["seed"];
        let sched = format!(r#"{}, "skip_draws": 1"#, scheduler_inputs(case));
        let noise = format!(
            r#", "noise": {{"type": "GaussianNoise", "inputs": {{"seed": {seed}, "shape": {},
            "scale": ["sched", "init_noise_sigma"]}}}}"#,
            f["shape"]
        );
        let text = loop_graph(&sched, r#"["noise", "noise"]"#, &noise);
        let tensors = vec![("model", "direction", direction.copy())];
        let out = run_with(
            &[SAMPLING, "diffgraph_nodes_core"],
            &text,
            tensors,
            Some(&["loop"]),
        );
        let err = assert_close(
            &to_vec(&tensor(&out, "loop", "latent")),
            &case["final"],
            1e-5,
            &sched,
        );
        eprintln!(
            "{} txt2img, latents and steps from one generator: max abs error {err:e}",
            case["sampler"]
        );
    }
}

#[test]
fn config_files_class_names_and_errors() {
    let f = reference();
    let dir = tempfile::tempdir().unwrap();
    // A diffusers-saved config: Euler, no timestep_spacing (Euler's default: linspace), -Infinity.
    let config = r#"{"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.21.0",
        "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": false,
        "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
        "trained_betas": null, "lambda_min_clipped": -Infinity}"#;
    std::fs::create_dir(dir.path().join("scheduler")).unwrap();
    std::fs::write(dir.path().join("scheduler/scheduler_config.json"), config).unwrap();
    let want = f["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["sampler"] == "euler"
                && c["spacing"] == "linspace"
                && c["karras"] == false
                && c["steps"] == 7
        })
        .expect("euler linspace case");
    let text = format!(
        r#"{{"nodes": {{"sched": {{"type": "Scheduler", "inputs": {{"config": {:?}, "steps": 7}}}}}}}}"#,
        dir.path().to_str().unwrap()
    );
    let out = run_with(&[SAMPLING], &text, vec![], Some(&["sched"]));
    let ts: Vec<f32> = numbers(&out, "sched", "timesteps")
        .into_iter()
        .map(|t| t as f32)
        .collect();
    assert_eq!(ts, json_floats(&want["timesteps"]));

    // diffusers class names are aliases of the ComfyUI names.
    let by_class = r#"{"nodes": {"sched": {"type": "Scheduler", "inputs": {"sampler": "DPMSolverMultistepScheduler", "steps": 7}}}}"#;
    let by_name = r#"{"nodes": {"sched": {"type": "Scheduler", "inputs": {"sampler": "dpmpp_2m", "steps": 7}}}}"#;
    let a = run_with(&[SAMPLING], by_class, vec![], Some(&["sched"]));
    let b = run_with(&[SAMPLING], by_name, vec![], Some(&["sched"]));
    assert_eq!(
        numbers(&a, "sched", "sigmas"),
        numbers(&b, "sched", "sigmas")
    );

    for (inputs, message) in [
        (
            r#""sampler": "euler_ancestral", "schedule": "karras""#,
            "karras",
        ),
        (
            r#""sampler": "euler", "prediction_type": "eps""#,
            "prediction_type",
        ),
        (r#""sampler": "pndm", "prediction_type": "sample""#, "PNDM"),
        (r#""sampler": "euler", "strength": 0.01"#, "strength"),
    ] {
        let text =
            format!(r#"{{"nodes": {{"sched": {{"type": "Scheduler", "inputs": {{{inputs}}}}}}}}}"#);
        let mut exec = Executor::new(common::registry_with(&[SAMPLING]));
        let checked = diffgraph::parse_graph(&text, &[], &exec.registry, false).unwrap();
        let Err(err) = exec.run(&checked, Some(&["sched"]), &Silent) else {
            panic!("must fail")
        };
        let err = err.to_string();
        assert!(err.contains(message), "{inputs}: {err}");
    }
}
