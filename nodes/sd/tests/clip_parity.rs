//! CLIP text encoder parity with transformers' CLIPTextModel (fp32, CPU),
//! against tests/fixtures/sd/reference/text_encoder_{sd1,sd2v}.safetensors and
//! the prompt embeddings of txt2img_{sd1,sd2v}.safetensors (diffusers'
//! encode_prompt), written by scripts/fixtures/make_sd_fixtures.py.
use diffgraph_nodes_sd::clip::{ids_tensor, Activation, ClipConfig, ClipTextModel};
use diffgraph_nodes_sd::tokenizer::ClipTokenizer;
use diffgraph_nodes_sd::weights::Weights;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sd")
}

fn reference(name: &str) -> BTreeMap<String, Tensor> {
    Weights::read_safetensors(&fixtures().join("reference").join(name)).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn check(what: &str, got: &Tensor, want: &Tensor) {
    let d = max_abs(got, want);
    println!("{what}: max abs diff {d:.3e}");
    assert!(d <= TOLERANCE, "{what}: max abs diff {d:e} > {TOLERANCE:e}");
}

/// The `params` metadata entry of a safetensors file (JSON).
fn params(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    serde_json::from_str(header["__metadata__"]["params"].as_str().unwrap()).unwrap()
}

fn folder_model(model: &str) -> ClipTextModel {
    ClipTextModel::load_folder(
        &fixtures().join(model).join("text_encoder"),
        Kind::Float,
        Device::Cpu,
    )
    .unwrap()
}

fn parity(model: &str, name: &str, activation: Activation) {
    tch::set_num_threads(1);
    let clip = folder_model(model);
    assert_eq!(clip.config.activation, activation);
    let r = reference(&format!("text_encoder_{name}.safetensors"));
    let ids = &r["input_ids"];
    check(
        &format!("{name} last_hidden_state"),
        &clip.forward(ids, 0).unwrap(),
        &r["last_hidden_state"],
    );
    for skip in [1, 2] {
        check(
            &format!("{name} clip_skip {skip}"),
            &clip.forward(ids, skip).unwrap(),
            &r[&format!("clip_skip_{skip}")],
        );
    }
    for layers in 0..=clip.config.num_layers {
        let want = &r[&format!("hidden_states_{layers}")];
        check(
            &format!("{name} hidden_states[{layers}]"),
            &clip.hidden_state(ids, layers).unwrap(),
            want,
        );
    }
    assert!(clip.forward(ids, clip.config.num_layers + 1).is_err());

    // Tokenizer + encoder against diffusers' encode_prompt in the pipeline run.
    let tok = ClipTokenizer::from_folder(&fixtures().join(model).join("tokenizer")).unwrap();
    let path = fixtures().join(format!("reference/txt2img_{name}.safetensors"));
    let (p, r) = (params(&path), Weights::read_safetensors(&path).unwrap());
    for (prompt, key) in [
        ("prompt", "prompt_embeds"),
        ("negative_prompt", "negative_prompt_embeds"),
    ] {
        let ids = ids_tensor(
            &[tok.encode_padded(p[prompt].as_str().unwrap())],
            Device::Cpu,
        )
        .unwrap();
        check(
            &format!("{name} encode_prompt {prompt}"),
            &clip.forward(&ids, 0).unwrap(),
            &r[key],
        );
    }
}

#[test]
fn sd1_text_encoder_matches_transformers() {
    parity("sd1-tiny", "sd1", Activation::QuickGelu);
}

#[test]
fn sd2_text_encoder_matches_transformers() {
    parity("sd2v-tiny", "sd2v", Activation::Gelu);
}

/// SD 1 single-file checkpoints hold the same names under
/// `cond_stage_model.transformer.`: identical outputs, config from the shapes.
#[test]
fn sd1_single_file_text_encoder_equals_folder() {
    let prefix = "cond_stage_model.transformer.text_model.";
    let all = Weights::read_safetensors(&fixtures().join("sd1-tiny.safetensors")).unwrap();
    let mine: BTreeMap<String, Tensor> = all
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .collect();
    let mut w = Weights::new(mine, Kind::Float, Device::Cpu, "sd1-tiny.safetensors");
    let config = ClipConfig::infer(&w, prefix, Activation::QuickGelu).unwrap();
    let folder = folder_model("sd1-tiny");
    assert_eq!(config, folder.config);
    let single = ClipTextModel::load(&mut w, prefix, &config);
    w.finish().unwrap();
    let ids = &reference("text_encoder_sd1.safetensors")["input_ids"];
    assert!(single
        .forward(ids, 0)
        .unwrap()
        .equal(&folder.forward(ids, 0).unwrap()));
}

#[test]
fn wrong_weights_are_reported_together() {
    let mut tensors =
        Weights::read_safetensors(&fixtures().join("sd1-tiny/text_encoder/model.safetensors"))
            .unwrap();
    tensors.remove("text_model.final_layer_norm.bias");
    tensors.insert(
        "text_model.extra".into(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    );
    tensors.insert(
        "text_model.encoder.layers.0.mlp.fc1.bias".into(),
        Tensor::zeros([3], (Kind::Float, Device::Cpu)),
    );
    let config = folder_model("sd1-tiny").config;
    let mut w = Weights::new(tensors, Kind::Float, Device::Cpu, "broken");
    ClipTextModel::load(&mut w, "text_model.", &config);
    let err = w.finish().unwrap_err();
    for part in [
        "final_layer_norm.bias",
        "text_model.extra",
        "fc1.bias: expected [64], found [3]",
    ] {
        assert!(err.contains(part), "{err}");
    }
}

#[test]
fn too_many_tokens_is_an_error() {
    let clip = folder_model("sd1-tiny");
    let ids = Tensor::zeros([1, 78], (Kind::Int64, Device::Cpu));
    assert!(clip.forward(&ids, 0).is_err());
}

/// Half-precision compute runs on the CPU and stays near fp32.
#[test]
fn half_precision_compute_is_close() {
    let r = reference("text_encoder_sd2v.safetensors");
    for kind in [Kind::BFloat16, Kind::Half] {
        let dir = fixtures().join("sd2v-tiny/text_encoder");
        let clip = ClipTextModel::load_folder(&dir, kind, Device::Cpu).unwrap();
        let out = clip.forward(&r["input_ids"], 0).unwrap();
        assert_eq!(out.kind(), kind);
        let d = max_abs(&out, &r["last_hidden_state"]);
        println!("{kind:?}: max abs diff {d:.3e}");
        assert!(d < 0.1, "{kind:?}: max abs diff {d}");
    }
}
