//! Ctrl-C in the binary: the first stops the run at the next node, a second
//! exits at once even inside a node that never checks the flag.
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sigint(pid: u32) {
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("sleep.json");
    std::fs::write(
        &graph,
        r#"{"nodes": {"z": {"type": "Sleep", "inputs": {"ms": 60000}}, "s": {"type": "Sink", "inputs": {"x": ["z", "ms"]}}}}"#,
    )
    .unwrap();
    let plugins = common::plugin_path("diffgraph_testnodes");
    let mut child = Command::new(common::diffgraph_bin())
        .args([
            "run",
            graph.to_str().unwrap(),
            "--quiet",
            "--plugins",
            plugins.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    sigint(child.id());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first Ctrl-C waits for the node"
    );
    sigint(child.id());
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("interrupted twice, exiting now"),
        "{stderr}"
    );
}
