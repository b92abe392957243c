//! `--threads`, the default thread count from the available cores, and the
//! re-execution that makes libtorch's OpenMP threads wait passively
//! (`diffgraph::threads`).
mod common;

use std::process::{Command, Output};

fn run_sink(envs: &[(&str, &str)], wrapper: Option<&[&str]>, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    std::fs::write(
        &g,
        r#"{"nodes": {"s": {"type": "Sink", "inputs": {"x": 1}}}}"#,
    )
    .unwrap();
    let bin = common::diffgraph_bin();
    let tn = common::plugin_path("diffgraph_testnodes");
    let mut cmd = match wrapper {
        Some(w) => {
            let mut c = Command::new(w[0]);
            c.args(&w[1..]).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    cmd.arg("run").arg(&g).arg("--plugins").arg(&tn).args(extra);
    cmd.env_remove("OMP_WAIT_POLICY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run diffgraph")
}

fn stderr(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{s}");
    s
}

#[test]
fn default_threads_are_the_available_cores_and_openmp_waits_passively() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let s = stderr(&run_sink(&[], None, &[]));
    assert!(
        s.contains(&format!(
            "threads: {cores} ({cores} core(s) available; OpenMP wait policy passive)"
        )),
        "{s}"
    );
}

#[test]
fn a_wait_policy_the_user_set_is_kept() {
    let s = stderr(&run_sink(&[("OMP_WAIT_POLICY", "active")], None, &[]));
    assert!(s.contains("OpenMP wait policy active"), "{s}");
}

#[test]
fn threads_flag_sets_the_count_and_refuses_zero() {
    let s = stderr(&run_sink(&[], None, &["--threads", "1"]));
    assert!(s.contains("threads: 1 ("), "{s}");
    let out = run_sink(&[], None, &["--threads", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
}

#[test]
fn an_affinity_mask_of_one_core_means_one_thread() {
    if Command::new("taskset").arg("--version").output().is_err() {
        eprintln!("taskset (util-linux) not installed: affinity not tested here");
        return;
    }
    let s = stderr(&run_sink(&[], Some(&["taskset", "-c", "0"]), &[]));
    assert!(s.contains("threads: 1 (1 core(s) available"), "{s}");
}

#[test]
fn libgomp_itself_waits_passively() {
    // libgomp prints what it read at its start-up (OMP_DISPLAY_ENV): the
    // process that runs the graph (the re-executed one) does not spin.
    let s = stderr(&run_sink(&[("OMP_DISPLAY_ENV", "verbose")], None, &[]));
    let spin = s.lines().rfind(|l| l.contains("GOMP_SPINCOUNT"));
    assert_eq!(spin.map(str::trim), Some("GOMP_SPINCOUNT = '0'"), "{s}");
}
