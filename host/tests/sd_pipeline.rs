//! Full Stable Diffusion graphs against diffusers' pipelines on the tiny
//! fixture models (tests/fixtures/sd, references from
//! scripts/fixtures/make_pipeline_reference.py): txt2img with every scheduler
//! at guidance 1.0 and 7.5, img2img at strength 0.6, SD1 (epsilon) and SD2
//! (v-prediction), initial latents injected; and the same model loaded from
//! its diffusers folder and its single-file checkpoint giving identical
//! results. Tolerance: 1e-3 max abs on the final latents (fp32, CPU).
mod common;

use diffgraph::{Executor, Silent, Value};
use std::path::{Path, PathBuf};
use tch::Tensor;

const TOLERANCE: f64 = 1e-3;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd")
}

fn executor() -> Executor {
    Executor::new(common::registry_with(&[
        "diffgraph_nodes_core",
        "diffgraph_nodes_sampling",
        "diffgraph_nodes_sd",
        "diffgraph_nodes_guidance",
    ]))
}

fn reference(model: &str, key: &str) -> Tensor {
    let file = fixtures().join(format!("pipelines/{model}.safetensors"));
    Tensor::read_safetensors(&file)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {}", file.display()))
        .1
}

/// The txt2img graph: the denoising loop with ScaleModelInput -> UNetStep
/// (guided model_output) -> SchedulerStep, latents injected from the reference file.
/// `start` defines the nodes that make the initial latent, `start_ref` links to it.
fn graph(ckpt: &str, case: &serde_json::Value, start: &str, start_ref: &str) -> String {
    let schedule = if case["karras"].as_bool().unwrap() {
        "karras"
    } else {
        "normal"
    };
    format!(
        r#"{{"nodes": {{
        "ckpt": {{"type": "LoadCheckpoint", "inputs": {{"path": {ckpt:?}}}}},
        "pos": {{"type": "CLIPTextEncode", "inputs": {{"clip": ["ckpt", "clip"], "text": {prompt}}}}},
        "neg": {{"type": "CLIPTextEncode", "inputs": {{"clip": ["ckpt", "clip"], "text": {negative}}}}},
        "sched": {{"type": "Scheduler", "inputs": {{"sampler": "{sampler}", "schedule": "{schedule}", "steps": {steps},
                  "config": ["ckpt", "scheduler_config"], "prediction_type": ["ckpt", "prediction_type"],
                  "seed": {seed}, "strength": {strength}}}}},
        "g": {{"type": "FloatConstant", "inputs": {{"value": {g}}}}},
        {start}
        "denoise": {{"type": "Loop", "inputs": {{"over": ["sched", "timesteps"], "latent": {start_ref}, "state": ["sched", "state"]}},
            "body": {{
                "scaled": {{"type": "ScaleModelInput", "inputs": {{"state": ["denoise", "state"], "sample": ["denoise", "latent"], "timestep": ["denoise", "item"]}}}},
                "unet": {{"type": "UNetStep", "inputs": {{"model": ["ckpt", "model"], "sample": ["scaled", "sample"], "timestep": ["denoise", "item"],
                          "cond": ["pos", "conditioning"], "uncond": ["neg", "conditioning"], "guidance_scale": ["g", "value"]}}}},
                "step": {{"type": "SchedulerStep", "inputs": {{"state": ["denoise", "state"], "model_output": ["unet", "model_output"], "timestep": ["denoise", "item"], "sample": ["denoise", "latent"]}}}}}},
            "next": {{"latent": ["step", "prev_sample"], "state": ["step", "state"]}}}}
        }}}}"#,
        prompt = case["prompt"],
        negative = case["negative_prompt"],
        sampler = case["sampler"].as_str().unwrap(),
        steps = case["steps"],
        seed = case.get("sched_seed").and_then(|s| s.as_i64()).unwrap_or(0),
        strength = case.get("strength").and_then(|s| s.as_f64()).unwrap_or(1.0),
        g = case["guidance_scale"],
    )
}

