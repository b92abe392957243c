//! ComfyUI's LoraLoader, LoraLoaderModelOnly and VAELoader in workflows
//! (`diffgraph::comfy::loaders`): ComfyUI's default workflow with a LoRA
//! between the checkpoint and everything else, and a separate VAE, on the
//! tiny SD 1 fixture. At strength 0 the image is the plain workflow's; a
//! strength changes it; the KSampler still finds the checkpoint's scheduler
//! config through the LoRA loaders.
mod common;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// checkpoints/ (the tiny SD 1 file and its sidecar folder), loras/ (the
/// kohya LoRA fixture), vae/ (the tiny VAE's diffusers folder),
/// embeddings/ (a 2-vector textual-inversion embedding).
fn models_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let link = |from: PathBuf, kind: &str, name: &str| {
        std::fs::create_dir_all(dir.path().join(kind)).unwrap();
        std::os::unix::fs::symlink(from, dir.path().join(kind).join(name)).unwrap();
    };
    let fx = repo().join("tests/fixtures");
    link(
        fx.join("sd/sd1-tiny.safetensors"),
        "checkpoints",
        "v1-5-pruned-emaonly.safetensors",
    );
    link(fx.join("sd/sd1-tiny"), "checkpoints", "v1-5-pruned-emaonly");
    link(
        fx.join("lora/kohya.safetensors"),
        "loras",
        "tiny.safetensors",
    );
    link(fx.join("sd/sd1-tiny/vae"), "vae", "tiny-vae");
    link(
        fx.join("prompt_weights/embeddings/tiny_emb.safetensors"),
        "embeddings",
        "tiny_emb.safetensors",
    );
    dir
}

/// The default workflow, small, with LoRA loaders "10" (model and clip)
/// and "11" (model only) after the checkpoint and VAELoader "12".
fn workflow(strength_model: f64, strength_clip: f64) -> Value {
    let text =
        std::fs::read_to_string(repo().join("tests/fixtures/comfy/default-api-workflow.json"))
            .unwrap();
    let mut wf: Value = serde_json::from_str(&text).unwrap();
    wf["5"]["inputs"]["width"] = json!(32);
    wf["5"]["inputs"]["height"] = json!(32);
    wf["3"]["inputs"]["steps"] = json!(3);
    wf["10"] = json!({ "class_type": "LoraLoader", "inputs": {
        "model": ["4", 0], "clip": ["4", 1], "lora_name": "tiny.safetensors",
        "strength_model": strength_model, "strength_clip": strength_clip } });
    wf["11"] = json!({ "class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["10", 0], "lora_name": "tiny.safetensors", "strength_model": strength_model } });
    wf["12"] = json!({ "class_type": "VAELoader", "inputs": { "vae_name": "tiny-vae" } });
    wf["3"]["inputs"]["model"] = json!(["11", 0]);
    wf["6"]["inputs"]["clip"] = json!(["10", 1]);
    wf["7"]["inputs"]["clip"] = json!(["10", 1]);
    wf["8"]["inputs"]["vae"] = json!(["12", 0]);
    wf
}

/// The models folder, its `ModelFolders` and the plugins a workflow needs.
fn setup() -> (
    tempfile::TempDir,
    diffgraph::comfy::ModelFolders,
    diffgraph::Registry,
) {
    let models = models_folder();
    let folders = diffgraph::comfy::ModelFolders::new(&[models.path().into()]);
    let plugins = [
        "diffgraph_nodes_core",
        "diffgraph_nodes_sampling",
        "diffgraph_nodes_sd",
    ];
    (models, folders, common::registry_with(&plugins))
}

#[test]
fn lora_and_vae_loaders_translate_and_run() {
    let (_models, folders, registry) = setup();
    let out = tempfile::tempdir().unwrap();
    let mut exec = diffgraph::Executor::new(registry.clone());
    exec.set_output_dir(out.path().to_string_lossy());
    let mut run = |wf: &Value, prefix: &str| {
        let mut wf = wf.clone();
        wf["9"]["inputs"]["filename_prefix"] = json!(prefix);
        let checked = diffgraph::parse_graph_with(&wf.to_string(), &[], &registry, true, &folders)
            .unwrap_or_else(|e| panic!("{e}"));
        exec.run(&checked, None, &diffgraph::Silent)
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::read(out.path().join(format!("{prefix}.png"))).unwrap()
    };
    let mut plain = workflow(0.0, 0.0);
    for id in ["10", "11", "12"] {
        plain.as_object_mut().unwrap().remove(id);
    }
    plain["3"]["inputs"]["model"] = json!(["4", 0]);
    for id in ["6", "7"] {
        plain[id]["inputs"]["clip"] = json!(["4", 1]);
    }
    plain["8"]["inputs"]["vae"] = json!(["4", 2]);
    let base = run(&plain, "plain");
    assert_eq!(
        run(&workflow(0.0, 0.0), "zero"),
        base,
        "strength 0 changes nothing"
    );
    let model_only = run(&workflow(0.7, 0.0), "model");
    let both = run(&workflow(0.7, 0.7), "both");
    assert_ne!(model_only, base, "strength_model changes the image");
    assert_ne!(both, model_only, "strength_clip changes the image");
    // The unpatched checkpoint again, after patched runs: restored.
    assert_eq!(run(&plain, "again"), base);
    // `embedding:name` finds the embeddings folder; an unknown name is
    // ignored with a warning, as in ComfyUI.
    let mut prompt = |text: &str, prefix: &str| {
        let mut wf = plain.clone();
        wf["6"]["inputs"]["text"] = json!(text);
        run(&wf, prefix)
    };
    let girl = prompt("masterpiece girl", "girl");
    assert_eq!(
        prompt("masterpiece girl embedding:unknown", "unknown"),
        girl
    );
    assert_ne!(prompt("masterpiece girl embedding:tiny_emb", "emb"), girl);
}

#[test]
fn a_missing_lora_names_the_folders_searched() {
    let (_models, folders, registry) = setup();
    let mut wf = workflow(1.0, 1.0);
    wf["10"]["inputs"]["lora_name"] = json!("nope.safetensors");
    let err = diffgraph::parse_graph_with(&wf.to_string(), &[], &registry, true, &folders)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("nope.safetensors") && err.contains("loras"),
        "{err}"
    );
}
