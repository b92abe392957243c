//! `--threads`, the default thread count from the available cores, and how
//! libtorch's OpenMP threads come to wait passively: the `diffgraph`
//! launcher sets the policy before the engine starts (`src/bin/launcher.rs`),
//! the engine started directly re-executes itself (`diffgraph::threads`).
mod common;

use std::process::{Command, Output};

fn run_sink(envs: &[(&str, &str)], wrapper: Option<&[&str]>, extra: &[&str]) -> Output {
    run_sink_with(&common::diffgraph_bin(), envs, wrapper, extra)
}

/// `BIN run` on a one-node graph of the test plugin.
fn run_sink_with(
    bin: &std::path::Path,
    envs: &[(&str, &str)],
    wrapper: Option<&[&str]>,
    extra: &[&str],
) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.json");
    std::fs::write(
        &g,
        r#"{"nodes": {"s": {"type": "Sink", "inputs": {"x": 1}}}}"#,
    )
    .unwrap();
    let tn = common::plugin_path("diffgraph_testnodes");
    let mut cmd = match wrapper {
        Some(w) => {
            let mut c = Command::new(w[0]);
            c.args(&w[1..]).arg(bin);
            c
        }
        None => Command::new(bin),
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

/// How many times libgomp started in the process (it prints its settings at
/// each start with OMP_DISPLAY_ENV), and the last spin count it read.
fn libgomp_starts(stderr: &str) -> (usize, Option<String>) {
    let starts = stderr.matches("OPENMP DISPLAY ENVIRONMENT BEGIN").count();
    let spin = stderr.lines().rfind(|l| l.contains("GOMP_SPINCOUNT"));
    (starts, spin.map(|l| l.trim().to_string()))
}

#[test]
fn the_launcher_starts_libtorch_once() {
    // The launcher sets the policy and execs the engine: one libgomp start,
    // already passive (a re-execution would show two).
    let s = stderr(&run_sink(&[("OMP_DISPLAY_ENV", "verbose")], None, &[]));
    let (starts, spin) = libgomp_starts(&s);
    assert_eq!(starts, 1, "{s}");
    assert_eq!(spin.as_deref(), Some("GOMP_SPINCOUNT = '0'"), "{s}");
}

#[test]
fn the_engine_started_directly_re_executes_itself() {
    let engine = common::target_dir().join("diffgraph-engine");
    let s = stderr(&run_sink_with(
        &engine,
        &[("OMP_DISPLAY_ENV", "verbose")],
        None,
        &[],
    ));
    let (starts, spin) = libgomp_starts(&s);
    assert_eq!(starts, 2, "a spinning start, then the passive one: {s}");
    assert_eq!(spin.as_deref(), Some("GOMP_SPINCOUNT = '0'"), "{s}");
}

#[test]
fn the_launcher_without_its_engine_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("diffgraph");
    std::fs::copy(common::diffgraph_bin(), &lone).unwrap();
    let out = Command::new(&lone).arg("info").output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot start") && err.contains("diffgraph-engine"),
        "{err}"
    );
}

/// `diffgraph info`'s record of the environment the engine started with.
fn engine_environment(envs: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = Command::new(common::diffgraph_bin());
    cmd.args(["info", "--json"]);
    for k in [
        "OMP_WAIT_POLICY",
        "GLIBC_TUNABLES",
        "MALLOC_MMAP_MAX_",
        "MALLOC_TRIM_THRESHOLD_",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(envs.iter().copied());
    let out = cmd.output().expect("run diffgraph info");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info's json");
    doc["environment"].clone()
}

#[test]
fn the_launcher_sets_mallocs_tunables_and_keeps_the_users() {
    let ours = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615:glibc.malloc.hugetlb=1";
    let env = engine_environment(&[]);
    assert_eq!(env["GLIBC_TUNABLES"], ours, "{env}");
    assert_eq!(env["OMP_WAIT_POLICY"], "passive", "{env}");
    // Other tunables are kept, ours appended.
    let env = engine_environment(&[("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")]);
    assert_eq!(
        env["GLIBC_TUNABLES"],
        format!("glibc.cpu.hwcaps=-AVX512F:{ours}")
    );
    // A user who sets one of the malloc tunables sets them all.
    let env = engine_environment(&[("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")]);
    assert_eq!(env["GLIBC_TUNABLES"], "glibc.malloc.hugetlb=0");
    let env = engine_environment(&[("MALLOC_MMAP_MAX_", "65536")]);
    assert_eq!(env["GLIBC_TUNABLES"], serde_json::Value::Null, "{env}");
}
