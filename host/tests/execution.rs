//! Execution order, the content-keyed cache, and loop semantics, proven with
//! the counting node of the fixture plugin.
mod common;

use diffgraph::{Executor, RunError, Silent, Value};

fn executor() -> Executor {
    Executor::new(common::registry_with(&["diffgraph_testnodes"]))
}

fn int(outcome: &diffgraph::RunOutcome, node: &str, output: &str) -> i64 {
    match outcome.output(node, output) {
        Some(Value::Int(i)) => *i,
        other => panic!("{node}.{output}: expected an int, got {other:?}"),
    }
}

fn ints(outcome: &diffgraph::RunOutcome, node: &str, output: &str) -> Vec<i64> {
    match outcome.output(node, output) {
        Some(Value::List(items)) => items
            .iter()
            .map(|v| {
                if let Value::Int(i) = v {
                    *i
                } else {
                    panic!("{v:?}")
                }
            })
            .collect(),
        other => panic!("{node}.{output}: expected a list, got {other:?}"),
    }
}

/// A Count node (upstream, expensive in real life) feeding an adder whose
/// constant we change between runs.
fn chain(b: i64) -> String {
    format!(
        r#"{{"nodes": {{
            "src": {{"type": "AddInt", "inputs": {{"a": 40, "b": 1}}}},
            "count": {{"type": "Count", "inputs": {{"x": ["src", "sum"]}}}},
            "down": {{"type": "AddInt", "inputs": {{"a": ["count", "x"], "b": {b}}}}},
            "unused": {{"type": "Count", "inputs": {{"x": 0, "tag": "never"}}}},
            "out": {{"type": "Sink", "inputs": {{"x": ["down", "sum"]}}}},
            "runs": {{"type": "Sink", "inputs": {{"x": ["count", "runs"]}}}}}}}}"#
    )
}

#[test]
fn runs_in_dependency_order_and_only_what_outputs_need() {
    let mut exec = executor();
    let out = common::run_text(&mut exec, &chain(1), None);
    assert_eq!(int(&out, "out", "x"), 42);
    let pos = |id: &str| {
        out.executed
            .iter()
            .position(|e| e == id)
            .unwrap_or_else(|| panic!("{id} did not run"))
    };
    assert!(pos("src") < pos("count") && pos("count") < pos("down") && pos("down") < pos("out"));
    assert!(
        !out.executed.contains(&"unused".to_string()),
        "a node no output needs ran: {:?}",
        out.executed
    );
}

#[test]
fn second_run_recomputes_only_what_changed() {
    let mut exec = executor();
    let first = common::run_text(&mut exec, &chain(1), None);
    let runs_before = int(&first, "runs", "x");

    let second = common::run_text(&mut exec, &chain(5), None);
    assert_eq!(int(&second, "out", "x"), 46);
    // The counting node was served from the cache: the counter did not move.
    assert_eq!(int(&second, "runs", "x"), runs_before);
    assert!(
        second.cached.contains(&"count".to_string()) && second.cached.contains(&"src".to_string()),
        "{second:?}"
    );
    assert!(second.executed.contains(&"down".to_string()), "{second:?}");

    // Identical work under other node ids is found too (keys are content, not ids).
    let renamed = chain(5)
        .replace("\"count\"", "\"counter2\"")
        .replace("[\"count\"", "[\"counter2\"");
    let third = common::run_text(&mut exec, &renamed, None);
    assert!(third.cached.contains(&"counter2".to_string()), "{third:?}");
    assert_eq!(int(&third, "runs", "x"), runs_before);

    // Changing the upstream constant re-runs the counter.
    let changed = chain(5).replace("\"a\": 40", "\"a\": 10");
    let fourth = common::run_text(&mut exec, &changed, None);
    assert_eq!(int(&fourth, "out", "x"), 16);
    assert!(int(&fourth, "runs", "x") > runs_before);
}

