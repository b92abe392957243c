//! Prompt weighting, 77-token chunks and `embedding:name` against ComfyUI's
//! own comfy/sd1_clip.py (`tokenize_with_weights`, `encode_token_weights`)
//! run as the oracle on the tiny SD 1 text encoder
//! (tests/fixtures/prompt_weights, scripts/fixtures/make_prompt_weight_fixtures.py):
//! token ids and weights exactly, the conditioning within 1e-4 (fp32 CPU).
use diffgraph_nodes_sd::clip::{ClipTextModel, SkipEncoder};
use diffgraph_nodes_sd::embeddings;
use diffgraph_nodes_sd::prompt_weights::{self, Slot};
use diffgraph_nodes_sd::tokenizer::ClipTokenizer;
use diffgraph_nodes_sd::weights::Weights;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind};

const TOLERANCE: f64 = 1e-4;

#[test]
fn weights_chunks_and_embeddings_match_comfyui() {
    tch::set_num_threads(1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let tokenizer = ClipTokenizer::from_folder(&root.join("sd/sd1-tiny/tokenizer")).unwrap();
    let model = ClipTextModel::load_folder(
        &root.join("sd/sd1-tiny/text_encoder"),
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    let dir = root.join("prompt_weights");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let refs = Weights::read_safetensors(&dir.join("reference.safetensors")).unwrap();
    let folder = dir.join("embeddings").display().to_string();
    let none = BTreeMap::new();
    let lookup = |name: &str| embeddings::find(Some(&folder), &none, name, 32);
    for (n, case) in cases.as_array().unwrap().iter().enumerate() {
        let prompt = case["prompt"].as_str().unwrap();
        let chunks = prompt_weights::tokenize(&tokenizer, prompt, &lookup);
        let ids: Vec<Vec<i64>> = chunks
            .slots
            .iter()
            .map(|c| {
                c.iter()
                    .map(|(s, _)| match s {
                        Slot::Token(t) => *t,
                        Slot::Vector(_) => -1,
                    })
                    .collect()
            })
            .collect();
        let weights: Vec<Vec<f64>> = chunks
            .slots
            .iter()
            .map(|c| c.iter().map(|(_, w)| *w).collect())
            .collect();
        let want_ids: Vec<Vec<i64>> = serde_json::from_value(case["ids"].clone()).unwrap();
        let want_weights: Vec<Vec<f64>> = serde_json::from_value(case["weights"].clone()).unwrap();
        assert_eq!(ids, want_ids, "case {n} {prompt:?}: token ids");
        assert_eq!(weights, want_weights, "case {n} {prompt:?}: weights");
        let encoder = SkipEncoder {
            model: &model,
            clip_skip: case["clip_skip"].as_u64().unwrap() as usize,
        };
        let out = tch::no_grad(|| prompt_weights::encode(&encoder, &tokenizer, &chunks)).unwrap();
        let want = &refs[&format!("case_{n}")];
        assert_eq!(out.size(), want.size(), "case {n}");
        let d = (&out - want).abs().max().double_value(&[]);
        println!("case {n}: {} chunks, max abs diff {d:.3e}", ids.len());
        assert!(d <= TOLERANCE, "case {n} {prompt:?}: {d:e}");
    }
}

/// diffusers' token form (`LoadTextualInversion` attaches `<tiny>`): the
/// prompt that writes the token encodes as ComfyUI's `embedding:` form.
#[test]
fn attached_tokens_encode_as_the_embedding_form() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let tokenizer = ClipTokenizer::from_folder(&root.join("sd/sd1-tiny/tokenizer")).unwrap();
    let file = root.join("prompt_weights/embeddings/tiny_emb.safetensors");
    let mut attached = BTreeMap::new();
    attached.insert("<tiny>".to_string(), embeddings::read(&file, 32).unwrap());
    attached.insert("<tiny>_x".to_string(), embeddings::read(&file, 32).unwrap());
    let folder = root.join("prompt_weights/embeddings").display().to_string();
    let lookup = |name: &str| embeddings::find(Some(&folder), &attached, name, 32);
    let text = embeddings::rewrite_tokens("a <tiny> cat, (<tiny>:1.2) dog<tiny>_x", &attached);
    let via_token = prompt_weights::tokenize(&tokenizer, &text, &lookup);
    let via_name = prompt_weights::tokenize(
        &tokenizer,
        "a embedding:tiny_emb cat, (embedding:tiny_emb:1.2) dog embedding:tiny_emb",
        &lookup,
    );
    assert_eq!(via_token.slots, via_name.slots, "{text:?}");
    assert!(via_token.missing.is_empty());
    assert_eq!(via_token.vectors.len(), 6);
    // A wrong width is refused naming the tensors.
    let err = embeddings::read(&file, 768).unwrap_err();
    assert!(err.contains("emb_params [2, 32]"), "{err}");
}
