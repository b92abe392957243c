//! Scale: long chains validate, plan and run on a test thread's default
//! stack (2 MiB) in both id orders: every graph walk is iterative. Not timed
//! (speed is in host/benches/scale.rs and BENCHMARKS.md).
#[path = "common/chains.rs"]
mod chains;
mod common;

use diffgraph::{Executor, Silent, Value};

fn run(text: &str, expect: i64) {
    let mut exec = Executor::new(common::registry_with(&["diffgraph_testnodes"]));
    let checked =
        diffgraph::parse_graph(text, &[], &exec.registry, true).unwrap_or_else(|e| panic!("{e}"));
    let out = exec
        .run(&checked, None, &Silent)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(out.output("sink", "x"), Some(Value::Int(v)) if *v == expect));
}

#[test]
fn chain_of_100_000_nodes_in_both_id_orders() {
    for reverse in [false, true] {
        run(&chains::add_chain(100_000, reverse), 100_001);
    }
}

#[test]
fn chain_of_20_000_loops_in_both_id_orders() {
    for reverse in [false, true] {
        run(&chains::loop_chain(20_000, reverse), 20_000);
    }
}
