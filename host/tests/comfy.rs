//! ComfyUI workflows run unchanged (`diffgraph::comfy`): ComfyUI's default
//! API workflow (tests/fixtures/comfy/default-api-workflow.json, a copy of
//! the one ComfyUI ships) on the embedded demo model and on a tiny
//! checkpoint in a ComfyUI-style models folder, `convert`, and the errors a
//! workflow gets (in its own node ids and input names).
mod common;

use common::comfy_support::*;
use common::shapes::analyse;

#[test]
fn the_default_workflow_draws_its_prompt_with_the_demo_model() {
    let out = tempfile::tempdir().unwrap();
    let stdout = ok(&diffgraph(&[
        "run",
        WORKFLOW,
        "--quiet",
        "--threads",
        "1",
        "--set",
        "4.ckpt_name=shapes-ldm",
        "--set",
        "5.width=64",
        "--set",
        "5.height=64",
        "--set",
        "6.text=a large red circle in the center on a white background",
        "--set",
        "7.text=",
        "--out",
        out.path().to_str().unwrap(),
    ]));
    let png = out.path().join("ComfyUI.png");
    assert_eq!(stdout.trim(), png.display().to_string());
    let (colour, background, _) = analyse(&png);
    assert_eq!((colour.as_str(), background.as_str()), ("red", "white"));
}

/// The workflow with a tiny checkpoint from `--models` gives exactly the
/// image of the hand-written native graph its KSampler stands for.
#[test]
fn the_default_workflow_runs_a_checkpoint_from_a_models_folder_as_the_native_loop() {
    let models = common::tiny_sd1_models_folder();
    let out = tempfile::tempdir().unwrap();
    let sets = [
        "5.width=64",
        "5.height=32",
        "3.steps=4",
        "3.seed=7",
        "3.cfg=3.5",
    ];
    let mut args = vec!["run", WORKFLOW, "--quiet", "--threads", "1"];
    args.extend(["--models", models.path().to_str().unwrap()]);
    args.extend(["--out", out.path().to_str().unwrap()]);
    for s in &sets {
        args.extend(["--set", s]);
    }
    ok(&diffgraph(&args));
    let comfy = image::open(out.path().join("ComfyUI.png"))
        .unwrap()
        .to_rgb8();
    // EmptyLatentImage is ComfyUI's [1, 4, h / 8, w / 8] whatever the VAE;
    // the tiny fixture's VAE upsamples by 2, not 8.
    assert_eq!(comfy.dimensions(), (16, 8));

    let ckpt = models.path().join("checkpoints/v1-5-pruned-emaonly");
    let native = serde_json::json!({ "nodes": {
        "ckpt": { "type": "LoadCheckpoint", "inputs": {
            "path": ckpt.with_extension("safetensors"), "config": ckpt } },
        "pos": { "type": "CLIPTextEncode", "inputs": { "clip": ["ckpt", "clip"], "text": "masterpiece best quality girl" } },
        "neg": { "type": "CLIPTextEncode", "inputs": { "clip": ["ckpt", "clip"], "text": "bad hands" } },
        "sigmas": { "type": "KSchedule", "inputs": {
            "scheduler": "normal", "steps": 4, "sampler_name": "euler", "config": ["ckpt", "scheduler_config"] } },
        "noise": { "type": "GaussianNoise", "inputs": { "seed": 7, "shape": [1, 4, 4, 8] } },
        "start": { "type": "KSamplerStart", "inputs": {
            "sigmas": ["sigmas", "sigmas"], "sampler_name": "euler", "seed": 7, "latent": ["zeros", "latent"],
            "noise": ["noise", "noise"], "prediction_type": ["ckpt", "prediction_type"], "config": ["ckpt", "scheduler_config"] } },
        "zeros": { "type": "EmptyLatent", "inputs": { "shape": [1, 4, 4, 8] } },
        "loop": { "type": "Loop",
            "inputs": { "over": ["start", "evaluations"], "x": ["start", "latent"], "state": ["start", "state"] },
            "body": {
                "in": { "type": "KModelInput", "inputs": { "state": ["loop", "state"] } },
                "unet": { "type": "UNetStep", "inputs": { "model": ["ckpt", "model"], "sample": ["in", "sample"], "timestep": ["in", "timestep"],
                    "cond": ["pos", "conditioning"], "uncond": ["neg", "conditioning"] } },
                "cfg": { "type": "CFGDenoise", "inputs": { "state": ["loop", "state"], "output_cond": ["unet", "output_cond"],
                    "output_uncond": ["unet", "output_uncond"], "cfg": 3.5 } },
                "step": { "type": "KSamplerStep", "inputs": { "state": ["loop", "state"], "denoised": ["cfg", "denoised"] } } },
            "next": { "x": ["step", "latent"], "state": ["step", "state"] } },
        "decode": { "type": "VAEDecode", "inputs": { "vae": ["ckpt", "vae"], "latent": ["loop", "x"] } },
        "save": { "type": "SaveImage", "inputs": { "image": ["decode", "image"], "filename_prefix": "native" } }
    }});
    let graph = out.path().join("native.json");
    std::fs::write(&graph, native.to_string()).unwrap();
    ok(&diffgraph(&[
        "run",
        graph.to_str().unwrap(),
        "--quiet",
        "--threads",
        "1",
        "--out",
        out.path().to_str().unwrap(),
    ]));
    let native = image::open(out.path().join("native.png"))
        .unwrap()
        .to_rgb8();
    assert!(
        comfy == native,
        "the workflow's image differs from the native loop's"
    );
    let pixels = comfy.as_raw();
    assert!(pixels.iter().any(|&p| p != pixels[0]), "a flat image");
}

