//! ComfyUI's sampler nodes translated (`diffgraph::comfy`, the sampling
//! plugin's KSchedule / KSamplerStart / KModelInput / CFGDenoise /
//! KSamplerStep Loop) on the tiny SD fixture checkpoint: every implemented
//! sampler with every scheduler runs (the numbers themselves are checked
//! against ComfyUI's code in the sampling plugin's unit tests), the samplers
//! ComfyUI lists but diffgraph lacks are refused by name, and the node
//! families agree with one another as they do in ComfyUI: two
//! KSamplerAdvanced = one KSampler, SamplerCustom / SamplerCustomAdvanced =
//! KSampler, SplitSigmas halves = the whole run, and denoise < 1 on a
//! latent (img2img) runs from that latent.
mod common;

use diffgraph::comfy::ModelFolders;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Env {
    _models: tempfile::TempDir,
    out: tempfile::TempDir,
    folders: ModelFolders,
    registry: diffgraph::plugin::Registry,
    /// One executor for the whole test: its cache keeps the loaded checkpoint.
    exec: diffgraph::Executor,
}

fn env() -> Env {
    let models = tempfile::tempdir().unwrap();
    let ckpts = models.path().join("checkpoints");
    std::fs::create_dir_all(&ckpts).unwrap();
    let fixtures = repo().join("tests/fixtures/sd");
    std::os::unix::fs::symlink(
        fixtures.join("sd1-tiny.safetensors"),
        ckpts.join("tiny.safetensors"),
    )
    .unwrap();
    std::os::unix::fs::symlink(fixtures.join("sd1-tiny"), ckpts.join("tiny")).unwrap();
    let registry = common::registry_with(&[
        "diffgraph_nodes_core",
        "diffgraph_nodes_sampling",
        "diffgraph_nodes_sd",
    ]);
    let out = tempfile::tempdir().unwrap();
    let mut exec = diffgraph::Executor::new(registry.clone());
    exec.set_output_dir(out.path().to_string_lossy());
    Env {
        folders: ModelFolders::new(&[models.path().into()]),
        _models: models,
        out,
        registry,
        exec,
    }
}

/// The default workflow's loader, prompts, latent, decode and save around
/// `samplers` (whose last node must be id "3").
fn workflow(samplers: Value, prefix: &str) -> Value {
    let mut wf = json!({
        "4": { "class_type": "CheckpointLoaderSimple", "inputs": { "ckpt_name": "tiny.safetensors" } },
        "5": { "class_type": "EmptyLatentImage", "inputs": { "width": 32, "height": 32, "batch_size": 1 } },
        "6": { "class_type": "CLIPTextEncode", "inputs": { "clip": ["4", 1], "text": "a red circle" } },
        "7": { "class_type": "CLIPTextEncode", "inputs": { "clip": ["4", 1], "text": "blurry" } },
        "8": { "class_type": "VAEDecode", "inputs": { "samples": ["3", 0], "vae": ["4", 2] } },
        "9": { "class_type": "SaveImage", "inputs": { "filename_prefix": prefix, "images": ["8", 0] } },
    });
    for (k, v) in samplers.as_object().unwrap() {
        wf[k] = v.clone();
    }
    wf
}

fn ksampler(sampler: &str, scheduler: &str, steps: i64, denoise: f64, latent: Value) -> Value {
    json!({ "class_type": "KSampler", "inputs": {
        "model": ["4", 0], "seed": 42, "steps": steps, "cfg": 3.0, "sampler_name": sampler, "scheduler": scheduler,
        "positive": ["6", 0], "negative": ["7", 0], "latent_image": latent, "denoise": denoise } })
}

impl Env {
    fn checked(
        &self,
        wf: &Value,
    ) -> Result<diffgraph::graph::CheckedGraph, diffgraph::graph::GraphErrors> {
        diffgraph::parse_graph_with(&wf.to_string(), &[], &self.registry, true, &self.folders)
    }

    /// Runs the workflow; the bytes of the PNG it saved.
    fn image(&mut self, wf: &Value, prefix: &str) -> Vec<u8> {
        let checked = self.checked(wf).unwrap_or_else(|e| panic!("{prefix}: {e}"));
        let path = self.out.path().join(format!("{prefix}.png"));
        let _ = std::fs::remove_file(&path);
        self.exec
            .run(&checked, None, &diffgraph::Silent)
            .unwrap_or_else(|e| panic!("{prefix}: {e}"));
        std::fs::read(path).unwrap()
    }
}

/// Every sampler (with `karras`) and every scheduler (with `euler`) runs
/// through the translated Loop; every sampler x scheduler pair is checked
/// against ComfyUI's numbers in the sampling plugin's unit tests.
#[test]
fn every_implemented_sampler_and_scheduler_runs_and_the_rest_are_refused() {
    let mut e = env();
    let names = diffgraph_diffusion::comfy::names::SAMPLERS;
    let pairs = names.iter().map(|s| (*s, "karras")).chain(
        diffgraph_diffusion::comfy::SCHEDULER_NAMES
            .iter()
            .map(|s| ("euler", *s)),
    );
    for (sampler, scheduler) in pairs {
        let prefix = format!("{sampler}_{scheduler}");
        let wf = workflow(
            json!({ "3": ksampler(sampler, scheduler, 2, 1.0, json!(["5", 0])) }),
            &prefix,
        );
        assert!(e.image(&wf, &prefix).len() > 60, "{prefix}");
    }
    for sampler in diffgraph_diffusion::comfy::names::COMFY_SAMPLER_NAMES {
        if names.contains(sampler) {
            continue;
        }
        let wf = workflow(
            json!({ "3": ksampler(sampler, "normal", 2, 1.0, json!(["5", 0])) }),
            "x",
        );
        let err = e.checked(&wf).err().expect("refused");
        assert_eq!(err.0[0].input.as_deref(), Some("sampler_name"), "{err}");
        assert!(err.0[0].message.contains(sampler), "{err}");
    }
}

