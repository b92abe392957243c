//! SDXL prompt weighting, 77-token chunks and `embedding:name` against
//! ComfyUI's own comfy/sdxl_clip.py + sd1_clip.py (`SDXLTokenizer.
//! tokenize_with_weights`, `SDXLClipModel.encode_token_weights`) run as the
//! oracle on the tiny SDXL base's two text encoders
//! (tests/fixtures/prompt_weights/sdxl, made by
//! scripts/fixtures/make_sdxl_prompt_weight_fixtures.py): the concatenated
//! weighted penultimate states and clip_g's pooled output of the first
//! chunk, for weights, nesting, escapes, clip_skip, 2- and 3-chunk prompts,
//! an SDXL embedding file (`clip_l` / `clip_g`) also in the first chunk, a
//! missing embedding and the empty prompt. Tolerance 1e-4 (fp32 CPU).
use diffgraph_nodes_sd::embeddings;
use diffgraph_nodes_sd::nodes::sdxl_loader;
use diffgraph_nodes_sd::weights::Weights;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn sdxl_weights_chunks_and_embeddings_match_comfyui() {
    tch::set_num_threads(1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let loaded =
        sdxl_loader::load(&root.join("sdxl/sdxl-tiny"), None, Kind::Float, Device::Cpu).unwrap();
    let text = loaded.text.unwrap();
    let dir = root.join("prompt_weights/sdxl");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let refs = Weights::read_safetensors(&dir.join("reference.safetensors")).unwrap();
    let folder = dir.join("embeddings").display().to_string();
    let none = BTreeMap::new();
    let lookup = |name: &str, width: i64| embeddings::find(Some(&folder), &none, name, width);
    let mut worst: f64 = 0.0;
    for (n, case) in cases.as_array().unwrap().iter().enumerate() {
        let prompt = case["prompt"].as_str().unwrap();
        let skip = case["clip_skip"].as_u64().unwrap() as usize;
        let out = text.encode_weighted(prompt, skip, &lookup).unwrap();
        let d = max_abs(&out.context, &refs[&format!("case_{n}")]);
        let p = max_abs(&out.pooled, &refs[&format!("case_{n}_pooled")]);
        println!(
            "case {n}: context {d:.3e}, pooled {p:.3e}, missing {:?}",
            out.missing
        );
        assert!(
            d <= TOLERANCE && p <= TOLERANCE,
            "case {n} {prompt:?}: {d:e} {p:e}"
        );
        assert_eq!(
            out.missing,
            if prompt.contains("missing_one") {
                vec!["missing_one".to_string()]
            } else {
                vec![]
            }
        );
        worst = worst.max(d).max(p);
    }
    println!("worst {worst:.3e}");
    // Weighted is not literal: the weights change the conditioning.
    let plain = text
        .encode_weighted("a photo of a cat", 0, &lookup)
        .unwrap();
    let heavy = text
        .encode_weighted("a (photo:1.5) of a cat", 0, &lookup)
        .unwrap();
    assert!(max_abs(&plain.context, &heavy.context) > 1e-3);
    assert_eq!(
        max_abs(&plain.pooled, &heavy.pooled),
        0.0,
        "pooled is unweighted"
    );
}
