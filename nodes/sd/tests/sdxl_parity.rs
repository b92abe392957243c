//! SDXL components against diffusers/transformers, fp32 on the CPU, on the
//! tiny random-weight base and refiner of tests/fixtures/sdxl (made by
//! scripts/fixtures/make_sdxl_fixtures.py): the two text encoders
//! (`encode_prompt`: concatenated penultimate hidden states and the
//! projected pooled output; an empty prompt and one over 77 tokens), the
//! U-Nets with time ids (base: sizes and crop; refiner: aesthetic score) at
//! an even and an odd latent size, loaded from the diffusers folders and,
//! for the base, from the single-file checkpoint. Tolerance 1e-4 max abs.
use diffgraph_nodes_sd::nodes::sdxl_loader::{self, LoadedXl};
use diffgraph_nodes_sd::unet::Added;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;
const PROMPTS: [&str; 3] = [
    "a small red circle in the top left on a blue background",
    "",
    "LONG",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sdxl")
}

fn refs() -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join("reference/components.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn load(path: &Path, reference: Option<&Path>) -> LoadedXl {
    sdxl_loader::load(path, reference, Kind::Float, Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn prompt(i: usize) -> String {
    match PROMPTS[i] {
        "LONG" => ["a very long prompt about shapes and colours"; 12].join(" "),
        p => p.to_string(),
    }
}

fn check_text(model: &LoadedXl, name: &str, refs: &BTreeMap<String, Tensor>) -> Vec<String> {
    let text = model.text.as_ref().unwrap();
    let mut report = Vec::new();
    for i in 0..PROMPTS.len() {
        let out = text.encode(&prompt(i), 0).unwrap();
        let e1 = max_abs(&out.context, &refs[&format!("{name}_prompt_embeds_{i}")]);
        let e2 = max_abs(&out.pooled, &refs[&format!("{name}_pooled_{i}")]);
        report.push(format!(
            "{name} prompt {i}: context {e1:.2e}, pooled {e2:.2e}"
        ));
        assert!(e1 <= TOLERANCE && e2 <= TOLERANCE, "{report:#?}");
    }
    report
}

fn check_unet(model: &LoadedXl, name: &str, refs: &BTreeMap<String, Tensor>) -> Vec<String> {
    let mut report = Vec::new();
    for size in ["8x12", "7x9"] {
        let get = |k: &str| &refs[&format!("{name}_{size}_{k}")];
        let added = Added {
            text_embeds: get("pooled"),
            time_ids: get("ids"),
        };
        let out = model
            .unet
            .try_forward_added(get("x"), 417.0, get("ctx"), Some(&added))
            .unwrap();
        let err = max_abs(&out, get("out"));
        report.push(format!("{name} U-Net {size}: {err:.2e}"));
        assert!(err <= TOLERANCE, "{report:#?}");
    }
    report
}

#[test]
fn base_and_refiner_folders_match_diffusers() {
    let refs = refs();
    let base = load(&fixtures().join("sdxl-tiny"), None);
    let refiner = load(&fixtures().join("sdxl-refiner-tiny"), None);
    let mut report = check_text(&base, "base", &refs);
    report.extend(check_text(&refiner, "refiner", &refs));
    report.extend(check_unet(&base, "base", &refs));
    report.extend(check_unet(&refiner, "refiner", &refs));
    println!("{}", report.join("\n"));
    assert!(refiner.text.as_ref().unwrap().first.is_none());
}

#[test]
fn single_file_matches_the_folder() {
    let refs = refs();
    let folder = fixtures().join("sdxl-tiny");
    let single = load(&fixtures().join("sdxl-tiny.safetensors"), Some(&folder));
    let mut report = check_text(&single, "base", &refs);
    report.extend(check_unet(&single, "base", &refs));
    println!("{}", report.join("\n"));
    assert_eq!(single.vae.as_ref().unwrap().config.scaling_factor, 0.13025);
}

#[test]
fn conditioning_of_the_wrong_model_is_refused() {
    let refs = refs();
    let refiner = load(&fixtures().join("sdxl-refiner-tiny"), None);
    let get = |k: &str| &refs[&format!("base_8x12_{k}")];
    // The base's 6 time ids given to the refiner (5 expected).
    let added = Added {
        text_embeds: get("pooled"),
        time_ids: get("ids"),
    };
    let ctx = &refs["refiner_8x12_ctx"];
    let err = refiner
        .unet
        .try_forward_added(get("x"), 417.0, ctx, Some(&added))
        .unwrap_err();
    assert!(err.contains("time ids") && err.contains("refiner"), "{err}");
    let err = refiner.unet.try_forward(get("x"), 417.0, ctx).unwrap_err();
    assert!(err.contains("needs the pooled text embedding"), "{err}");
}

#[test]
fn single_file_errors_list_every_bad_key() {
    let dir = std::env::temp_dir().join(format!("sdxl-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut tensors: Vec<(String, Tensor)> =
        Tensor::read_safetensors(fixtures().join("sdxl-tiny.safetensors")).unwrap();
    tensors.retain(|(k, _)| k != "model.diffusion_model.label_emb.0.0.weight");
    tensors.push((
        "conditioner.embedders.0.transformer.bogus".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    ));
    tensors.push((
        "cond_stage_model.something".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    ));
    let path = dir.join("broken.safetensors");
    Tensor::write_safetensors(&tensors, &path).unwrap();
    assert!(sdxl_loader::is_sdxl(&path));
    let err = match sdxl_loader::load(&path, None, Kind::Float, Device::Cpu) {
        Err(e) => e,
        Ok(_) => panic!("a broken file loaded"),
    };
    std::fs::remove_dir_all(&dir).ok();
    for needle in [
        "conditioner.embedders.0.transformer.bogus",
        "cond_stage_model.something",
        "unrecognised keys (2)",
    ] {
        assert!(err.contains(needle), "{needle} not in: {err}");
    }
}
