//! Helpers for the ComfyUI workflow tests run through the binary
//! (comfy_ui.rs; comfy.rs has its own copies until it is merged with the
//! other branches editing it).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const WORKFLOW: &str = "tests/fixtures/comfy/default-api-workflow.json";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `diffgraph ARGS` from the repository root, without $DIFFGRAPH_* settings.
pub fn diffgraph(args: &[&str]) -> Output {
    Command::new(super::diffgraph_bin())
        .args(args)
        .current_dir(repo())
        .env_remove("DIFFGRAPH_PLUGINS")
        .env_remove("DIFFGRAPH_MODELS")
        .output()
        .unwrap()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn refused(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[allow(unused_imports)]
pub use super::tiny_sd1_models_folder as models_folder;
