//! The restricted .pt reader against torch.save files made by
//! scripts/fixtures/make_pt_fixtures.py: values equal torch's exactly, and
//! pickles that would run code are refused without running it.
use diffgraph_checkpoint::read_state_dict;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/checkpoint")
        .join(name)
}

fn expected() -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(fixture("expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

const KEYS: [&str; 8] = [
    "conv.bias",
    "conv.weight",
    "lin.weight",
    "lin.weight_t",
    "scalar",
    "slice",
    "steps",
    "tied.weight",
];

fn check(got: &BTreeMap<String, Tensor>, prefix: &str, kind: Kind) {
    let want = expected();
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), KEYS);
    for k in KEYS {
        let (g, w) = (&got[k], &want[&format!("{prefix}.{k}")]);
        assert_eq!(g.size(), w.size(), "{k}");
        assert_eq!(g.kind(), w.kind(), "{k}");
        assert!(g.equal(w), "{k} differs");
        if k != "steps" {
            assert_eq!(g.kind(), kind, "{k}");
        }
    }
}

#[test]
fn reads_fp32_state_dict_exactly() {
    check(
        &read_state_dict(&fixture("state_fp32.pt")).unwrap(),
        "fp32",
        Kind::Float,
    );
}

#[test]
fn reads_fp16_state_dict_exactly() {
    check(
        &read_state_dict(&fixture("state_fp16.pt")).unwrap(),
        "fp16",
        Kind::Half,
    );
}

#[test]
fn reads_safetensors_of_the_same_keys() {
    check(
        &read_state_dict(&fixture("state_fp32.safetensors")).unwrap(),
        "fp32",
        Kind::Float,
    );
}

#[test]
fn reads_the_state_dict_of_a_lightning_checkpoint() {
    check(
        &read_state_dict(&fixture("lightning.pt")).unwrap(),
        "fp32",
        Kind::Float,
    );
}

const MARKER: &str = "diffgraph_pickle_marker_must_not_exist";

#[test]
fn refuses_a_pickle_that_would_call_os_system() {
    let marker = Path::new(env!("CARGO_MANIFEST_DIR")).join(MARKER);
    let err = read_state_dict(&fixture("malicious.pt")).unwrap_err();
    assert!(err.contains("refused the global `posix.system`"), "{err}");
    assert!(err.contains("malicious.pt"), "{err}");
    assert!(!marker.exists() && !Path::new(MARKER).exists());
}

#[test]
fn refuses_builtins_exec_through_stack_global() {
    let err = read_state_dict(&fixture("malicious_reduce.pt")).unwrap_err();
    assert!(err.contains("refused the global `builtins.exec`"), "{err}");
    assert!(!Path::new(MARKER).exists());
}

#[test]
fn refuses_truncated_and_foreign_files() {
    let dir = tempdir();
    let bytes = std::fs::read(fixture("state_fp32.pt")).unwrap();
    let cut = dir.join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(read_state_dict(&cut).unwrap_err().contains("cut.pt"));
    let raw = dir.join("raw.pkl");
    std::fs::write(&raw, [0x80, 2, b'N', b'.']).unwrap();
    assert!(read_state_dict(&raw)
        .unwrap_err()
        .contains("raw pickle stream"));
    let txt = dir.join("x.txt");
    std::fs::write(&txt, "hello world").unwrap();
    assert!(read_state_dict(&txt).unwrap_err().contains("neither"));
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("diffgraph-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