#[test]
fn convert_prints_the_native_graph_with_the_ksampler_loop() {
    let text = ok(&diffgraph(&[
        "convert",
        WORKFLOW,
        "--set",
        "4.ckpt_name=shapes-ldm",
        "--set",
        "3.cfg=5",
    ]));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let nodes = &doc["nodes"];
    assert_eq!(nodes["3"]["type"], "Loop");
    assert_eq!(nodes["3:sigmas"]["type"], "KSchedule");
    assert_eq!(nodes["3:start"]["inputs"]["sampler_name"], "euler");
    let unet = &nodes["3"]["body"]["3:unet"];
    assert_eq!(unet["type"], "UNetStep");
    assert_eq!(nodes["3"]["body"]["3:cfg"]["inputs"]["cfg"], 5);
    assert_eq!(
        unet["inputs"]["uncond"],
        serde_json::json!(["7", "conditioning"])
    );
    assert_eq!(
        nodes["9"]["inputs"]["image"],
        serde_json::json!(["8", "image"])
    );
    // What convert prints is a graph diffgraph validates as it is.
    let registry = common::registry_with(&[
        "diffgraph_nodes_core",
        "diffgraph_nodes_sampling",
        "diffgraph_nodes_sd",
    ]);
    let checked =
        diffgraph::parse_graph(&text, &[], &registry, true).unwrap_or_else(|e| panic!("{e}"));
    assert!(checked.graph.node("3:step").is_some());
    // denoise 0.5: KSchedule cuts ComfyUI's schedule (the last 20 of 40 steps).
    let half = ok(&diffgraph(&[
        "convert",
        WORKFLOW,
        "--set",
        "4.ckpt_name=shapes-ldm",
        "--set",
        "3.denoise=0.5",
    ]));
    let half: serde_json::Value = serde_json::from_str(&half).unwrap();
    assert_eq!(half["nodes"]["3:sigmas"]["inputs"]["denoise"], 0.5);
    assert_eq!(half["nodes"]["3:start"]["type"], "KSamplerStart");
    // A native graph is not converted.
    assert!(refused(&diffgraph(&["convert", "graphs/demo.json"])).contains("already a native"));
}

#[test]
fn an_unsupported_node_type_is_one_error_naming_it() {
    let mut wf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(WORKFLOW)).unwrap()).unwrap();
    wf["10"] =
        serde_json::json!({"class_type": "UpscaleModelLoader", "inputs": {"model_name": "x.pth"}});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wf.json");
    std::fs::write(&path, wf.to_string()).unwrap();
    let err = refused(&diffgraph(&[
        "validate",
        path.to_str().unwrap(),
        "--set",
        "4.ckpt_name=shapes-ldm",
    ]));
    assert!(err.contains("1 problem:"), "{err}");
    assert!(
        err.contains("node `10`: ComfyUI node type `UpscaleModelLoader` is not supported"),
        "{err}"
    );
}

