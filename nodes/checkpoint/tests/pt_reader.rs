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

/// A Lightning checkpoint of CompVis' LatentDiffusion made by
/// scripts/fixtures/make_ldm_ckpt_fixtures.py: callbacks keyed by
/// Lightning's ModelCheckpoint class, numpy scalars, optimizer and scheduler
/// states and an OmegaConf config beside `state_dict`. The state dict is
/// read; the rest is skipped unbuilt, while the strict reader refuses it.
#[test]
fn reads_a_compvis_lightning_checkpoint_skipping_its_other_objects() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/ldm/ckpt/uncond.ckpt");
    let sd = read_state_dict(&path).unwrap();
    let w = &sd["model.diffusion_model.out.2.weight"];
    assert_eq!(w.size(), [3, 32, 3, 3]);
    assert_eq!(w.kind(), Kind::Half);
    assert!(sd.contains_key("first_stage_model.quantize.embedding.weight"));
    assert!(sd.contains_key("model_ema.decay"));
    assert!(sd
        .keys()
        .all(|k| !k.starts_with("optimizer") && !k.starts_with("callbacks")));
    // The same pickle through the strict reader: the first foreign global refuses it.
    let file = std::fs::File::open(&path).unwrap();
    let mut zip = zip::ZipArchive::new(file).unwrap();
    let name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl"))
        .unwrap()
        .to_string();
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name(&name).unwrap(), &mut data).unwrap();
    let err = diffgraph_checkpoint::pickle::unpickle(&data).unwrap_err();
    assert!(
        err.contains(
            "refused the global `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`"
        ),
        "{err}"
    );
    assert!(diffgraph_checkpoint::pickle::unpickle_skipping(&data).is_ok());
}
