//! ComfyUI's default API workflow on an SDXL checkpoint: CheckpointLoaderSimple
//! loads the tiny SDXL single file (its diffusers folder beside it supplies
//! the config), CLIPTextEncode gives both encoders' context and the pooled
//! embedding, and the KSampler's U-Net step gets ComfyUI's time ids (the
//! latent's size x 8, no crop). The translated workflow must give exactly
//! the latents of the hand-written ComfyUI-numerics loop it stands for.
mod common;

use diffgraph::graph::overrides::Override;
use diffgraph::{Silent, Value};
use std::path::{Path, PathBuf};

const WORKFLOW: &str = "tests/fixtures/comfy/default-api-workflow.json";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sets(items: &[String]) -> Vec<Override> {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn default_workflow_runs_an_sdxl_checkpoint_as_the_native_graph() {
    let models = tempfile::tempdir().unwrap();
    let ckpts = models.path().join("checkpoints");
    std::fs::create_dir_all(&ckpts).unwrap();
    let fixtures = repo().join("tests/fixtures/sdxl");
    for name in ["sdxl-tiny.safetensors", "sdxl-tiny"] {
        std::os::unix::fs::symlink(fixtures.join(name), ckpts.join(name)).unwrap();
    }
    let folders = diffgraph::comfy::ModelFolders::new(&[models.path().into()]);
    let registry = common::registry_with(&[
        "diffgraph_nodes_core",
        "diffgraph_nodes_sampling",
        "diffgraph_nodes_sd",
    ]);
    let mut exec = diffgraph::Executor::new(registry.clone());
    let mut latent = |text: &str, overrides: &[Override], node: &str| {
        let checked = diffgraph::parse_graph_with(text, overrides, &registry, false, &folders)
            .unwrap_or_else(|e| panic!("{e}"));
        exec_run(&mut exec, &checked, node)
    };
    let workflow = std::fs::read_to_string(repo().join(WORKFLOW)).unwrap();
    let comfy = latent(
        &workflow,
        &sets(&[
            "4.ckpt_name=sdxl-tiny.safetensors".into(),
            "5.width=96".into(),
            "5.height=64".into(),
            "3.steps=4".into(),
            "3.seed=5".into(),
        ]),
        "3",
    );
    // The loop ComfyUI's KSampler stands for, written by hand: ComfyUI's
    // sigmas and euler (KSchedule .. KSamplerStep), SDXL's pooled
    // embeddings and time ids from the latent's size x 8.
    let w: serde_json::Value = serde_json::from_str(&workflow).unwrap();
    let single = fixtures.join("sdxl-tiny.safetensors");
    let folder = fixtures.join("sdxl-tiny");
    let native = serde_json::json!({ "nodes": {
        "ckpt": { "type": "LoadCheckpoint", "inputs": { "path": single, "config": folder } },
        "pos": { "type": "CLIPTextEncode", "inputs": { "clip": ["ckpt", "clip"], "text": w["6"]["inputs"]["text"] } },
        "neg": { "type": "CLIPTextEncode", "inputs": { "clip": ["ckpt", "clip"], "text": w["7"]["inputs"]["text"] } },
        "zeros": { "type": "EmptyLatent", "inputs": { "shape": [1, 4, 8, 12] } },
        "tids": { "type": "SDXLTimeIds", "inputs": { "latent": ["zeros", "latent"] } },
        "sigmas": { "type": "KSchedule", "inputs": {
            "scheduler": "normal", "steps": 4, "sampler_name": "euler", "config": ["ckpt", "scheduler_config"] } },
        "noise": { "type": "GaussianNoise", "inputs": { "seed": 5, "shape": [1, 4, 8, 12] } },
        "start": { "type": "KSamplerStart", "inputs": {
            "sigmas": ["sigmas", "sigmas"], "sampler_name": "euler", "seed": 5, "latent": ["zeros", "latent"],
            "noise": ["noise", "noise"], "prediction_type": ["ckpt", "prediction_type"], "config": ["ckpt", "scheduler_config"] } },
        "denoise": { "type": "Loop",
            "inputs": { "over": ["start", "evaluations"], "latent": ["start", "latent"], "state": ["start", "state"] },
            "body": {
                "in": { "type": "KModelInput", "inputs": { "state": ["denoise", "state"] } },
                "unet": { "type": "UNetStep", "inputs": { "model": ["ckpt", "model"], "sample": ["in", "sample"], "timestep": ["in", "timestep"],
                    "cond": ["pos", "conditioning"], "uncond": ["neg", "conditioning"],
                    "pooled": ["pos", "pooled"], "uncond_pooled": ["neg", "pooled"], "time_ids": ["tids", "time_ids"] } },
                "cfg": { "type": "CFGDenoise", "inputs": { "state": ["denoise", "state"], "output_cond": ["unet", "output_cond"],
                    "output_uncond": ["unet", "output_uncond"], "cfg": w["3"]["inputs"]["cfg"] } },
                "step": { "type": "KSamplerStep", "inputs": { "state": ["denoise", "state"], "denoised": ["cfg", "denoised"] } } },
            "next": { "latent": ["step", "latent"], "state": ["step", "state"] } }
    }});
    let ours = latent(&native.to_string(), &[], "denoise");
    assert_eq!(comfy.size(), [1, 4, 8, 12]);
    let diff = (&comfy - &ours).abs().max().double_value(&[]);
    assert_eq!(
        diff, 0.0,
        "the translated workflow and the native graph differ"
    );
}

fn exec_run(
    exec: &mut diffgraph::Executor,
    checked: &diffgraph::CheckedGraph,
    node: &str,
) -> tch::Tensor {
    let out = exec
        .run(checked, Some(&[node]), &Silent)
        .unwrap_or_else(|e| panic!("{e}"));
    match out.output(node, "latent") {
        Some(Value::Tensor(t)) => t.tensor().shallow_clone(),
        other => panic!("no latent from {node}: {other:?}"),
    }
}

/// LoraLoader and LoraLoaderModelOnly on an SDXL checkpoint (the kohya SDXL
/// fixture: sgm U-Net names, lora_te1_/lora_te2_), and a weighted prompt
/// with an SDXL embedding: strength 0 is the plain workflow exactly, a
/// strength (model or clip alone) changes the latents, and so do the
/// prompt's weights.
#[test]
fn lora_loaders_and_weighted_prompts_on_an_sdxl_checkpoint() {
    let models = tempfile::tempdir().unwrap();
    let fx = repo().join("tests/fixtures");
    let link = |from: PathBuf, kind: &str, name: &str| {
        std::fs::create_dir_all(models.path().join(kind)).unwrap();
        std::os::unix::fs::symlink(from, models.path().join(kind).join(name)).unwrap();
    };
    link(fx.join("sdxl/sdxl-tiny"), "checkpoints", "sdxl-tiny");
    link(
        fx.join("lora/sdxl/kohya.safetensors"),
        "loras",
        "xl.safetensors",
    );
    link(
        fx.join("prompt_weights/sdxl/embeddings/tiny_xl.safetensors"),
        "embeddings",
        "tiny_xl.safetensors",
    );
    let folders = diffgraph::comfy::ModelFolders::new(&[models.path().into()]);
    let registry = common::registry_with(&[
        "diffgraph_nodes_core",
        "diffgraph_nodes_sampling",
        "diffgraph_nodes_sd",
    ]);
    let mut exec = diffgraph::Executor::new(registry.clone());
    let text = std::fs::read_to_string(repo().join(WORKFLOW)).unwrap();
    let mut latent = |model: f64, clip: f64, prompt: &str| {
        let mut wf: serde_json::Value = serde_json::from_str(&text).unwrap();
        wf["4"]["inputs"]["ckpt_name"] = "sdxl-tiny".into();
        wf["5"]["inputs"]["width"] = 96.into();
        wf["5"]["inputs"]["height"] = 64.into();
        wf["3"]["inputs"]["steps"] = 2.into();
        wf["6"]["inputs"]["text"] = prompt.into();
        wf["10"] = serde_json::json!({ "class_type": "LoraLoader", "inputs": {
            "model": ["4", 0], "clip": ["4", 1], "lora_name": "xl.safetensors",
            "strength_model": model, "strength_clip": clip } });
        wf["11"] = serde_json::json!({ "class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["10", 0], "lora_name": "xl.safetensors", "strength_model": model } });
        wf["3"]["inputs"]["model"] = serde_json::json!(["11", 0]);
        wf["6"]["inputs"]["clip"] = serde_json::json!(["10", 1]);
        wf["7"]["inputs"]["clip"] = serde_json::json!(["10", 1]);
        let checked = diffgraph::parse_graph_with(&wf.to_string(), &[], &registry, false, &folders)
            .unwrap_or_else(|e| panic!("{e}"));
        exec_run(&mut exec, &checked, "3")
    };
    let plain_prompt = "a red circle";
    let plain = latent(0.0, 0.0, plain_prompt);
    let diff = |a: &tch::Tensor, b: &tch::Tensor| (a - b).abs().max().double_value(&[]);
    let model_only = latent(1.0, 0.0, plain_prompt);
    let clip_only = latent(0.0, 1.0, plain_prompt);
    let weighted = latent(0.0, 0.0, "a (red:1.5) circle embedding:tiny_xl");
    let again = latent(0.0, 0.0, plain_prompt);
    for (what, t) in [
        ("model", &model_only),
        ("clip", &clip_only),
        ("weights", &weighted),
    ] {
        let d = diff(&plain, t);
        eprintln!("{what}: max abs change {d:.3e}");
        assert!(d > 1e-3, "{what} changed nothing ({d:e})");
    }
    assert_eq!(
        diff(&plain, &again),
        0.0,
        "patches are undone for strength 0"
    );
}
