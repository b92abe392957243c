//! Shared helpers for integration tests: finding the built plugins and
//! running graphs given as JSON text.
#![allow(dead_code)]
pub mod comfy_support;
pub mod core_support;
pub mod shapes;

use diffgraph::{Executor, Registry, RunOutcome, Silent};
use std::path::PathBuf;

/// target/<profile>/, where cargo puts the plugin libraries and the binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Path of the built plugin library `lib<crate_name>.so`.
pub fn plugin_path(crate_name: &str) -> PathBuf {
    let p = target_dir().join(format!("lib{crate_name}.so"));
    assert!(p.exists(), "{} is missing: build the workspace first (`cargo build --release --workspace`, which scripts/test.sh does)", p.display());
    p
}

/// A registry with the given plugin crates loaded (e.g. "diffgraph_nodes_core").
pub fn registry_with(crates: &[&str]) -> Registry {
    diffgraph::device::init();
    let mut r = Registry::new();
    for c in crates {
        r.load_file(&plugin_path(c))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    r
}

/// Validates and runs graph text on `exec`, returning its outcome.
pub fn run_text(exec: &mut Executor, text: &str, targets: Option<&[&str]>) -> RunOutcome {
    let checked =
        diffgraph::parse_graph(text, &[], &exec.registry, false).unwrap_or_else(|e| panic!("{e}"));
    exec.run(&checked, targets, &Silent)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The path of the `diffgraph` binary built next to the tests.
pub fn diffgraph_bin() -> PathBuf {
    let p = target_dir().join("diffgraph");
    assert!(
        p.exists(),
        "{} is missing: build the workspace first",
        p.display()
    );
    p
}

/// Validates `text` against `registry`; returns the errors (panics if it was valid).
pub fn graph_errors(text: &str, registry: &Registry) -> Vec<diffgraph::GraphError> {
    match diffgraph::parse_graph(text, &[], registry, true) {
        Ok(_) => panic!("expected validation errors for {:.300}", text),
        Err(e) => e.0,
    }
}

/// The one error of `kind` that `text` has (panics unless exactly one).
pub fn one_error(
    text: &str,
    registry: &Registry,
    kind: diffgraph::graph::ErrorKind,
) -> diffgraph::GraphError {
    let errs = graph_errors(text, registry);
    let found: Vec<_> = errs.iter().filter(|e| e.kind == kind).cloned().collect();
    assert_eq!(found.len(), 1, "expected one {kind:?} in {errs:#?}");
    found[0].clone()
}

/// A models folder holding the tiny SD 1 fixture as ComfyUI's default
/// workflow's checkpoint (`checkpoints/v1-5-pruned-emaonly.safetensors`),
/// with its diffusers folder as the sidecar config.
pub fn tiny_sd1_models_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = dir.path().join("checkpoints");
    std::fs::create_dir_all(&ckpts).unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd");
    std::os::unix::fs::symlink(
        fixtures.join("sd1-tiny.safetensors"),
        ckpts.join("v1-5-pruned-emaonly.safetensors"),
    )
    .unwrap();
    std::os::unix::fs::symlink(fixtures.join("sd1-tiny"), ckpts.join("v1-5-pruned-emaonly"))
        .unwrap();
    dir
}
