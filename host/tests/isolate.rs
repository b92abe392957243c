//! Native faults are contained: `run --isolate` turns a node that aborts,
//! segfaults, overflows its stack or calls exit() into a failed run naming
//! the node; `watch --isolate` survives a rebuilt plugin that crashes by
//! falling back to the previous generation; a library whose constructor
//! aborts during dlopen is refused (probed in a child process), not fatal.
//! Fixtures: `Crash` (nodes/testing), nodes/testing-crashy (a crashing
//! rebuild of the `clash` fixture), nodes/testing-ctor-crash.
mod common;

use serde_json::Value as Json;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `diffgraph ARGS` with a private probe cache (no state from other runs).
fn diffgraph(cache: &Path) -> Command {
    let mut cmd = Command::new(common::diffgraph_bin());
    cmd.env("DIFFGRAPH_CACHE", cache);
    cmd
}

fn testnodes() -> String {
    common::plugin_path("diffgraph_testnodes")
        .to_string_lossy()
        .into_owned()
}

const CRASH_GRAPH: &str = r#"{"nodes": {
    "a": {"type": "AddInt", "inputs": {"a": 1, "b": 2}},
    "boom": {"type": "Crash", "inputs": {"x": ["a", "sum"], "mode": "abort"}}}}"#;

fn run_isolated(dir: &Path, graph: &str, extra: &[&str]) -> Output {
    let file = dir.join("graph.json");
    std::fs::write(&file, graph).unwrap();
    diffgraph(&dir.join("cache"))
        .args(["run", &file.to_string_lossy(), "--isolate", "--json", "-q"])
        .args(["--plugins", &testnodes()])
        .args(["--out", &dir.join("out").to_string_lossy()])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn run_isolate_names_the_node_that_killed_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, how) in [
        ("abort", "signal 6 (SIGABRT)"),
        ("segfault", "signal 11 (SIGSEGV)"),
        // Rust's stack-overflow handler reports, then aborts.
        ("stack_overflow", "signal 6 (SIGABRT)"),
        ("exit", "exited with status 3"),
    ] {
        let out = run_isolated(
            dir.path(),
            CRASH_GRAPH,
            &["--set", &format!("boom.mode={mode}")],
        );
        assert_eq!(out.status.code(), Some(1), "{mode}: {out:?}");
        let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["ok"], false, "{mode}: {doc}");
        assert_eq!(doc["crashed"], true, "{mode}: {doc}");
        assert_eq!(doc["node"], "boom", "{mode}: {doc}");
        let error = doc["error"].as_str().unwrap();
        assert!(
            error.contains("node `boom` (Crash)") && error.contains(how),
            "{mode}: {error}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("error: node `boom` (Crash) crashed"),
            "{mode}: {stderr}"
        );
    }
}

#[test]
fn run_isolate_gives_the_same_outcome_as_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let graph = r#"{"nodes": {
        "a": {"type": "AddInt", "inputs": {"a": 40, "b": 2}},
        "out": {"type": "Sink", "inputs": {"x": ["a", "sum"]}}}}"#;
    let isolated = run_isolated(dir.path(), graph, &["--set", "a.b=3"]);
    assert!(isolated.status.success(), "{isolated:?}");
    let doc: Json = serde_json::from_slice(&isolated.stdout).unwrap();
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["outputs"]["out"]["x"], 43, "{doc}");
    assert_eq!(doc["executed"], serde_json::json!(["a", "out"]), "{doc}");
    // A node error (not a crash) is the same failed run as in process.
    let failing = r#"{"nodes": {"f": {"type": "Fail", "inputs": {"message": "no good"}}, "out": {"type": "Sink", "inputs": {"x": ["f", "never"]}}}}"#;
    let out = run_isolated(dir.path(), failing, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["node"], "f", "{doc}");
    assert!(doc.get("crashed").is_none(), "{doc}");
}

