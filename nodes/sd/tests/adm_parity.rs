//! The ADM family against guided-diffusion's own code
//! (scripts/fixtures/make_adm_fixtures.py, tests/fixtures/adm/):
//! - for every released checkpoint's configuration, the keys and shapes the
//!   loader expects equal the reference create_model / create_classifier's;
//! - tiny random configurations covering the options: U-Net outputs (eps and
//!   variance channels), classifier logits and the guidance gradient within
//!   1e-4 (fp32 CPU);
//! - a real torch.save state dict (float16) loaded through the restricted
//!   .pt reader.
use diffgraph_nodes_sd::family::adm::config::{preset, Flags, CLASSIFIER_PRESETS, MODEL_PRESETS};
use diffgraph_nodes_sd::family::adm::{load_classifier, load_unet};
use tch::{Device, Kind};

mod adm_common;
use adm_common::*;

const TOL: f64 = 1e-4;

#[test]
fn loader_keys_and_shapes_equal_the_reference_for_every_released_checkpoint() {
    let manifest = json("manifest.json");
    let names: Vec<&str> = MODEL_PRESETS
        .iter()
        .chain(CLASSIFIER_PRESETS.iter())
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(
        names.len(),
        manifest.len(),
        "a preset for every manifest entry"
    );
    for name in names {
        let entry = &manifest[name];
        assert_eq!(
            entry["flags"].as_str().unwrap(),
            preset(name).unwrap(),
            "{name}"
        );
        let tensors = shapes_only(&keys(entry));
        let r = if entry["kind"] == "model" {
            let arch = Flags::model(preset(name).unwrap())
                .unwrap()
                .unet_arch()
                .unwrap();
            load_unet(tensors, &arch, Device::Cpu, name).map(|_| ())
        } else {
            let arch = Flags::classifier(preset(name).unwrap())
                .unwrap()
                .classifier_arch()
                .unwrap();
            load_classifier(tensors, &arch, Device::Cpu, name).map(|_| ())
        };
        r.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn tiny_unets_match_the_reference() {
    let cfg = json("tiny.json");
    let io = inputs();
    for name in ["unet_a", "unet_b"] {
        let flags = Flags::model(&cfg[name]["flags"].to_string()).unwrap();
        let arch = flags.unet_arch().unwrap();
        let unet = load_unet(det_state_dict(&keys(&cfg[name])), &arch, Device::Cpu, name).unwrap();
        let y = arch.num_classes.map(|_| &io["y"]);
        let out = tch::no_grad(|| unet.forward(&io["x"], &io["t"], y));
        let want = &io[&format!("{name}.out")];
        let err = max_abs(&out, want);
        eprintln!(
            "{name}: max abs {err:e} (output scale {:.3})",
            want.abs().max().double_value(&[])
        );
        assert!(err <= TOL, "{name}: max abs {err:e}");
        assert_eq!(
            out.size()[1],
            if flags.bool("learn_sigma").unwrap() {
                6
            } else {
                3
            }
        );
    }
}

#[test]
fn tiny_classifiers_match_the_reference_logits_and_gradients() {
    let cfg = json("tiny.json");
    let io = inputs();
    for name in [
        "cls_attention",
        "cls_adaptive",
        "cls_spatial",
        "cls_spatial_v2",
    ] {
        let arch = Flags::classifier(&cfg[name]["flags"].to_string())
            .unwrap()
            .classifier_arch()
            .unwrap();
        let c =
            load_classifier(det_state_dict(&keys(&cfg[name])), &arch, Device::Cpu, name).unwrap();
        let logits = tch::no_grad(|| c.forward(&io["x"], &io["t"]));
        let err = max_abs(&logits, &io[&format!("{name}.logits")]);
        assert!(err <= TOL, "{name} logits: max abs {err:e}");
        let grad = cond_grad(|x| c.forward(x, &io["t"]), &io["x"], &io["y"]);
        let err = max_abs(&grad, &io[&format!("{name}.grad")]);
        eprintln!(
            "{name}: gradient max abs {err:e} (scale {:.3})",
            io[&format!("{name}.grad")].abs().max().double_value(&[])
        );
        assert!(err <= TOL, "{name} gradient: max abs {err:e}");
    }
}

#[test]
fn a_torch_save_fp16_state_dict_loads_through_the_restricted_reader() {
    let cfg = json("tiny.json");
    let io = inputs();
    let tensors =
        diffgraph_checkpoint::read_state_dict(&fixtures().join("tiny_classifier_fp16.pt")).unwrap();
    assert!(tensors.values().all(|t| t.kind() == Kind::Half));
    let arch = Flags::classifier(&cfg["pt_fp16"]["flags"].to_string())
        .unwrap()
        .classifier_arch()
        .unwrap();
    let c = load_classifier(tensors, &arch, Device::Cpu, "tiny_classifier_fp16.pt").unwrap();
    let logits = tch::no_grad(|| c.forward(&io["x"], &io["t"]));
    let err = max_abs(&logits, &io["pt_fp16.logits"]);
    assert!(err <= TOL, "max abs {err:e}");
}

#[test]
fn every_missing_unexpected_and_misshaped_key_is_listed() {
    let cfg = json("tiny.json");
    let mut keys = keys(&cfg["unet_a"]);
    keys.retain(|(k, _)| k != "label_emb.weight" && k != "out.2.bias");
    keys.push(("extra.weight".into(), vec![2]));
    keys.iter_mut()
        .find(|(k, _)| k == "time_embed.0.weight")
        .unwrap()
        .1 = vec![1, 1];
    let arch = Flags::model(&cfg["unet_a"]["flags"].to_string())
        .unwrap()
        .unet_arch()
        .unwrap();
    let err = load_unet(shapes_only(&keys), &arch, Device::Cpu, "bad.pt")
        .err()
        .unwrap();
    for part in [
        "bad.pt does not match the model",
        "missing keys (2): label_emb.weight, out.2.bias",
        "time_embed.0.weight: expected [128, 32], found [1, 1]",
        "unexpected keys (1): extra.weight",
    ] {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
}

#[test]
fn flags_are_checked_and_read_like_the_reference() {
    assert!(Flags::model(r#"{"image_sise": 64}"#)
        .unwrap_err()
        .contains("unknown flag `image_sise`"));
    assert!(Flags::model("--class_cond maybe")
        .unwrap_err()
        .contains("not a boolean"));
    let f = Flags::model(
        r#"{"class_cond": "True", "attention_resolutions": 16, "classifier_scale": 1.0}"#,
    )
    .unwrap();
    let a = f.unet_arch().unwrap();
    assert_eq!(a.num_classes, Some(1000));
    assert_eq!(a.attention_ds, vec![4]);
    assert_eq!(a.channel_mult, vec![1.0, 2.0, 3.0, 4.0]);
    assert!(Flags::model(r#"{"image_size": 32}"#)
        .unwrap()
        .unet_arch()
        .unwrap_err()
        .contains("unsupported image size"));
    assert!(preset("1024x1024_diffusion")
        .unwrap_err()
        .contains("64x64_diffusion"));
}

#[test]
fn committed_flag_files_equal_the_presets() {
    let dir = fixtures().join("../../../models/adm");
    for (name, _) in MODEL_PRESETS.iter().chain(CLASSIFIER_PRESETS.iter()) {
        let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        let preset_text = preset(name).unwrap();
        if name.ends_with("classifier") {
            let a = Flags::classifier(&text).unwrap().classifier_arch().unwrap();
            assert_eq!(
                a,
                Flags::classifier(preset_text)
                    .unwrap()
                    .classifier_arch()
                    .unwrap(),
                "{name}"
            );
        } else {
            let (f, p) = (
                Flags::model(&text).unwrap(),
                Flags::model(preset_text).unwrap(),
            );
            assert_eq!(f.unet_arch().unwrap(), p.unet_arch().unwrap(), "{name}");
            assert_eq!(f.int("diffusion_steps"), p.int("diffusion_steps"), "{name}");
            assert_eq!(f.str("noise_schedule"), p.str("noise_schedule"), "{name}");
            assert_eq!(f.bool("learn_sigma"), p.bool("learn_sigma"), "{name}");
            assert!(f.bool("learn_sigma").unwrap());
        }
    }
}