#[test]
fn two_advanced_samplers_are_one_ksampler() {
    let mut e = env();
    for sampler in ["euler", "heun"] {
        let whole = e.image(
            &workflow(
                json!({ "3": ksampler(sampler, "karras", 6, 1.0, json!(["5", 0])) }),
                "whole",
            ),
            "whole",
        );
        let adv = |id_latent: Value, add: &str, start: i64, end: i64, leftover: &str| {
            json!({ "class_type": "KSamplerAdvanced", "inputs": {
                "model": ["4", 0], "add_noise": add, "noise_seed": 42, "steps": 6, "cfg": 3.0, "sampler_name": sampler,
                "scheduler": "karras", "positive": ["6", 0], "negative": ["7", 0], "latent_image": id_latent,
                "start_at_step": start, "end_at_step": end, "return_with_leftover_noise": leftover } })
        };
        let split = workflow(
            json!({
                "10": adv(json!(["5", 0]), "enable", 0, 2, "enable"),
                "3": adv(json!(["10", 0]), "disable", 2, 10000, "disable"),
            }),
            "split",
        );
        let two = e.image(&split, "split");
        // One-step methods: bit for bit (multistep ones restart their history at the split, in ComfyUI too).
        assert_eq!(
            two, whole,
            "{sampler}: the split differs from the single KSampler"
        );
    }
}

#[test]
fn custom_sampling_nodes_give_the_ksamplers_image() {
    let mut e = env();
    let whole = e.image(
        &workflow(
            json!({ "3": ksampler("dpmpp_2m", "exponential", 5, 1.0, json!(["5", 0])) }),
            "k",
        ),
        "k",
    );
    let parts = json!({
        "20": { "class_type": "KSamplerSelect", "inputs": { "sampler_name": "dpmpp_2m" } },
        "21": { "class_type": "BasicScheduler", "inputs": { "model": ["4", 0], "scheduler": "exponential", "steps": 5, "denoise": 1.0 } },
        "22": { "class_type": "RandomNoise", "inputs": { "noise_seed": 42 } },
        "23": { "class_type": "CFGGuider", "inputs": { "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "cfg": 3.0 } },
        "3": { "class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["22", 0], "guider": ["23", 0], "sampler": ["20", 0], "sigmas": ["21", 0], "latent_image": ["5", 0] } },
    });
    assert_eq!(
        e.image(&workflow(parts.clone(), "adv"), "adv"),
        whole,
        "SamplerCustomAdvanced"
    );
    let mut custom = parts;
    custom["3"] = json!({ "class_type": "SamplerCustom", "inputs": {
        "model": ["4", 0], "add_noise": true, "noise_seed": 42, "cfg": 3.0, "positive": ["6", 0], "negative": ["7", 0],
        "sampler": ["20", 0], "sigmas": ["21", 0], "latent_image": ["5", 0] } });
    assert_eq!(
        e.image(&workflow(custom.clone(), "custom"), "custom"),
        whole,
        "SamplerCustom"
    );
    // SplitSigmas: the high sigmas with noise, then the low ones without.
    custom["24"] =
        json!({ "class_type": "SplitSigmas", "inputs": { "sigmas": ["21", 0], "step": 2 } });
    custom["25"] = custom["3"].clone();
    custom["25"]["inputs"]["sigmas"] = json!(["24", 0]);
    custom["3"]["inputs"]["sigmas"] = json!(["24", 1]);
    custom["3"]["inputs"]["add_noise"] = json!(false);
    custom["3"]["inputs"]["latent_image"] = json!(["25", 0]);
    custom["20"]["inputs"]["sampler_name"] = json!("euler");
    let euler = e.image(
        &workflow(
            json!({ "3": ksampler("euler", "exponential", 5, 1.0, json!(["5", 0])) }),
            "ke",
        ),
        "ke",
    );
    assert_eq!(
        e.image(&workflow(custom, "halves"), "halves"),
        euler,
        "SplitSigmas halves"
    );
}

#[test]
fn denoise_below_one_starts_from_the_latent() {
    let mut e = env();
    // Hires-fix shape: a second KSampler at denoise 0.5 refines the first's latent.
    let first = ksampler("euler", "normal", 4, 1.0, json!(["5", 0]));
    let refine = |denoise: f64| {
        workflow(
            json!({ "10": first, "3": ksampler("dpmpp_2m", "karras", 4, denoise, json!(["10", 0])) }),
            "r",
        )
    };
    let base = e.image(&workflow(json!({ "3": first }), "base"), "base");
    let half = e.image(&refine(0.5), "r");
    let tiny = e.image(&refine(0.01), "r");
    assert_ne!(half, base, "denoise 0.5 changes the image");
    assert_ne!(half, tiny);
    let doc = diffgraph::comfy::translate(refine(0.5), &[], &e.folders)
        .unwrap()
        .unwrap()
        .doc;
    assert_eq!(doc["nodes"]["3:sigmas"]["inputs"]["denoise"], 0.5);
    assert_eq!(
        doc["nodes"]["3:start"]["inputs"]["latent"],
        json!(["10", "latent"])
    );
}
