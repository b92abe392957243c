//! U-Net parity with diffusers' UNet2DConditionModel, fp32 on CPU, against
//! tests/fixtures/sd/reference/{sd1,sd2v}-unet.safetensors (written by
//! scripts/fixtures/make_unet_reference.py), and the load-error report.
use diffgraph_nodes_sd::unet::{Timestep, UNet, UNetConfig};
use diffgraph_nodes_sd::weights::Weights;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    match std::env::var_os("DIFFGRAPH_SD_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sd"),
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Checks every case `X` (X_sample, X_timestep, X_encoder_hidden_states,
/// X_out) of a reference file; `as_number` says which timesteps the script
/// passed as Python numbers rather than tensors.
fn check_cases(unet: &UNet, refs: &BTreeMap<String, Tensor>, label: &str, cases: &[(&str, bool)]) {
    for &(case, as_number) in cases {
        let get = |k: &str| &refs[&format!("{case}_{k}")];
        let t = get("timestep");
        let t_values = Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap();
        let timestep: Timestep = if as_number {
            t.double_value(&[]).into()
        } else {
            t.into()
        };
        let start = Instant::now();
        let out = unet.forward(get("sample"), timestep, get("encoder_hidden_states"));
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let d = max_abs(&out, get("out"));
        let shape = get("sample").size();
        println!(
            "{label} {case} {shape:?} t={t_values:?}: max abs diff {d:.3e} ({ms:.1} ms, 1 thread)"
        );
        assert!(
            d <= TOLERANCE,
            "{label} {case}: max abs diff {d:e} > {TOLERANCE:e}"
        );
    }
}

fn parity(model: &str, name: &str) {
    tch::set_num_threads(1);
    let root = fixtures();
    let unet = UNet::from_folder(&root.join(model).join("unet"), Kind::Float, Device::Cpu).unwrap();
    let refs = root.join("reference");
    let r = Weights::read_safetensors(&refs.join(format!("{name}-unet.safetensors"))).unwrap();
    // make_unet_reference.py passed a and b as Python numbers, c and d as tensors.
    let cases = [("a", true), ("b", true), ("c", false), ("d", false)];
    check_cases(&unet, &r, &format!("{name}-unet"), &cases);
    // The U-Net cases of make_sd_fixtures.py (all timesteps tensors), if present.
    let other = refs.join(format!("unet_{name}.safetensors"));
    if other.exists() {
        let r = Weights::read_safetensors(&other).unwrap();
        check_cases(
            &unet,
            &r,
            &format!("unet_{name}"),
            &[("a", false), ("b", false), ("c", false)],
        );
    }
}

#[test]
fn sd1_unet_matches_diffusers() {
    parity("sd1-tiny", "sd1");
}

#[test]
fn sd2v_unet_matches_diffusers() {
    parity("sd2v-tiny", "sd2v");
}

#[test]
fn wrong_checkpoint_lists_every_problem() {
    let dir = fixtures().join("sd1-tiny/unet");
    let config = UNetConfig::from_file(&dir.join("config.json")).unwrap();
    let mut tensors =
        Weights::read_safetensors(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let _ = tensors
        .remove("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")
        .unwrap();
    tensors.insert(
        "up_blocks.1.resnets.0.conv1.weight".into(),
        Tensor::zeros([32, 96, 3, 1], (Kind::Float, Device::Cpu)),
    );
    tensors.insert(
        "down_blocks.0.extra.weight".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    );
    let err = match UNet::load(
        &config,
        Weights::new(tensors, Kind::Float, Device::Cpu, "broken unet"),
    ) {
        Ok(_) => panic!("a broken checkpoint loaded"),
        Err(e) => e,
    };
    println!("{err}");
    assert!(
        err.contains(
            "missing keys (1): mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "up_blocks.1.resnets.0.conv1.weight: expected [32, 96, 3, 3], found [32, 96, 3, 1]"
        ),
        "{err}"
    );
    assert!(
        err.contains("unexpected keys (1): down_blocks.0.extra.weight"),
        "{err}"
    );
}

#[test]
fn config_problems_are_reported() {
    let with = |json: &str| UNetConfig::from_json(json).and_then(|c| c.plan().map(|_| ()));
    // diffusers refuses num_attention_heads (its attention_head_dim means heads).
    assert!(with(r#"{"num_attention_heads": 8}"#)
        .unwrap_err()
        .contains("num_attention_heads"));
    assert!(with(r#"{"attention_head_dim": [5, 10]}"#)
        .unwrap_err()
        .contains("attention_head_dim"));
    assert!(with(r#"{"addition_embed_type": "text_time"}"#)
        .unwrap_err()
        .contains("addition_embed_type"));
    assert!(
        with(r#"{"num_attention_heads": null, "attention_head_dim": [5, 10, 20, 20]}"#).is_ok()
    );
    let bad = BTreeMap::new();
    let config = UNetConfig::default();
    let err = UNet::load(
        &config,
        Weights::new(bad, Kind::Float, Device::Cpu, "empty"),
    )
    .err()
    .unwrap();
    assert!(err.contains("missing keys (686)"), "{err}");
}

/// tch tensors are Send but not Sync: a node holding a U-Net in an `Object`
/// wraps it (e.g. in a Mutex).
#[test]
fn unet_can_move_across_threads() {
    fn check<T: Send>() {}
    check::<UNet>();
}