#[test]
fn a_library_whose_constructor_aborts_is_refused_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let bad = common::plugin_path("diffgraph_testnodes_ctor_crash");
    let cache = dir.path().join("cache");
    for pass in ["probed", "probed again (failures are not cached)"] {
        let out = diffgraph(&cache)
            .args(["nodes", "--json", "--plugins"])
            .arg(&bad)
            .args(["--plugins", &testnodes()])
            .output()
            .unwrap();
        // `nodes --json` prints no warnings; the good plugin is there.
        assert!(out.status.success(), "{pass}: {out:?}");
        let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
        assert!(doc.to_string().contains("\"AddInt\""), "{pass}");
        // Without --json the refusal is a warning naming the library and signal.
        let out = diffgraph(&cache)
            .args(["nodes", "--plugins"])
            .arg(&bad)
            .output()
            .unwrap();
        assert!(out.status.success(), "{pass}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("libdiffgraph_testnodes_ctor_crash.so")
                && stderr.contains("killed a separate process (killed by signal 6 (SIGABRT))"),
            "{pass}: {stderr}"
        );
    }
    // The libraries that survived are remembered by content hash, the
    // crashing one is not.
    let remembered = std::fs::read_to_string(cache.join("plugin-probes")).unwrap();
    assert_eq!(remembered.lines().count(), 1, "{remembered}");
}

/// A running `diffgraph watch --json`, its events as they come.
struct Watch {
    child: std::process::Child,
    events: mpsc::Receiver<Json>,
    seen: Vec<Json>,
}

impl Watch {
    fn wait(&mut self, what: &str, pred: impl Fn(&Json) -> bool) -> Json {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) => {
                    self.seen.push(ev.clone());
                    if pred(&ev) {
                        return ev;
                    }
                }
                Err(_) => panic!("timed out waiting for {what}; events:\n{:#?}", self.seen),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces `dst` as cargo does (a new file, then a rename).
fn install(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("tmp-copy");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

#[test]
fn watch_isolate_falls_back_when_a_rebuilt_plugin_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let lib = plugins.join("libfixture.so");
    install(&common::plugin_path("diffgraph_testnodes_clash"), &lib);
    let graph = dir.path().join("graph.json");
    // `clash/AddInt` adds 100 (the crashing rebuild aborts instead).
    std::fs::write(
        &graph,
        r#"{"nodes": {"a": {"type": "clash/AddInt", "inputs": {"a": 1, "b": 2}},
                      "out": {"type": "testing/Sink", "inputs": {"x": ["a", "sum"]}}}}"#,
    )
    .unwrap();
    let mut child = diffgraph(&dir.path().join("cache"))
        .args(["watch", &graph.to_string_lossy(), "--isolate", "--json"])
        .args(["--plugins", &plugins.to_string_lossy()])
        .args(["--plugins", &testnodes()])
        .args(["--out", &dir.path().join("out").to_string_lossy()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
    let first = w.wait("the first run", |e| e["event"] == "run");
    assert_eq!(first["outputs"]["out"]["x"], 103, "{first}");
    w.wait("watching", |e| e["event"] == "watching");

    install(&common::plugin_path("diffgraph_testnodes_crashy"), &lib);
    let reloaded = w.wait("the reload", |e| e["event"] == "reloaded");
    let fell = w.wait("the fall-back", |e| {
        e["event"] == "fell_back" || e["event"] == "run"
    });
    assert_eq!(fell["event"], "fell_back", "{fell}");
    assert_eq!(fell["node"], "a", "{fell}");
    assert!(
        fell["error"].as_str().unwrap().contains("SIGABRT"),
        "{fell}"
    );
    assert_eq!(fell["plugins"][0]["plugin"], "clash", "{fell}");
    assert_eq!(
        fell["plugins"][0]["crashed_generation"], reloaded["generation"],
        "{fell}"
    );
    // The generation first loaded, older than the crashing one.
    assert!(
        fell["plugins"][0]["generation"].as_u64() < reloaded["generation"].as_u64(),
        "{fell}"
    );
    let rerun = w.wait("the run on the previous generation", |e| {
        e["event"] == "run"
    });
    assert_eq!(rerun["outputs"]["out"]["x"], 103, "{rerun}");

    // A fixed rebuild is taken up again: the watcher is alive and serving.
    install(&common::plugin_path("diffgraph_testnodes_clash"), &lib);
    w.wait("the second reload", |e| e["event"] == "reloaded");
    let again = w.wait("a run", |e| {
        e["event"] == "run" || e["event"] == "run_failed"
    });
    assert_eq!(again["event"], "run", "{again}");
    assert_eq!(again["outputs"]["out"]["x"], 103, "{again}");
}
