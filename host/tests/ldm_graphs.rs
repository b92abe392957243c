//! The latent diffusion graphs run through their `--set` contract on the
//! tiny random-weight LDMs of tests/fixtures/ldm
//! (scripts/fixtures/make_ldm_fixtures.py), against diffusers:
//! graphs/ldm_unconditional.json equals `LDMPipeline` (DDIM, eta 0 and 1,
//! the step noise from a seeded generator) within 1e-3 on the latents the
//! VQ decoder gets and on the decoded image (fp32, CPU); and
//! graphs/ldm_class_conditional.json equals the same loop with class labels
//! and classifier-free guidance against a null class; and
//! graphs/ldm_text2img.json equals `LDMTextToImagePipeline` (LDMBert,
//! UNet2DConditionModel, KL autoencoder) at guidance 1 and 5.
mod common;

use diffgraph::graph::overrides::Override;
use diffgraph::{Executor, Silent};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-3;
const PLUGINS: &[&str] = &[
    "diffgraph_nodes_core",
    "diffgraph_nodes_sampling",
    "diffgraph_nodes_sd",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference() -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(root().join("tests/fixtures/ldm/reference.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn cases() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/ldm/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Runs `graph` with `sets`; returns the named outputs (node, port).
fn run(graph: &str, sets: &[String], wanted: &[(&str, &str)]) -> Vec<Tensor> {
    let text = std::fs::read_to_string(root().join("graphs").join(graph)).unwrap();
    let mut exec = Executor::new(common::registry_with(PLUGINS));
    let sets: Vec<Override> = sets.iter().map(|s| s.parse().expect("override")).collect();
    let checked = diffgraph::parse_graph(&text, &sets, &exec.registry, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let targets: Vec<&str> = wanted.iter().map(|(n, _)| *n).collect();
    let outcome = exec
        .run(&checked, Some(&targets), &Silent)
        .unwrap_or_else(|e| panic!("{e}"));
    wanted
        .iter()
        .map(|(node, port)| {
            let v = outcome
                .output(node, port)
                .unwrap_or_else(|| panic!("no {node}.{port}"));
            v.as_tensor()
                .expect("a tensor")
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
        })
        .collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn unconditional_graph_equals_ldm_pipeline() {
    let r = reference();
    let p = &cases()["pipeline"];
    let ckpt = root().join("tests/fixtures/ldm/ldm-uncond-tiny");
    for eta in [0, 1] {
        let sets = vec![
            format!("ckpt.path={}", ckpt.display()),
            format!("scheduler.steps={}", p["steps"]),
            format!("scheduler.eta={eta}.0"),
            format!("scheduler.seed={}", p["step_seed"]),
            format!("noise.seed={}", p["seed"]),
            format!("size.batch={}", p["batch"]),
        ];
        let out = run(
            "ldm_unconditional.json",
            &sets,
            &[("denoise", "latent"), ("decode", "image")],
        );
        // LDMPipeline hands the decoder latents / scaling_factor (default 0.18215).
        let latents = &out[0] / 0.18215;
        let err = max_abs(&latents, &r[&format!("pipeline_eta{eta}.decoder_input")]);
        // (The tiny random model's latents grow to ~200: the absolute bound is tight.)
        eprintln!("eta {eta}: latents max abs {err:.2e}");
        assert!(err <= TOLERANCE, "eta {eta}: latents max abs {err:e}");
        let err = max_abs(&out[1], &r[&format!("pipeline_eta{eta}.image")]);
        eprintln!("eta {eta}: image max abs {err:.2e}");
        assert!(err <= TOLERANCE, "eta {eta}: image max abs {err:e}");
    }
}

#[test]
fn class_conditional_graph_equals_the_guided_reference_loop() {
    let r = reference();
    let c = &cases()["class_pipeline"];
    let ckpt = root().join("tests/fixtures/ldm/ldm-class-tiny");
    let sets = vec![
        format!("ckpt.path={}", ckpt.display()),
        format!("label.value={}", c["labels"]),
        format!("null_label.value=[{}]", c["null"]),
        format!("guidance.value={}", c["guidance"]),
        format!("scheduler.steps={}", c["steps"]),
        format!("noise.seed={}", c["seed"]),
    ];
    let out = run(
        "ldm_class_conditional.json",
        &sets,
        &[("denoise", "latent"), ("decode", "image")],
    );
    let err = max_abs(&out[0], &r["class_pipeline.latents"]);
    eprintln!("class-conditional: latents max abs {err:.2e}");
    assert!(err <= TOLERANCE, "latents max abs {err:e}");
    let err = max_abs(&out[1], &r["class_pipeline.image"]);
    eprintln!("class-conditional: image max abs {err:.2e}");
    assert!(err <= TOLERANCE, "image max abs {err:e}");
}

#[test]
fn text_to_image_graph_equals_ldm_text_to_image_pipeline() {
    let r = reference();
    let t = &cases()["text2img"];
    let ckpt = root().join("tests/fixtures/ldm/ldm-text2im-tiny");
    for g in [1, 5] {
        let sets = vec![
            format!("ckpt.path={}", ckpt.display()),
            format!("prompt.text={}", t["prompt"].as_str().unwrap()),
            format!("guidance.value={g}.0"),
            format!("scheduler.steps={}", t["steps"]),
            format!("noise.seed={}", t["seed"]),
            format!("size.width={}", t["width"]),
            format!("size.height={}", t["height"]),
        ];
        let out = run(
            "ldm_text2img.json",
            &sets,
            &[("denoise", "latent"), ("decode", "image")],
        );
        // The pipeline decodes `1 / scaling_factor * latents` (0.18215).
        let latents = &out[0] * (1.0 / 0.18215);
        let err = max_abs(&latents, &r[&format!("text2img_g{g}.decoder_input")]);
        eprintln!("text2img g={g}: latents max abs {err:.2e}");
        assert!(err <= TOLERANCE, "g={g}: latents max abs {err:e}");
        let err = max_abs(&out[1], &r[&format!("text2img_g{g}.image")]);
        eprintln!("text2img g={g}: image max abs {err:.2e}");
        assert!(err <= TOLERANCE, "g={g}: image max abs {err:e}");
    }
}

/// The original CompVis checkpoints of tests/fixtures/ldm/ckpt
/// (scripts/fixtures/make_ldm_ckpt_fixtures.py, a Lightning `.ckpt` with its
/// YAML next to it) through the same graphs, `--set ckpt.path=NAME.ckpt`.
fn ckpt(name: &str) -> String {
    format!(
        "ckpt.path={}",
        root().join("tests/fixtures/ldm/ckpt").join(name).display()
    )
}

/// CompVis' outputs for the `.ckpt` fixtures.
fn ckpt_reference() -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(root().join("tests/fixtures/ldm/ckpt/reference.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// A graph's sampled latents and decoded image against CompVis' (1e-3).
fn check_samples(what: &str, out: &[Tensor], samples: &Tensor, image: &Tensor) {
    for (part, got, want) in [("samples", &out[0], samples), ("image", &out[1], image)] {
        let err = max_abs(got, want);
        eprintln!("{what}: {part} max abs {err:.2e}");
        assert!(err <= TOLERANCE, "{what}: {part} max abs {err:e}");
    }
}

/// graphs/ldm_unconditional.json on `uncond.ckpt` equals CompVis' own
/// DDIMSampler (10 steps, eta 0, the same x_T) within 1e-3.
#[test]
fn unconditional_graph_on_a_compvis_ckpt_equals_compvis_ddim() {
    let r = ckpt_reference();
    let sets: Vec<String> = vec![
        ckpt("uncond.ckpt"),
        "scheduler.steps=10".into(),
        "scheduler.eta=0.0".into(),
        "noise.seed=5".into(),
        "size.batch=2".into(),
    ];
    let out = run(
        "ldm_unconditional.json",
        &sets,
        &[("denoise", "latent"), ("decode", "image")],
    );
    check_samples(
        "CompVis ckpt, DDIM",
        &out,
        &r["uncond.ddim_samples"],
        &r["uncond.ddim_image"],
    );
}

/// graphs/ldm_class_conditional.json on `class.ckpt` (labels into the
/// U-Net's `num_classes` embedding, x0-parameterized): runs with guidance,
/// and the two labels give two different images. (Its U-Net and decoder
/// match CompVis in nodes/sd/tests/ldm_ckpt.rs; CompVis' DDIMSampler treats
/// an x0 model's output as eps, so it is no reference for this sampling.)
#[test]
fn class_conditional_graph_runs_a_compvis_ckpt() {
    let sets: Vec<String> = vec![
        ckpt("class.ckpt"),
        "label.value=[1, 7]".into(),
        "null_label.value=[9]".into(),
        "scheduler.steps=3".into(),
    ];
    let out = run("ldm_class_conditional.json", &sets, &[("decode", "image")]);
    assert_eq!(out[0].size(), [2, 3, 16, 16]);
    assert!(bool::try_from(out[0].isfinite().all()).unwrap());
    let d = max_abs(&out[0].get(0), &out[0].get(1));
    assert!(d > 1e-3, "labels 1 and 7 gave the same image ({d:e})");
}

/// graphs/ldm_text2img.json on CompVis' text-to-image `.ckpt` (`text.ckpt`:
/// spatial-transformer U-Net, BERTEmbedder, KL first stage) with the BERT
/// vocabulary given: CompVis' DDIMSampler with classifier-free guidance
/// 3.0 against the empty prompt, as scripts/txt2img.py samples, within
/// 1e-3. The reference drew x_T for two prompts at once; a batch of one
/// draws its first half (randn's draws concatenate), so prompt 0 is
/// compared.
#[test]
fn text_to_image_graph_on_a_compvis_ckpt_equals_compvis_ddim() {
    let r = ckpt_reference();
    let tokenizer = root().join("tests/fixtures/ldm/ldm-text2im-tiny/tokenizer");
    let sets: Vec<String> = vec![
        ckpt("text.ckpt"),
        format!("ckpt.tokenizer={}", tokenizer.display()),
        "prompt.text=a red cat eating a burger".into(),
        "guidance.value=3.0".into(),
        "scheduler.steps=10".into(),
        "scheduler.eta=0.0".into(),
        "noise.seed=5".into(),
    ];
    let out = run(
        "ldm_text2img.json",
        &sets,
        &[("denoise", "latent"), ("decode", "image")],
    );
    check_samples(
        "CompVis text-to-image ckpt, DDIM + CFG",
        &out,
        &r["text.ddim_samples"].narrow(0, 0, 1),
        &r["text.ddim_image"].narrow(0, 0, 1),
    );
}

/// graphs/ldm_class_conditional.json on CompVis' ImageNet-style `.ckpt`
/// (`cin.ckpt`: a ClassEmbedder into the cross-attention U-Net, VQ first
/// stage): classes 3 and 7 against the unconditional class 10 at guidance
/// 3.0 equal CompVis' DDIMSampler (10 steps, eta 0) within 1e-3.
#[test]
fn class_embedder_graph_on_a_compvis_ckpt_equals_compvis_ddim() {
    let r = ckpt_reference();
    let sets: Vec<String> = vec![
        ckpt("cin.ckpt"),
        "label.value=[3, 7]".into(),
        "null_label.value=[10]".into(),
        "guidance.value=3.0".into(),
        "scheduler.steps=10".into(),
        "scheduler.eta=0.0".into(),
        "noise.seed=5".into(),
    ];
    let out = run(
        "ldm_class_conditional.json",
        &sets,
        &[("denoise", "latent"), ("decode", "image")],
    );
    check_samples(
        "CompVis ClassEmbedder ckpt, DDIM + CFG",
        &out,
        &r["cin.ddim_samples"],
        &r["cin.ddim_image"],
    );
}
