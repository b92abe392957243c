//! The ADM family's half-precision torso (`use_fp16`, the loaders'
//! `precision`) against guided-diffusion run with `convert_to_fp16`
//! (scripts/fixtures/make_adm_fp16_fixtures.py, tests/fixtures/adm/fp16.safetensors):
//! U-Net outputs, classifier logits and guidance gradients of the tiny
//! configurations in float16 and in bfloat16, on CPU.
//!
//! The CPU's half-precision kernels depend on its instruction set: the
//! reference run on an AVX2-only AMD EPYC differs from the first one
//! (fp16.safetensors) by 1.2e-3 in float16 and 4e-3 in bfloat16. So each
//! kind of machine has its fixture from the same script
//! (fp16_avx2.safetensors: that AVX2 machine); the one nearest to this
//! machine's float16 U-Net is the reference ([`reference`]), and every
//! output must match it.
//!
//! Tolerance: the same libtorch kernels run on both sides; measured 0.0 max
//! abs for every output against the matching fixture, except that on a CPU
//! without bfloat16 arithmetic diffgraph runs bfloat16 products in float32
//! (`cpu_precision`): its bfloat16 U-Nets then differ by 5.5e-3 (the
//! classifiers' logits still by 0.0). Stated as one
//! half-precision ulp at the outputs' scale of ~1: TOL_HALF = 1e-3
//! (float16), TOL_BF16 = 8e-3 (bfloat16). The U-Net tests also check the half-precision output differs
//! from the float32 one (by 2e-3 for float16, 1e-2 to 2e-2 for bfloat16
//! here) by more than from the reference, so they fail if the torso
//! silently stays in float32.
use diffgraph_nodes_sd::family::adm::config::Flags;
use diffgraph_nodes_sd::family::adm::{load_classifier, load_unet, torso_kind};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

mod adm_common;
use adm_common::*;

const TOL_HALF: f64 = 1e-3;
const TOL_BF16: f64 = 8e-3;

fn cases() -> [(&'static str, Kind, f64); 2] {
    [
        ("float16", Kind::Half, TOL_HALF),
        ("bfloat16", Kind::BFloat16, TOL_BF16),
    ]
}

fn half_unet(name: &str, kind: Kind) -> Tensor {
    let cfg = json("tiny.json");
    let io = inputs();
    let arch = Flags::model(&cfg[name]["flags"].to_string())
        .unwrap()
        .unet_arch()
        .unwrap();
    let mut unet = load_unet(det_state_dict(&keys(&cfg[name])), &arch, Device::Cpu, name).unwrap();
    unet.convert_torso(kind);
    assert_eq!(unet.torso(), kind);
    let y = arch.num_classes.map(|_| &io["y"]);
    tch::no_grad(|| unet.forward(&io["x"], &io["t"], y))
}

/// The fp16*.safetensors fixture made on this kind of machine: the one
/// nearest to the float16 `unet_b` here (the output that tells the
/// instruction sets apart).
fn reference() -> BTreeMap<String, Tensor> {
    let here = half_unet("unet_b", Kind::Half);
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("fp16") && n.ends_with(".safetensors"))
        .collect();
    names.sort();
    let nearest = names
        .into_iter()
        .map(|n| {
            let f = tensors(&n);
            (max_abs(&here, &f["float16.unet_b.out"]), n, f)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("tests/fixtures/adm/fp16*.safetensors");
    eprintln!(
        "half-precision reference: {} (float16 unet_b within {:e})",
        nearest.1, nearest.0
    );
    nearest.2
}

#[test]
fn half_precision_unets_match_the_reference_convert_to_fp16() {
    let io = reference();
    let f32_io = inputs();
    for (dname, kind, tol) in cases() {
        for name in ["unet_a", "unet_b"] {
            let out = half_unet(name, kind);
            assert_eq!(out.kind(), Kind::Float, "the head computes in float32");
            let want = &io[&format!("{dname}.{name}.out")];
            let err = max_abs(&out, want);
            let vs_f32 = max_abs(&out, &f32_io[&format!("{name}.out")]);
            eprintln!("{dname} {name}: max abs {err:e} (vs float32 {vs_f32:e})");
            assert!(err <= tol, "{dname} {name}: max abs {err:e}");
            assert!(vs_f32 > err, "{dname} {name}: not computed in {kind:?}?");
        }
    }
}

#[test]
fn half_precision_classifiers_match_the_reference_logits_and_gradients() {
    let cfg = json("tiny.json");
    let io = reference();
    for (dname, kind, tol) in cases() {
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
            let mut c =
                load_classifier(det_state_dict(&keys(&cfg[name])), &arch, Device::Cpu, name)
                    .unwrap();
            c.convert_torso(kind);
            let logits = tch::no_grad(|| c.forward(&io["x"], &io["t"]));
            let err = max_abs(&logits, &io[&format!("{dname}.{name}.logits")]);
            eprintln!("{dname} {name}: logits max abs {err:e}");
            assert!(err <= tol, "{dname} {name} logits: max abs {err:e}");
            let grad = cond_grad(|x| c.forward(x, &io["t"]), &io["x"], &io["y"]);
            let want = &io[&format!("{dname}.{name}.grad")];
            let err = max_abs(&grad, want);
            eprintln!(
                "{dname} {name}: gradient max abs {err:e} (scale {:.3})",
                want.abs().max().double_value(&[])
            );
            assert!(err <= tol, "{dname} {name} gradient: max abs {err:e}");
        }
    }
}

#[test]
fn precision_choices_follow_the_flags_like_the_reference() {
    assert_eq!(torso_kind("float32", true).unwrap(), Kind::Float);
    assert_eq!(torso_kind("flags", true).unwrap(), Kind::Half);
    assert_eq!(torso_kind("flags", false).unwrap(), Kind::Float);
    assert_eq!(torso_kind("float16", false).unwrap(), Kind::Half);
    assert_eq!(torso_kind("bfloat16", false).unwrap(), Kind::BFloat16);
    let err = torso_kind("fp8", false).unwrap_err();
    assert!(err.contains("float32, flags, float16, bfloat16"), "{err}");
}
