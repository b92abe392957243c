//! Scale, measured (not asserted): chains of 10^3..10^6 AddInt nodes in both
//! id orders and 10^3..10^5 chained Loops, each stage timed (parse,
//! validate, plan, run) in µs/node, the CPU time of parse + validate (this
//! thread's: a loaded machine does not inflate it as it does wall time), and
//! the resident memory each stage adds in bytes/node (VmRSS from
//! /proc/self/status; the structures of earlier stages are kept alive, so
//! the deltas add up to what a run holds).
//! Run: `cargo bench -p diffgraph --bench scale` (MAX=100000 to stop early).
#[path = "../tests/common/chains.rs"]
mod chains;
#[path = "../tests/common/mod.rs"]
mod common;

use diffgraph::{Executor, Registry, Silent};
use std::time::Instant;

/// Resident memory in bytes.
fn rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// CPU seconds this thread has used (user + system, from
/// /proc/thread-self/stat in USER_HZ = 100 ticks): unlike wall time, a loaded
/// machine does not inflate it (only caches and frequency still vary).
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the parenthesised name: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

fn measure(label: &str, text: &str, nodes: usize, registry: &Registry) {
    let per = |s: f64| s * 1e6 / nodes as f64;
    let bytes = |b: i64| b as f64 / nodes as f64;
    let m0 = rss();
    let cpu0 = thread_cpu();
    let t = Instant::now();
    let graph = diffgraph::graph::model::parse(text).expect("parses");
    let (t_parse, m1) = (t.elapsed().as_secs_f64(), rss());
    let t = Instant::now();
    let checked = diffgraph::graph::validate(graph, registry, true).expect("valid");
    let (t_validate, m2) = (t.elapsed().as_secs_f64(), rss());
    let cpu_pv = thread_cpu() - cpu0;
    let t = Instant::now();
    let plan = diffgraph::exec::Plan::new(&checked, None).expect("plans");
    let (t_plan, m3) = (t.elapsed().as_secs_f64(), rss());
    let mut exec = Executor::new(registry.clone());
    let t = Instant::now();
    exec.run_plan(&plan, &Silent).expect("runs");
    let (t_run, m4) = (t.elapsed().as_secs_f64(), rss());
    println!(
        "{label:<28} {nodes:>9} | {:>6.2} {:>6.2} {:>6.2} {:>6.2} | {:>6.2} {:>6.2} | {:>6.0} {:>6.0} {:>6.0} {:>6.0}",
        per(t_parse),
        per(t_validate),
        per(t_plan),
        per(t_run),
        per(t_parse + t_validate),
        per(cpu_pv),
        bytes(m1 - m0),
        bytes(m2 - m1),
        bytes(m3 - m2),
        bytes(m4 - m3),
    );
    drop((plan, checked, exec));
}

fn main() {
    let registry = common::registry_with(&["diffgraph_testnodes"]);
    let max: usize = std::env::var("MAX")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1_000_000);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "diffgraph scale (release build; load average: {})",
        load.trim()
    );
    println!(
        "{:<28} {:>9} | {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} | {:>6} {:>6} {:>6} {:>6}",
        "graph",
        "nodes",
        "parse",
        "valid",
        "plan",
        "run",
        "p+v",
        "cpu",
        "parse",
        "valid",
        "plan",
        "run"
    );
    println!(
        "{:<38} | µs/node (wall){:>15} | µs/node (p+v) | bytes/node (resident memory added)",
        "", ""
    );
    for n in [1_000, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&n| n <= max)
    {
        for reverse in [false, true] {
            let text = chains::add_chain(n, reverse);
            let label = format!(
                "AddInt chain, ids {}",
                if reverse { "descending" } else { "ascending" }
            );
            measure(&label, &text, n + 1, &registry);
        }
    }
    parse_paths(max);
    for n in [1_000, 10_000, 100_000].into_iter().filter(|&n| n <= max) {
        for reverse in [false, true] {
            let text = chains::loop_chain(n, reverse);
            let label = format!(
                "Loop chain, ids {}",
                if reverse { "descending" } else { "ascending" }
            );
            // Each loop is two nodes (the loop and its body's AddInt).
            measure(&label, &text, 2 * n + 1, &registry);
        }
    }
}

/// The streaming parser against the full one (`parse_document` + `from_json`:
/// a serde_json `Value` tree, the duplicate-key scan, the tree walk) on the
/// same text, alternating, best of 3 each: a ratio that a loaded machine
/// disturbs less than absolute times.
fn parse_paths(max: usize) {
    use diffgraph::graph::model::{from_json, parse, parse_document};
    println!("parse paths (AddInt chain, ids ascending): µs/node, best of 3");
    for n in [10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&n| n <= max)
    {
        let text = chains::add_chain(n, false);
        let (mut fast, mut full) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            let t = Instant::now();
            drop(parse(&text).expect("parses"));
            fast = fast.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            drop(from_json(&parse_document(&text).expect("parses")).expect("builds"));
            full = full.min(t.elapsed().as_secs_f64());
        }
        let per = |s: f64| s * 1e6 / (n + 1) as f64;
        println!(
            "  {:>9} nodes: streaming {:>6.2}, full {:>6.2}, ratio {:.2}x",
            n + 1,
            per(fast),
            per(full),
            full / fast
        );
    }
}
