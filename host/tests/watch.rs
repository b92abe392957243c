//! `diffgraph watch` end to end: a fixture plugin's source is edited and
//! rebuilt with cargo (by `--build`), the new result appears while the
//! upstream counting node stays cached; a truncated library and a library of
//! another ABI version are refused while the old generation keeps serving;
//! Ctrl-C exits cleanly. Events are awaited (generous timeouts), never slept on.
mod common;

use serde_json::Value as Json;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PLUGIN_SOURCE: &str = r#"
use diffgraph_sdk::prelude::*;

/// The constant this fixture adds; the test edits this line.
const CONSTANT: i64 = 1;

struct AddConstant;
impl Node for AddConstant {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("AddConstant", "testing")
            .input(InputSpec::int("x"))
            .output(OutputSpec::new("y", PortType::Int))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![Value::Int(inputs.int("x")? + CONSTANT)])
    }
}

export_plugin!("reload-fixture", [AddConstant]);
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The environment a standalone plugin crate needs to build against the
/// project's libtorch (what .cargo/config.toml gives crates in the workspace).
fn build_env(cmd: &mut Command) -> &mut Command {
    let root = repo_root();
    let libtorch = root.join(".venv/libtorch");
    cmd.env("LIBTORCH", &libtorch)
        .env("LIBTORCH_CXX11_ABI", "1")
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", libtorch.join("lib").display()),
        )
        // Kept between test runs: only the first run compiles tch.
        .env("CARGO_TARGET_DIR", root.join("target/reload-fixture"))
}

fn write_crate(dir: &Path) {
    let sdk = repo_root().join("nodes/sdk");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"reload-fixture\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\ndiffgraph-sdk = {{ path = \"{}\" }}\n\n[workspace]\n",
            sdk.display()
        ),
    )
    .unwrap();
    // The workspace's lock file: the same dependency versions, all already downloaded.
    std::fs::copy(repo_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), PLUGIN_SOURCE).unwrap();
}

struct Watch {
    child: Child,
    events: mpsc::Receiver<Json>,
    seen: Vec<Json>,
}