#[test]
fn loop_carries_values_in_order() {
    let g = r#"{"nodes": {
        "l": {"type": "Loop", "inputs": {"over": [5, 6, 7], "acc": [], "sum": 0},
              "body": {
                  "app": {"type": "Append", "inputs": {"list": ["l", "acc"], "item": ["l", "item"]}},
                  "add": {"type": "AddInt", "inputs": {"a": ["l", "sum"], "b": ["l", "index"]}}},
              "next": {"acc": ["app", "list"], "sum": ["add", "sum"]}},
        "o1": {"type": "Sink", "inputs": {"x": ["l", "acc"]}},
        "o2": {"type": "Sink", "inputs": {"x": ["l", "sum"]}}}}"#;
    let mut exec = executor();
    let out = common::run_text(&mut exec, g, None);
    assert_eq!(ints(&out, "o1", "x"), vec![5, 6, 7]);
    assert_eq!(int(&out, "o2", "x"), 3); // 0 + 1 + 2
}

#[test]
fn loop_over_a_count_with_zero_iterations_returns_initial_values() {
    let g = |n: i64| {
        format!(
            r#"{{"nodes": {{
            "l": {{"type": "Loop", "inputs": {{"over": {n}, "acc": 100}},
                  "body": {{"add": {{"type": "AddInt", "inputs": {{"a": ["l", "acc"], "b": ["l", "item"]}}}}}},
                  "next": {{"acc": ["add", "sum"]}}}},
            "o": {{"type": "Sink", "inputs": {{"x": ["l", "acc"]}}}}}}}}"#
        )
    };
    let mut exec = executor();
    assert_eq!(
        int(&common::run_text(&mut exec, &g(4), None), "o", "x"),
        106
    );
    assert_eq!(
        int(&common::run_text(&mut exec, &g(0), None), "o", "x"),
        100
    );
}

#[test]
fn loop_invariant_body_nodes_run_once_and_outer_nodes_are_readable() {
    // `inv` reads only an outer node: it runs once per loop, not per iteration.
    let g = r#"{"nodes": {
        "outer": {"type": "AddInt", "inputs": {"a": 1000, "b": 0}},
        "l": {"type": "Loop", "inputs": {"over": 5, "acc": 0},
              "body": {
                  "inv": {"type": "Count", "inputs": {"x": ["outer", "sum"], "tag": "invariant"}},
                  "var": {"type": "Count", "inputs": {"x": ["l", "item"], "tag": "variant"}},
                  "add": {"type": "AddInt", "inputs": {"a": ["l", "acc"], "b": ["inv", "x"]}},
                  "add2": {"type": "AddInt", "inputs": {"a": ["add", "sum"], "b": ["var", "x"]}}},
              "next": {"acc": ["add2", "sum"]}},
        "o": {"type": "Sink", "inputs": {"x": ["l", "acc"]}}}}"#;
    let mut exec = executor();
    let checked = diffgraph::parse_graph(g, &[], &exec.registry, false).unwrap();
    let starts = StartCounter::default();
    let out = exec.run(&checked, None, &starts).unwrap();
    assert_eq!(int(&out, "o", "x"), 5 * 1000 + (1 + 2 + 3 + 4));
    let runs = starts.0.borrow();
    assert_eq!(
        (runs["inv"], runs["var"], runs["add2"], runs["l"]),
        (1, 5, 5, 1),
        "{runs:?}"
    );
}

/// Counts NodeStart events per node id (each is one call into a plugin).
#[derive(Default)]
struct StartCounter(std::cell::RefCell<std::collections::HashMap<String, usize>>);

impl diffgraph::Observer for StartCounter {
    fn event(&self, e: &diffgraph::Event) {
        if let diffgraph::Event::NodeStart { id, .. } = e {
            *self.0.borrow_mut().entry(id.to_string()).or_default() += 1;
        }
    }
}

#[test]
fn nested_loops() {
    let g = r#"{"nodes": {
        "outer": {"type": "Loop", "inputs": {"over": 3, "total": 0},
            "body": {
                "inner": {"type": "Loop", "inputs": {"over": 4, "acc": ["outer", "total"]},
                    "body": {"add": {"type": "AddInt", "inputs": {"a": ["inner", "acc"], "b": ["outer", "item"]}}},
                    "next": {"acc": ["add", "sum"]}}},
            "next": {"total": ["inner", "acc"]}},
        "o": {"type": "Sink", "inputs": {"x": ["outer", "total"]}}}}"#;
    let mut exec = executor();
    // inner adds `outer.item` four times per outer iteration: 4*(0+1+2).
    assert_eq!(int(&common::run_text(&mut exec, g, None), "o", "x"), 12);
}

