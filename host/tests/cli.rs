//! The `diffgraph` binary: device selection and the CUDA library, validation
//! output, `--set`, `nodes`, and running graphs end to end.
mod common;

use std::path::Path;
use std::process::{Command, Output};

fn diffgraph(args: &[&str]) -> Output {
    Command::new(common::diffgraph_bin())
        .args(args)
        .output()
        .expect("run diffgraph")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn testnodes() -> String {
    common::plugin_path("diffgraph_testnodes")
        .to_string_lossy()
        .into_owned()
}

fn write_graph(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// A one-node graph (the test plugin's `Sink`) in `dir`: what the device
/// tests run.
fn sink_graph(dir: &Path) -> String {
    write_graph(
        dir,
        "g.json",
        r#"{"nodes": {"s": {"type": "Sink", "inputs": {"x": 1}}}}"#,
    )
}

#[test]
fn the_cuda_library_is_loaded_at_start_up() {
    let out = diffgraph(&["info", "--json"]);
    assert!(out.status.success());
    let info = stdout_json(&out);
    let dir = info["libtorch_dir"].as_str().expect("libtorch dir");
    if Path::new(dir).join("libtorch_cuda.so").exists() {
        // Read from the process's own memory map, not from what we asked for.
        let mapped = info["cuda_library_mapped"]
            .as_str()
            .unwrap_or_else(|| panic!("libtorch_cuda.so not mapped: {info}"));
        assert!(mapped.ends_with("libtorch_cuda.so"));
        assert!(
            info["cuda_library"].as_str().unwrap().starts_with("loaded"),
            "{info}"
        );
    }
    assert!(
        info["abi"].as_str().unwrap().contains("libtorch=2.11.0"),
        "{info}"
    );
}

#[test]
fn device_cuda_without_a_gpu_fails_clearly_and_auto_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let g = sink_graph(dir.path());
    let tn = testnodes();
    let info = stdout_json(&diffgraph(&["info", "--json"]));
    let out = diffgraph(&["run", &g, "--device", "cuda", "--plugins", &tn]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if info["cuda_available"] == false {
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--device cuda was requested but CUDA is not available"),
            "{stderr}"
        );
        let auto = diffgraph(&["run", &g, "--device", "auto", "--plugins", &tn]);
        assert!(auto.status.success());
        assert!(String::from_utf8_lossy(&auto.stderr).contains("using device cpu (auto:"));
    } else {
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("using device cuda:0"));
    }
    let bad = diffgraph(&["run", &g, "--device", "tpu"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a device"));
}

#[test]
fn a_cpu_run_does_not_load_the_cuda_library() {
    // Loading libtorch_cuda.so (cuBLAS, the CUDA runtime) is ~0.3 s of a
    // process start; `--device cpu` (the default) never calls it. glibc's
    // LD_DEBUG=files lists every library the process opens.
    let info = stdout_json(&diffgraph(&["info", "--json"]));
    let dir = info["libtorch_dir"]
        .as_str()
        .expect("libtorch dir")
        .to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let g = sink_graph(tmp.path());
    let tn = testnodes();
    let opened = |device: &str| {
        let out = Command::new(common::diffgraph_bin())
            .args(["run", &g, "--device", device, "--plugins", &tn])
            .env("LD_DEBUG", "files")
            .output()
            .expect("run diffgraph");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr.contains("libtorch_cuda.so")
    };
    assert!(!opened("cpu"), "a CPU run opened libtorch_cuda.so");
    if Path::new(&dir).join("libtorch_cuda.so").exists() {
        assert!(opened("auto"), "--device auto must look for CUDA");
    }
}

#[test]
fn validate_reports_all_errors_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let g = write_graph(
        dir.path(),
        "bad.json",
        r#"{"nodes": {"a": {"type": "AddInnt"}, "b": {"type": "AddInt", "inputs": {"a": "x"}}, "s": {"type": "Sink", "inputs": {"x": ["b", "total"]}}}}"#,
    );
    let out = diffgraph(&["validate", &g, "--json", "--plugins", &testnodes()]);
    assert_eq!(out.status.code(), Some(2));
    let doc = stdout_json(&out);
    let kinds: Vec<&str> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 3, "{doc}");
    for k in [
        "unknown_node_type",
        "type_mismatch",
        "link_to_missing_output",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {doc}");
    }
    let text = diffgraph(&["validate", &g, "--plugins", &testnodes()]);
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(
        stderr.contains("node `b`, input `a`: constant of the wrong type (expected INT"),
        "{stderr}"
    );

    let missing = diffgraph(&["validate", "/nonexistent/graph.json"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/graph.json")
    );
}

#[test]
fn run_with_set_overrides_and_json_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let g = write_graph(
        dir.path(),
        "g.json",
        r#"{"nodes": {"a": {"type": "AddInt", "inputs": {"a": 1, "b": 2}}, "s": {"type": "Sink", "inputs": {"x": ["a", "sum"]}}}}"#,
    );
    let tn = testnodes();
    let out = diffgraph(&[
        "run",
        &g,
        "--plugins",
        &tn,
        "--json",
        "--quiet",
        "--set",
        "a.b=40",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = stdout_json(&out);
    assert_eq!(doc["outputs"]["s"]["x"], 41);
    let bad = diffgraph(&["run", &g, "--plugins", &tn, "--set", "a.b=\"str\""]);
    assert_eq!(bad.status.code(), Some(2));
    let nobody = diffgraph(&["run", &g, "--plugins", &tn, "--set", "zz.b=1"]);
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no node `zz`"));
}

#[test]
fn a_failing_node_exits_nonzero_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let g = write_graph(
        dir.path(),
        "p.json",
        r#"{"nodes": {"p": {"type": "Panic", "inputs": {"message": "oops"}}, "s": {"type": "Sink", "inputs": {"x": ["p", "never"]}}}}"#,
    );
    let out = diffgraph(&["run", &g, "--plugins", &testnodes()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node `p` (Panic) panicked") && stderr.contains("oops"),
        "{stderr}"
    );
}

#[test]
fn nodes_lists_every_type_with_ports() {
    let out = diffgraph(&["nodes", "--json", "--plugins", &testnodes()]);
    assert!(out.status.success());
    let doc = stdout_json(&out);
    assert_eq!(doc["ReadCounter"]["inputs"][1]["max"], 100.0);
    assert_eq!(doc["ReadCounter"]["outputs"][0]["type"], "INT");
    assert_eq!(doc["Count"]["plugin"], "testing");
    let bad_plugin = common::plugin_path("diffgraph_testnodes_bad_abi");
    let out = diffgraph(&[
        "nodes",
        "--plugins",
        &bad_plugin.to_string_lossy(),
        "--plugins",
        &testnodes(),
    ]);
    assert!(
        out.status.success(),
        "a refused plugin must not stop the host"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ABI version 999"));
}

#[test]
fn the_demo_graph_writes_a_png_and_prints_its_path() {
    let out_dir = tempfile::tempdir().unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    // The default plugins: the libdiffgraph_nodes_* libraries next to the binary.
    let out = Command::new(common::diffgraph_bin())
        .args([
            "run",
            "graphs/demo.json",
            "--quiet",
            "--out",
            &out_dir.path().to_string_lossy(),
        ])
        .env_remove("DIFFGRAPH_PLUGINS")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(printed, out_dir.path().join("demo.png").to_string_lossy());
    let png = std::fs::read(&printed).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, at bytes 16..24.
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert!(
        size(16) >= 64 && size(20) >= 64,
        "{}x{}",
        size(16),
        size(20)
    );
    // Only the PNG is left in the folder (the temporary file was renamed).
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 1);
}