#[test]
fn a_missing_checkpoint_names_the_file_and_the_folders_searched() {
    let models = tempfile::tempdir().unwrap();
    let dir = models.path().to_str().unwrap();
    let err = refused(&diffgraph(&["validate", WORKFLOW, "--models", dir]));
    assert!(err.contains("node `4`, input `ckpt_name`"), "{err}");
    assert!(
        err.contains("`v1-5-pruned-emaonly.safetensors` not found"),
        "{err}"
    );
    assert!(err.contains(&format!("{dir}/checkpoints")), "{err}");
    assert!(err.contains("available: shapes-ldm"), "{err}");
}

#[test]
fn errors_name_the_workflows_ids_and_inputs() {
    let err = refused(&diffgraph(&[
        "validate",
        WORKFLOW,
        "--set",
        "4.ckpt_name=shapes-ldm",
        "--set",
        "3.steps=0",
        "--set",
        "3.sampler_name=no_such_sampler",
        "--set",
        "5.width=wide",
        "--set",
        "8.samples=[\"6\", 0]",
    ]));
    for line in [
        "node `3`, input `steps`: value 0 smaller than min of 1",
        "node `3`, input `sampler_name`: value not in list: \"no_such_sampler\"",
        "node `5`, input `width`: expected an int",
        "node `8`, input `samples`: return type mismatch: expected LATENT",
    ] {
        assert!(err.contains(line), "{line}\n{err}");
    }
    // Neither format: says what the file looks like.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.json");
    std::fs::write(&path, r#"{"prompt": {"3": {}}}"#).unwrap();
    let err = refused(&diffgraph(&["validate", path.to_str().unwrap()]));
    assert!(err.contains("ComfyUI API workflow"), "{err}");
    assert!(err.contains("the fields `prompt`"), "{err}");
}

/// A PNG as ComfyUI's SaveImage writes it: the API workflow in a tEXt
/// chunk `prompt` (CRC-32 as the PNG spec's annex D).
fn png_with_prompt(prompt: &str) -> Vec<u8> {
    let mut png = Vec::new();
    image::RgbImage::new(2, 2)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let iend = png.len() - 12;
    let mut chunk = b"tEXt".to_vec();
    chunk.extend(b"prompt\0");
    chunk.extend(prompt.bytes());
    let crc = chunk.iter().fold(!0u32, |mut c, &b| {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        c
    });
    let mut out = png[..iend].to_vec();
    out.extend(((chunk.len() - 4) as u32).to_be_bytes());
    out.extend(&chunk);
    out.extend((!crc).to_be_bytes());
    out.extend(&png[iend..]);
    out
}

#[test]
fn a_png_with_a_comfyui_prompt_is_a_workflow() {
    let wf = std::fs::read_to_string(repo().join(WORKFLOW)).unwrap();
    let png = png_with_prompt(&wf);
    image::load_from_memory(&png).expect("still a valid PNG");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ComfyUI_00001_.png");
    std::fs::write(&path, png).unwrap();
    let out = ok(&diffgraph(&[
        "validate",
        path.to_str().unwrap(),
        "--set",
        "4.ckpt_name=shapes-ldm",
    ]));
    assert!(out.contains("valid"), "{out}");
}

#[test]
fn extra_model_paths_yaml_points_at_an_existing_install() {
    let models = common::tiny_sd1_models_folder();
    let yaml = models.path().join("extra_model_paths.yaml");
    std::fs::write(
        &yaml,
        "comfyui:\n    base_path: ./\n    checkpoints: |\n        nowhere/\n        checkpoints/\n",
    )
    .unwrap();
    let out = ok(&diffgraph(&[
        "validate",
        WORKFLOW,
        "--models",
        yaml.to_str().unwrap(),
    ]));
    assert!(out.contains("valid"), "{out}");
}
