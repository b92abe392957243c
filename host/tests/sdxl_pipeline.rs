//! The SDXL graphs (graphs/txt2img_sdxl.json, graphs/sdxl_refiner.json) run
//! through `--set` against diffusers' pipelines on the tiny random-weight
//! models of tests/fixtures/sdxl (references from
//! scripts/fixtures/make_sdxl_fixtures.py): StableDiffusionXLPipeline for
//! every scheduler at guidance 1 and 5; base (denoising_end 0.8) then
//! StableDiffusionXLImg2ImgPipeline refiner (denoising_start 0.8) for DDIM,
//! Euler and DPM++ 2M; and the base from its single-file checkpoint giving
//! the folder's latents. The initial noise is GaussianNoise seed 0, which is
//! the pipelines' torch.randn with generator seed 0. Tolerance: 1e-3 max abs
//! on the latents (fp32, CPU).
mod common;

use diffgraph::graph::overrides::Override;
use diffgraph::{Executor, Silent, Value};
use std::path::{Path, PathBuf};
use tch::Tensor;

const TOLERANCE: f64 = 1e-3;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/sdxl")
}

fn executor() -> Executor {
    Executor::new(common::registry_with(&[
        "diffgraph_nodes_core",
        "diffgraph_nodes_sampling",
        "diffgraph_nodes_sd",
    ]))
}

fn reference(key: &str) -> Tensor {
    let file = fixtures().join("pipelines/sdxl-tiny.safetensors");
    Tensor::read_safetensors(&file)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {}", file.display()))
        .1
}

fn cases(kind: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("pipelines/cases.json")).unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    all.into_iter().filter(|c| c["kind"] == kind).collect()
}

fn set(node: &str, input: &str, value: serde_json::Value) -> Override {
    Override {
        node: node.into(),
        input: input.into(),
        value,
    }
}

/// The case's settings for the scheduler nodes, prompts and noise.
fn overrides(case: &serde_json::Value, schedulers: &[&str], ckpt: &Path) -> Vec<Override> {
    let schedule = if case["karras"].as_bool().unwrap() {
        "karras"
    } else {
        "normal"
    };
    let mut o = vec![
        set("ckpt", "path", ckpt.to_string_lossy().into()),
        set("prompt", "text", case["prompt"].clone()),
        set("negative", "text", case["negative_prompt"].clone()),
        set("guidance", "value", case["guidance_scale"].clone()),
        set("noise", "seed", 0.into()),
        set("width", "value", case["width"].clone()),
        set("height", "value", case["height"].clone()),
    ];
    for s in schedulers {
        o.push(set(s, "sampler", case["sampler"].clone()));
        o.push(set(s, "schedule", schedule.into()));
        o.push(set(s, "steps", case["steps"].clone()));
        o.push(set(
            s,
            "seed",
            case.get("sched_seed").cloned().unwrap_or(0.into()),
        ));
    }
    o
}

fn run(exec: &mut Executor, graph: &str, overrides: &[Override], loops: &[&str]) -> Vec<Tensor> {
    let text = std::fs::read_to_string(root().join(graph)).unwrap();
    let checked = diffgraph::parse_graph(&text, overrides, &exec.registry, false)
        .unwrap_or_else(|e| panic!("{graph}: {e}"));
    let out = exec
        .run(&checked, Some(loops), &Silent)
        .unwrap_or_else(|e| panic!("{e}"));
    loops
        .iter()
        .map(|l| match out.output(l, "latent") {
            Some(Value::Tensor(t)) => t.tensor().shallow_clone(),
            other => panic!("no latent from {l}: {other:?}"),
        })
        .collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn check(report: Vec<(String, f64)>, expected: usize) {
    let text: Vec<String> = report
        .iter()
        .map(|(k, e)| format!("{k}: {e:.2e}"))
        .collect();
    println!("{}", text.join("\n"));
    assert_eq!(report.len(), expected, "{text:#?}");
    assert!(
        report.iter().all(|(_, e)| *e <= TOLERANCE),
        "over {TOLERANCE}: {text:#?}"
    );
}

#[test]
fn txt2img_sdxl_matches_diffusers_for_every_scheduler() {
    let mut exec = executor();
    let ckpt = fixtures().join("sdxl-tiny");
    let mut report = Vec::new();
    for case in cases("txt2img") {
        let o = overrides(&case, &["scheduler"], &ckpt);
        let ours = run(&mut exec, "graphs/txt2img_sdxl.json", &o, &["denoise"]);
        let key = case["key"].as_str().unwrap();
        report.push((key.to_string(), max_abs(&ours[0], &reference(key))));
    }
    check(report, 18);
}

#[test]
fn base_then_refiner_matches_diffusers() {
    let mut exec = executor();
    let ckpt = fixtures().join("sdxl-tiny");
    let refiner = fixtures().join("sdxl-refiner-tiny");
    let mut report = Vec::new();
    for case in cases("refiner") {
        let mut o = overrides(&case, &["scheduler", "refiner_scheduler"], &ckpt);
        o.push(set("refiner", "path", refiner.to_string_lossy().into()));
        o.push(set("refiner_prompt", "text", case["prompt"].clone()));
        o.push(set(
            "refiner_negative",
            "text",
            case["negative_prompt"].clone(),
        ));
        o.push(set("split", "value", case["split"].clone()));
        let ours = run(
            &mut exec,
            "graphs/sdxl_refiner.json",
            &o,
            &["denoise", "refine"],
        );
        let key = case["key"].as_str().unwrap();
        report.push((
            format!("{key} (base part)"),
            max_abs(&ours[0], &reference(&format!("{key}_base"))),
        ));
        report.push((key.to_string(), max_abs(&ours[1], &reference(key))));
    }
    check(report, 6);
}

#[test]
fn single_file_gives_the_folders_latents() {
    let mut exec = executor();
    let case = cases("txt2img")
        .into_iter()
        .find(|c| c["key"] == "txt2img_euler_g5.0")
        .unwrap();
    let folder = fixtures().join("sdxl-tiny");
    let a = run(
        &mut exec,
        "graphs/txt2img_sdxl.json",
        &overrides(&case, &["scheduler"], &folder),
        &["denoise"],
    );
    let mut o = overrides(
        &case,
        &["scheduler"],
        &fixtures().join("sdxl-tiny.safetensors"),
    );
    // What shapes cannot tell (heads, groups) from the folder, as diffusers' from_single_file(config=...).
    o.push(set("ckpt", "config", folder.to_string_lossy().into()));
    let b = run(&mut exec, "graphs/txt2img_sdxl.json", &o, &["denoise"]);
    assert_eq!(max_abs(&a[0], &b[0]), 0.0);
}