/// txt2img: the injected noise times the scheduler's init_noise_sigma.
fn txt2img_start(refs: &Path) -> (String, &'static str) {
    let nodes = format!(
        r#""init": {{"type": "LoadTensor", "inputs": {{"path": {refs:?}, "key": "latents_init"}}}},
           "start": {{"type": "TensorScale", "inputs": {{"x": ["init", "tensor"], "factor": ["sched", "init_noise_sigma"]}}}},"#
    );
    (nodes, r#"["start", "scaled"]"#)
}

fn run_latents(exec: &mut Executor, text: &str) -> Tensor {
    let checked = diffgraph::parse_graph(text, &[], &exec.registry, false)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let out = exec
        .run(&checked, Some(&["denoise"]), &Silent)
        .unwrap_or_else(|e| panic!("{e}"));
    match out.output("denoise", "latent") {
        Some(Value::Tensor(t)) => t.tensor().shallow_clone(),
        other => panic!("no latent: {other:?}"),
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn cases(kind: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("pipelines/cases.json")).unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    all.into_iter().filter(|c| c["kind"] == kind).collect()
}

#[test]
fn txt2img_matches_diffusers_for_every_scheduler() {
    let mut exec = executor();
    let mut report = Vec::new();
    for case in cases("txt2img") {
        let model = case["model"].as_str().unwrap();
        let refs = fixtures().join(format!("pipelines/{model}.safetensors"));
        let ckpt = fixtures().join(model).to_string_lossy().into_owned();
        let (start, start_ref) = txt2img_start(&refs);
        let graph = graph(&ckpt, &case, &start, start_ref);
        let ours = run_latents(&mut exec, &graph);
        let err = max_abs(&ours, &reference(model, case["key"].as_str().unwrap()));
        report.push(format!(
            "{model} {}: {err:.2e}",
            case["key"].as_str().unwrap()
        ));
    }
    let failed: Vec<_> = report
        .iter()
        .filter(|r| r.rsplit(": ").next().unwrap().parse::<f64>().unwrap() > TOLERANCE)
        .collect();
    println!("{}", report.join("\n"));
    assert!(
        failed.is_empty(),
        "over {TOLERANCE}: {failed:#?}\nall:\n{}",
        report.join("\n")
    );
}

/// img2img: the image encoded with the pipeline's posterior noise, noised to
/// the first timestep of the shortened schedule with its add_noise noise.
fn img2img_start(refs: &Path, image01: &Path) -> (String, &'static str) {
    let nodes = format!(
        r#""image": {{"type": "LoadTensor", "inputs": {{"path": {image01:?}}}}},
           "pnoise": {{"type": "LoadTensor", "inputs": {{"path": {refs:?}, "key": "img2img_posterior_noise"}}}},
           "anoise": {{"type": "LoadTensor", "inputs": {{"path": {refs:?}, "key": "img2img_add_noise"}}}},
           "enc": {{"type": "VAEEncode", "inputs": {{"vae": ["ckpt", "vae"], "image": ["image", "tensor"], "noise": ["pnoise", "tensor"]}}}},
           "noised": {{"type": "AddNoise", "inputs": {{"state": ["sched", "state"], "sample": ["enc", "latent"], "noise": ["anoise", "tensor"]}}}},"#
    );
    (nodes, r#"["noised", "noisy"]"#)
}

#[test]
fn img2img_at_strength_0_6_matches_diffusers() {
    let mut exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for case in cases("img2img") {
        let model = case["model"].as_str().unwrap();
        let refs = fixtures().join(format!("pipelines/{model}.safetensors"));
        // The pipeline takes the image in [-1, 1]; IMAGE ports carry [0, 1].
        let image01 = dir.path().join(format!("{model}-image.safetensors"));
        let image = (reference(model, "img2img_image") + 1.0) / 2.0;
        Tensor::write_safetensors(&[("image", &image)], &image01).unwrap();
        let ckpt = fixtures().join(model).to_string_lossy().into_owned();
        let (start, start_ref) = img2img_start(&refs, &image01);
        let ours = run_latents(&mut exec, &graph(&ckpt, &case, &start, start_ref));
        let err = max_abs(&ours, &reference(model, case["key"].as_str().unwrap()));
        report.push((format!("{model} {}", case["key"].as_str().unwrap()), err));
    }
    println!("{report:#?}");
    assert_eq!(report.len(), 6);
    assert!(report.iter().all(|(_, e)| *e <= TOLERANCE), "{report:#?}");
}

#[test]
fn folder_and_single_file_give_identical_images() {
    let mut exec = executor();
    for model in ["sd1-tiny", "sd2v-tiny"] {
        let case = cases("txt2img")
            .into_iter()
            .find(|c| c["model"] == model && c["key"] == "txt2img_ddim_g7.5")
            .unwrap();
        let refs = fixtures().join(format!("pipelines/{model}.safetensors"));
        let (start, start_ref) = txt2img_start(&refs);
        let folder = fixtures().join(model).to_string_lossy().into_owned();
        let single = fixtures()
            .join(format!("{model}.safetensors"))
            .to_string_lossy()
            .into_owned();
        let a = run_latents(&mut exec, &graph(&folder, &case, &start, start_ref));
        // Single files carry no config for what shapes cannot tell (heads, norm
        // groups): the folder of the same architecture supplies it.
        let single_graph = graph(&single, &case, &start, start_ref).replace(
            &format!(r#""path": {single:?}"#),
            &format!(r#""path": {single:?}, "config": {folder:?}"#),
        );
        let b = run_latents(&mut exec, &single_graph);
        assert_eq!(
            max_abs(&a, &b),
            0.0,
            "{model}: folder and single file differ"
        );
        assert!(max_abs(&a, &reference(model, "txt2img_ddim_g7.5")) <= TOLERANCE);
    }
}

#[test]
fn decoded_image_matches_the_pipeline() {
    let mut exec = executor();
    for model in ["sd1-tiny", "sd2v-tiny"] {
        let refs = fixtures().join(format!("pipelines/{model}.safetensors"));
        let ckpt = fixtures().join(model).to_string_lossy().into_owned();
        let text = format!(
            r#"{{"nodes": {{
            "ckpt": {{"type": "LoadCheckpoint", "inputs": {{"path": {ckpt:?}}}}},
            "lat": {{"type": "LoadTensor", "inputs": {{"path": {refs:?}, "key": "txt2img_ddim_g7.5"}}}},
            "dec": {{"type": "VAEDecode", "inputs": {{"vae": ["ckpt", "vae"], "latent": ["lat", "tensor"]}}}}}}}}"#
        );
        let checked = diffgraph::parse_graph(&text, &[], &exec.registry, false).unwrap();
        let out = exec.run(&checked, Some(&["dec"]), &Silent).unwrap();
        let Some(Value::Tensor(image)) = out.output("dec", "image") else {
            panic!("no image")
        };
        let err = max_abs(image.tensor(), &reference(model, "txt2img_ddim_g7.5_image"));
        assert!(err <= 1e-4, "{model}: decoded image differs by {err}");
    }
}

#[test]
fn the_sd_example_graphs_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    for g in ["graphs/txt2img_sd1.json", "graphs/txt2img_sd2.json"] {
        let status = std::process::Command::new(common::diffgraph_bin())
            .args(["run", g, "--quiet", "--out", &out.path().to_string_lossy()])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{g}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let printed = String::from_utf8_lossy(&status.stdout).trim().to_string();
        assert!(
            printed.ends_with(".png") && Path::new(&printed).exists(),
            "{g}: {printed}"
        );
    }
}
