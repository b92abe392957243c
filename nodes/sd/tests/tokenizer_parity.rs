//! CLIP tokenizer parity with transformers' CLIPTokenizer: ids exactly equal on
//! tests/fixtures/sd/reference/tokenizer.json (empty, punctuation, non-ASCII,
//! Unicode whitespace, special tokens, over 77 tokens), for the SD 1 and SD 2
//! tokenizers, read from the diffusers folders and from the bundled BPE file.
use diffgraph_nodes_sd::tokenizer::{ClipTokenizer, END_OF_TEXT};
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sd")
}

fn cases() -> Vec<Value> {
    let path = fixtures().join("reference/tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).unwrap();
    json["cases"].as_array().unwrap().clone()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn check(tok: &ClipTokenizer, model: &str, source: &str) {
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let prompt = case["prompt"].as_str().unwrap();
        let want_full = ids(&case[format!("{model}_full")]);
        let mut got_full = vec![tok.bos];
        got_full.extend(tok.encode(prompt));
        got_full.push(tok.eos);
        if got_full != want_full {
            failures.push(format!(
                "{prompt:?} unpadded:\n  got  {got_full:?}\n  want {want_full:?}"
            ));
        }
        let want = ids(&case[model]);
        let got = tok.encode_padded(prompt);
        if got != want {
            failures.push(format!(
                "{prompt:?} padded:\n  got  {got:?}\n  want {want:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{model} ({source}): {} mismatches\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{model} ({source}): {} prompts, ids identical", cases.len());
}

#[test]
fn sd1_folder_tokenizer_matches_transformers() {
    let tok = ClipTokenizer::from_folder(&fixtures().join("sd1-tiny/tokenizer")).unwrap();
    assert_eq!(
        (tok.bos, tok.eos, tok.pad, tok.max_length),
        (49406, 49407, 49407, 77)
    );
    check(&tok, "sd1", "folder");
}

#[test]
fn sd2_folder_tokenizer_matches_transformers() {
    let tok = ClipTokenizer::from_folder(&fixtures().join("sd2v-tiny/tokenizer")).unwrap();
    assert_eq!(
        (tok.bos, tok.eos, tok.pad, tok.max_length),
        (49406, 49407, 0, 77)
    );
    check(&tok, "sd2v", "folder");
}

#[test]
fn bundled_bpe_matches_transformers() {
    check(
        &ClipTokenizer::bundled(END_OF_TEXT).unwrap(),
        "sd1",
        "bundled BPE",
    );
    check(&ClipTokenizer::bundled("!").unwrap(), "sd2v", "bundled BPE");
}

#[test]
fn truncation_keeps_the_end_token_last() {
    let tok = ClipTokenizer::bundled(END_OF_TEXT).unwrap();
    let ids = tok.encode_padded(&"word ".repeat(200));
    assert_eq!(ids.len(), 77);
    assert_eq!((ids[0], ids[76]), (49406, 49407));
    assert!(ids[1..76].iter().all(|&i| i != 49407));
}

#[test]
fn unknown_pad_token_is_an_error() {
    let err = ClipTokenizer::bundled("<|pad|>").err().unwrap();
    assert!(err.contains("<|pad|>"), "{err}");
}