impl Watch {
    /// The next event matching `pred`, within `timeout` (panics with every
    /// event seen so far otherwise).
    fn wait(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Json) -> bool) -> Json {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) => {
                    self.seen.push(ev.clone());
                    if pred(&ev) {
                        return ev;
                    }
                }
                Err(_) => panic!(
                    "timed out waiting for {what}; events so far:\n{:#?}",
                    self.seen
                ),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn names(ev: &Json, field: &str) -> Vec<String> {
    ev[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn is_run_with(ev: &Json, out: i64) -> bool {
    ev["event"] == "run" && ev["outputs"]["out"]["x"] == out
}

#[test]
fn watch_rebuilds_reloads_and_reruns_only_what_changed() {
    let krate = tempfile::tempdir().unwrap();
    write_crate(krate.path());
    let status = build_env(
        Command::new("cargo")
            .args(["build", "--release", "--offline"])
            .current_dir(krate.path()),
    )
    .status()
    .unwrap();
    assert!(status.success(), "building the fixture plugin failed");
    let lib_dir = repo_root().join("target/reload-fixture/release");
    let lib = lib_dir.join("libreload_fixture.so");
    assert!(lib.exists());

    let work = tempfile::tempdir().unwrap();
    let graph = work.path().join("graph.json");
    let graph_text = |a: i64| {
        format!(
            r#"{{"nodes": {{
            "src": {{"type": "AddInt", "inputs": {{"a": {a}, "b": 1}}}},
            "count": {{"type": "Count", "inputs": {{"x": ["src", "sum"]}}}},
            "add": {{"type": "AddConstant", "inputs": {{"x": ["count", "x"]}}}},
            "out": {{"type": "Sink", "inputs": {{"x": ["add", "y"]}}}}}}}}"#
        )
    };
    std::fs::write(&graph, graph_text(40)).unwrap();

    let mut cmd = Command::new(common::diffgraph_bin());
    cmd.args([
        "watch",
        &graph.to_string_lossy(),
        "--json",
        "--build",
        "--out",
        &work.path().to_string_lossy(),
    ])
    .args(["--plugins", &lib_dir.to_string_lossy()])
    .args([
        "--plugins",
        &common::plugin_path("diffgraph_testnodes").to_string_lossy(),
    ])
    .current_dir(krate.path())
    .stdout(Stdio::piped());
    let mut child = build_env(&mut cmd).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(ev) = serde_json::from_str::<Json>(&line) {
                let _ = tx.send(ev);
            }
        }
    });
    let mut w = Watch {
        child,
        events: rx,
        seen: Vec::new(),
    };
    let minute = Duration::from_secs(60);

    // First run: 40 + 1, then + CONSTANT (1).
    let first = w.wait("the first run", minute, |e| e["event"] == "run");
    assert_eq!(first["outputs"]["out"]["x"], 42, "{first}");
    w.wait("watching", minute, |e| e["event"] == "watching");

    // Edit the plugin's source: --build rebuilds it, the new library is reloaded.
    let edited = PLUGIN_SOURCE.replace("const CONSTANT: i64 = 1;", "const CONSTANT: i64 = 100;");
    std::fs::write(krate.path().join("src/lib.rs"), edited).unwrap();
    w.wait("the rebuild", minute, |e| e["event"] == "build");
    w.wait("the reload", 10 * minute, |e| {
        e["event"] == "reloaded" && e["plugin"] == "reload-fixture"
    });
    let rerun = w.wait("the re-run with the new constant", minute, |e| {
        is_run_with(e, 141)
    });
    assert!(
        names(&rerun, "cached").contains(&"count".to_string()),
        "the counting node re-ran: {rerun}"
    );
    assert!(
        names(&rerun, "cached").contains(&"src".to_string()),
        "{rerun}"
    );
    assert!(
        names(&rerun, "executed").contains(&"add".to_string()),
        "{rerun}"
    );

    // A truncated library is refused; the previous generation keeps serving.
    let bytes = std::fs::read(&lib).unwrap();
    std::fs::write(&lib, &bytes[..bytes.len() / 3]).unwrap();
    let refused = w.wait("refusal of a truncated library", minute, |e| {
        e["event"] == "reload_failed"
    });
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("shared library"),
        "{refused}"
    );
    std::fs::write(&graph, graph_text(50)).unwrap();
    let served = w.wait("a run served by the previous generation", minute, |e| {
        e["event"] == "run"
    });
    assert_eq!(served["outputs"]["out"]["x"], 151, "{served}");
    assert!(names(&served, "executed").contains(&"count".to_string()));

    // A library built for another ABI version is refused too.
    std::fs::copy(common::plugin_path("diffgraph_testnodes_bad_abi"), &lib).unwrap();
    let refused = w.wait("refusal of a wrong-ABI library", minute, |e| {
        e["event"] == "reload_failed"
    });
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("ABI version 999"),
        "{refused}"
    );

    // A graph edit that breaks validation is reported; fixing it resumes.
    std::fs::write(
        &graph,
        r#"{"nodes": {"out": {"type": "Sink", "inputs": {"x": ["nope", "y"]}}}}"#,
    )
    .unwrap();
    w.wait("the validation errors", minute, |e| {
        e["event"] == "graph_invalid"
    });
    std::fs::write(&graph, graph_text(50)).unwrap();
    let resumed = w.wait("the resumed run", minute, |e| e["event"] == "run");
    assert_eq!(resumed["outputs"]["out"]["x"], 151);
    assert!(
        names(&resumed, "cached").contains(&"count".to_string()),
        "{resumed}"
    );

    // Ctrl-C: a clean exit.
    let pid = w.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    w.wait("the stop", minute, |e| e["event"] == "stopped");
    let status = w.child.wait().unwrap();
    assert!(status.success(), "{status}");
    // Leave a good library behind for the next run (cargo will not relink on its own).
    std::fs::write(&lib, &bytes).unwrap();
}