#[test]
fn loops_are_cached_as_a_whole() {
    let g = |n: i64| {
        format!(
            r#"{{"nodes": {{
            "l": {{"type": "Loop", "inputs": {{"over": 3, "acc": 0}},
                  "body": {{"add": {{"type": "AddInt", "inputs": {{"a": ["l", "acc"], "b": {n}}}}}}},
                  "next": {{"acc": ["add", "sum"]}}}},
            "o": {{"type": "Sink", "inputs": {{"x": ["l", "acc"]}}}}}}}}"#
        )
    };
    let mut exec = executor();
    assert_eq!(int(&common::run_text(&mut exec, &g(2), None), "o", "x"), 6);
    let again = common::run_text(&mut exec, &g(2), None);
    assert!(again.cached.contains(&"l".to_string()), "{again:?}");
    // A constant inside the body is part of the loop's key.
    let changed = common::run_text(&mut exec, &g(3), None);
    assert_eq!(int(&changed, "o", "x"), 9);
    assert!(changed.executed.contains(&"l".to_string()));
}

#[test]
fn objects_pass_between_nodes_of_their_plugin() {
    let g = r#"{"nodes": {
        "c": {"type": "MakeCounter", "inputs": {"start": 10}},
        "r": {"type": "ReadCounter", "inputs": {"counter": ["c", "counter"], "offset": 3, "mode": "sub"}},
        "o": {"type": "Sink", "inputs": {"x": ["r", "value"]}}}}"#;
    let mut exec = executor();
    assert_eq!(int(&common::run_text(&mut exec, g, None), "o", "x"), 7);
}

fn run_err(exec: &mut Executor, text: &str) -> RunError {
    let checked = diffgraph::parse_graph(text, &[], &exec.registry, false).unwrap();
    exec.run(&checked, None, &Silent)
        .expect_err("the run should fail")
}

#[test]
fn a_panicking_plugin_is_reported_and_the_host_survives() {
    let mut exec = executor();
    let g = r#"{"nodes": {"p": {"type": "Panic", "inputs": {"message": "kaboom 17"}}, "o": {"type": "Sink", "inputs": {"x": ["p", "never"]}}}}"#;
    match run_err(&mut exec, g) {
        RunError::Panic {
            node,
            type_name,
            message,
        } => {
            assert_eq!((node.as_str(), type_name.as_str()), ("p", "Panic"));
            assert!(message.contains("kaboom 17"), "{message}");
        }
        other => panic!("expected a panic error, got {other}"),
    }
    // The same executor keeps working.
    assert_eq!(
        int(&common::run_text(&mut exec, &chain(1), None), "out", "x"),
        42
    );
}

#[test]
fn node_errors_and_lying_outputs_name_the_node() {
    let mut exec = executor();
    let e = run_err(
        &mut exec,
        r#"{"nodes": {"f": {"type": "Fail", "inputs": {"message": "no disk"}}, "o": {"type": "Sink", "inputs": {"x": ["f", "never"]}}}}"#,
    );
    assert_eq!(e.to_string(), "node `f` (Fail) failed: no disk");
    let e = run_err(
        &mut exec,
        r#"{"nodes": {"l": {"type": "Liar"}, "o": {"type": "Sink", "inputs": {"x": ["l", "n"]}}}}"#,
    );
    assert!(
        e.to_string()
            .contains("returned STRING for output `n`, declared INT"),
        "{e}"
    );
}

#[test]
fn interrupt_flag_stops_a_run() {
    let mut exec = executor();
    let flag = exec.interrupt_flag();
    struct StopAfterFirst(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl diffgraph::Observer for StopAfterFirst {
        fn event(&self, e: &diffgraph::Event) {
            if let diffgraph::Event::LoopStep { done: 2, .. } = e {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    let g = r#"{"nodes": {"l": {"type": "Loop", "inputs": {"over": 1000, "acc": 0},
        "body": {"add": {"type": "AddInt", "inputs": {"a": ["l", "acc"]}}}, "next": {"acc": ["add", "sum"]}},
        "o": {"type": "Sink", "inputs": {"x": ["l", "acc"]}}}}"#;
    let checked = diffgraph::parse_graph(g, &[], &exec.registry, false).unwrap();
    let err = exec
        .run(&checked, None, &StopAfterFirst(flag))
        .expect_err("interrupted");
    assert!(
        matches!(err, RunError::Interrupted { ref node } if node == "add"),
        "{err}"
    );
}
