//! graphs/adm_classifier_guided.json and graphs/adm_unconditional_guided.json
//! run through their `--set` contract on the tiny random ADM models of
//! tests/fixtures/adm (scripts/fixtures/make_adm_fixtures.py): the guided
//! DDPM (cosine, sections "4,3,3") and DDIM ("ddim10") samples equal
//! guided-diffusion's classifier_sample.py loop within 1e-3, from x_T drawn
//! by `noise.seed` and the per-step draws of `schedule.seed`.
mod common;

#[path = "../../nodes/sd/tests/adm_common/mod.rs"]
mod adm_common;

use adm_common::{det_state_dict, json, keys, max_abs, tensors};
use diffgraph::graph::overrides::Override;
use diffgraph::{Executor, Silent};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

const PLUGINS: &[&str] = &[
    "diffgraph_nodes_core",
    "diffgraph_nodes_sampling",
    "diffgraph_nodes_sd",
];
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes the tiny model `name`'s deterministic weights and its flags
/// (plus `extra` diffusion flags) into `dir`; returns (weights, flags) paths.
fn write_model(dir: &Path, name: &str, extra: serde_json::Value) -> (String, String) {
    let tiny = json("tiny.json");
    let tensors = det_state_dict(&keys(&tiny[name]));
    let named: Vec<(String, Tensor)> = tensors.into_iter().collect();
    let weights = dir.join(format!("{name}.safetensors"));
    Tensor::write_safetensors(&named, &weights).unwrap();
    let mut flags = tiny[name]["flags"].as_object().unwrap().clone();
    flags.extend(extra.as_object().unwrap().clone());
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(&flags).unwrap()).unwrap();
    (weights.display().to_string(), path.display().to_string())
}

fn run(graph: &str, sets: &[String]) -> Tensor {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let text = std::fs::read_to_string(root().join("graphs").join(graph)).unwrap();
    let mut exec = Executor::new(common::registry_with(PLUGINS));
    let sets: Vec<Override> = sets.iter().map(|s| s.parse().expect("override")).collect();
    let checked = diffgraph::parse_graph(&text, &sets, &exec.registry, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let outcome = exec
        .run(&checked, Some(&["sampling"]), &Silent)
        .unwrap_or_else(|e| panic!("{e}"));
    let v = outcome
        .output("sampling", "latent")
        .expect("the final sample");
    v.as_tensor()
        .expect("a tensor")
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("diffgraph-adm-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn classifier_guided_graph_reproduces_classifier_sample_py() {
    let fx = json("sampling.json");
    let io = tensors("sampling.safetensors");
    let dir = tempdir("guided");
    for name in ["ddpm_cosine_sections", "ddim_linear"] {
        let r = &fx["runs"][name];
        let diffusion = serde_json::json!({
            "noise_schedule": r["noise_schedule"], "diffusion_steps": r["diffusion_steps"],
            "rescale_timesteps": r["rescale_timesteps"],
        });
        let (mpath, mflags) = write_model(&dir, "unet_a", diffusion);
        let (cpath, cflags) = write_model(&dir, "cls_attention", serde_json::json!({}));
        let sets = vec![
            format!("model.path={mpath}"),
            format!("model.flags={mflags}"),
            format!("classifier.path={cpath}"),
            format!("classifier.flags={cflags}"),
            "label.value=[3,8]".to_string(),
            format!("scale.value={}", r["scale"]),
            format!(
                "schedule.respacing={}",
                r["timestep_respacing"].as_str().unwrap()
            ),
            format!("schedule.use_ddim={}", r["use_ddim"]),
            format!("schedule.clip_denoised={}", r["clip_denoised"]),
            format!("noise.seed={}", r["noise_seed"]),
            format!("schedule.seed={}", r["schedule_seed"]),
            format!("save.filename={name}.safetensors"),
        ];
        let got = run("adm_classifier_guided.json", &sets);
        let err = max_abs(&got, &io[&format!("{name}.sample")]);
        eprintln!("{name}: max abs {err:e}");
        assert!(err <= 1e-3, "{name}: max abs {err:e}");
    }
}

#[test]
fn unconditional_graph_gives_the_labels_to_the_classifier_only() {
    let dir = tempdir("uncond");
    let (mpath, mflags) = write_model(&dir, "unet_b", serde_json::json!({"diffusion_steps": 50}));
    let (cpath, cflags) = write_model(&dir, "cls_adaptive", serde_json::json!({}));
    let sets = [
        format!("model.path={mpath}"),
        format!("model.flags={mflags}"),
        format!("classifier.path={cpath}"),
        format!("classifier.flags={cflags}"),
        "label.value=[1,2,9]".to_string(),
        "schedule.respacing=ddim5".to_string(),
        "schedule.use_ddim=true".to_string(),
    ];
    let got = run("adm_unconditional_guided.json", &sets);
    assert_eq!(got.size(), [3, 3, 8, 8]);
    assert!(
        bool::try_from(got.isfinite().all()).unwrap(),
        "finite samples"
    );
}

#[test]
fn a_malicious_pt_and_bad_flags_are_refused_with_clear_errors() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let text = std::fs::read_to_string(root().join("graphs/adm_classifier_guided.json")).unwrap();
    let mut exec = Executor::new(common::registry_with(PLUGINS));
    let dir = tempdir("bad");
    let (mpath, flags) = write_model(&dir, "unet_a", serde_json::json!({}));
    // Validation checks every file input, the classifier's too.
    let (cpath, cflags) = write_model(&dir, "cls_adaptive", serde_json::json!({}));
    let classifier = [
        format!("classifier.path={cpath}"),
        format!("classifier.flags={cflags}"),
    ];
    let malicious = root().join("tests/fixtures/checkpoint/malicious.pt");
    let bad_flags = dir.join("bad.json");
    std::fs::write(&bad_flags, r#"{"num_chanels": 32}"#).unwrap();
    for (sets, expected) in [
        (
            vec![
                format!("model.path={}", malicious.display()),
                format!("model.flags={flags}"),
            ],
            "refused the global `posix.system`",
        ),
        (
            vec![
                format!("model.path={mpath}"),
                format!("model.flags={}", bad_flags.display()),
            ],
            "unknown flag `num_chanels`",
        ),
    ] {
        let sets: Vec<Override> = sets
            .iter()
            .chain(&classifier)
            .map(|s| s.parse().unwrap())
            .collect();
        let checked = diffgraph::parse_graph(&text, &sets, &exec.registry, false).unwrap();
        let err = match exec.run(&checked, Some(&["model"]), &Silent) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected) && err.contains("model"), "{err}");
    }
}

