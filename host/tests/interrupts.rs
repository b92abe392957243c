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
        r#"{"nodes": {"a": {"type": "AddInt", "inputs": {"a": 1}}, "z": {"type": "Sleep", "inputs": {"x": ["a", "sum"], "ms": 60000}}, "s": {"type": "Sink", "inputs": {"x": ["z", "ms"]}}}}"#,
    )
    .unwrap();
    let plugins = common::plugin_path("diffgraph_testnodes");
    let mut child = Command::new(common::diffgraph_bin())
        .args([
            "run",
            graph.to_str().unwrap(),
            "--plugins",
            plugins.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Start-up (libtorch, probing and loading plugins) takes seconds on a
    // loaded machine: wait until the node before Sleep reports it is done
    // (the Ctrl-C handler is in place by then), then let Sleep start.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("] a: ") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("node `a` done");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    sigint(child.id());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first Ctrl-C waits for the node"
    );
    sigint(child.id());
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    let stderr = reader.join().unwrap();
    assert!(
        stderr.contains("interrupted twice, exiting now"),
        "{stderr}"
    );
}

/// Raises the run's interrupt flag as node `target` starts.
struct InterruptAt<'a> {
    target: &'a str,
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl diffgraph::Observer for InterruptAt<'_> {
    fn event(&self, e: &diffgraph::Event) {
        if let diffgraph::Event::NodeStart { id, .. } = e {
            if *id == self.target {
                self.flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// The long built-in nodes check the interrupt between their steps
/// (`diffgraph_sdk::interrupt::check`): the loader between tensors, the U-Net
/// and the VAE between blocks. An interrupt raised as such a node starts ends
/// that node itself, at its first check; a node that did not check would run
/// to its end and the run would stop before the next node instead.
#[test]
fn an_interrupt_ends_a_long_model_node_inside_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("graphs/demo.json"))
        .unwrap()
        .replace(
            "\"models/shapes-ldm\"",
            &format!("{:?}", root.join("models/shapes-ldm")),
        )
        // The loop is not under test: 2 steps instead of 20.
        .replace("\"steps\": 20", "\"steps\": 2");
    let dir = tempfile::tempdir().unwrap();
    let mut exec = diffgraph::Executor::new(common::registry_with(&[
        "diffgraph_nodes_core",
        "diffgraph_nodes_sampling",
        "diffgraph_nodes_sd",
    ]));
    exec.set_output_dir(dir.path().to_string_lossy());
    let checked = diffgraph::parse_graph(&text, &[], &exec.registry, true).unwrap();
    // In graph order, so each target's upstream nodes are cached by then.
    for target in ["ckpt", "unet", "decode"] {
        let observer = InterruptAt {
            target,
            flag: exec.interrupt_flag(),
        };
        let started = Instant::now();
        match exec.run(&checked, None, &observer) {
            Err(diffgraph::RunError::Interrupted { node }) => assert_eq!(node, target),
            Err(e) => panic!("{target}: expected an interruption, got {e}"),
            Ok(_) => panic!("{target}: the run was not interrupted"),
        }
        eprintln!("{target}: interrupted after {:?}", started.elapsed());
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing is written by an interrupted run"
    );
}
