//! Executor overhead, measured (not asserted): per-node cost on a chain of
//! 10,000 trivial plugin nodes, and per-iteration cost of a 1,000-iteration
//! loop. Run: `cargo bench -p diffgraph --bench overhead`.
use diffgraph::{Executor, Registry, Silent};
use std::time::Instant;

fn plugin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let p = dir.join(format!("lib{name}.so"));
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release --workspace` first",
        p.display()
    );
    p
}

fn chain(n: usize) -> String {
    let mut nodes = vec![r#""n0": {"type": "AddInt", "inputs": {"a": 0}}"#.to_string()];
    for i in 1..n {
        nodes.push(format!(
            r#""n{i}": {{"type": "AddInt", "inputs": {{"a": ["n{}", "sum"]}}}}"#,
            i - 1
        ));
    }
    nodes.push(format!(
        r#""out": {{"type": "Sink", "inputs": {{"x": ["n{}", "sum"]}}}}"#,
        n - 1
    ));
    format!(r#"{{"nodes": {{{}}}}}"#, nodes.join(","))
}

fn looped(iters: usize) -> String {
    format!(
        r#"{{"nodes": {{
        "l": {{"type": "Loop", "inputs": {{"over": {iters}, "acc": 0}},
              "body": {{"add": {{"type": "AddInt", "inputs": {{"a": ["l", "acc"]}}}}}},
              "next": {{"acc": ["add", "sum"]}}}},
        "out": {{"type": "Sink", "inputs": {{"x": ["l", "acc"]}}}}}}}}"#
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    diffgraph::device::init();
    let mut registry = Registry::new();
    registry
        .load_file(&plugin("diffgraph_testnodes"))
        .expect("fixture plugin");
    let threads = tch::get_num_threads();
    println!("diffgraph executor overhead (release build, libtorch threads: {threads})");

    let n = 10_000;
    let text = chain(n);
    let t = Instant::now();
    let checked = diffgraph::parse_graph(&text, &[], &registry, true).expect("valid");
    let validate_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let plan = diffgraph::exec::Plan::new(&checked, None).expect("plan");
    let plan_s = t.elapsed().as_secs_f64();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..7 {
        let mut exec = Executor::new(registry.clone());
        let t = Instant::now();
        let out = exec.run_plan(&plan, &Silent).expect("run");
        cold.push(t.elapsed().as_secs_f64());
        assert_eq!(out.executed.len(), n + 1);
        let t = Instant::now();
        let out = exec.run_plan(&plan, &Silent).expect("run");
        warm.push(t.elapsed().as_secs_f64());
        assert_eq!(out.cached.len(), n);
    }
    let per = |s: f64| s / n as f64 * 1e6;
    println!("chain of {n} AddInt plugin nodes:");
    println!("  parse + validate      {:8.2} µs/node", per(validate_s));
    println!("  plan                  {:8.2} µs/node", per(plan_s));
    println!(
        "  run (executing)       {:8.2} µs/node   (median of 7; target <= 2)",
        per(median(cold))
    );
    println!("  run (all cached)      {:8.2} µs/node", per(median(warm)));

    let iters = 1_000;
    let checked = diffgraph::parse_graph(&looped(iters), &[], &registry, true).expect("valid");
    let plan = diffgraph::exec::Plan::new(&checked, None).expect("plan");
    let mut times = Vec::new();
    for _ in 0..21 {
        let mut exec = Executor::new(registry.clone());
        let t = Instant::now();
        exec.run_plan(&plan, &Silent).expect("run");
        times.push(t.elapsed().as_secs_f64());
    }
    println!("loop of {iters} iterations, body = one AddInt plugin node:");
    println!("  per iteration         {:8.2} µs/iter   (median of 21; target <= 5; includes the node call)", median(times) / iters as f64 * 1e6);
}