#[test]
fn split_variance_separates_eps_from_the_variance_channels() {
    let dir = tempdir("split");
    let (mpath, mflags) = write_model(&dir, "unet_a", serde_json::json!({}));
    let text = serde_json::json!({"nodes": {
        "model": {"type": "LoadADM", "inputs": {"path": mpath, "flags": mflags}},
        "x": {"type": "GaussianNoise", "inputs": {"seed": 1, "shape": [2, 3, 8, 8]}},
        "eps": {"type": "UNetStep", "inputs": {"model": ["model", "model"], "sample": ["x", "noise"],
                "timestep": 10.0, "class_labels": [3, 8]}},
        "split": {"type": "SplitVariance", "inputs": {"model_output": ["eps", "model_output"]}},
        "bad": {"type": "SplitVariance", "inputs": {"model_output": ["eps", "model_output"], "channels": 4}}
    }})
    .to_string();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut exec = Executor::new(common::registry_with(PLUGINS));
    let checked = diffgraph::parse_graph(&text, &[], &exec.registry, false).unwrap();
    let outcome = exec
        .run(&checked, Some(&["split", "eps"]), &Silent)
        .unwrap();
    let get = |n: &str, o: &str| {
        outcome
            .output(n, o)
            .unwrap()
            .as_tensor()
            .unwrap()
            .shallow_clone()
    };
    let full = get("eps", "model_output");
    assert_eq!(full.size(), [2, 6, 8, 8]);
    assert!(get("split", "prediction").equal(&full.narrow(1, 0, 3)));
    assert!(get("split", "variance").equal(&full.narrow(1, 3, 3)));
    let err = match exec.run(&checked, Some(&["bad"]), &Silent) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("6 channels, expected 2 x 4"), "{err}");
}
