//! Validation: one test per error kind, each checking the node, the input and
//! the expected/received values that the error names.
mod common;

use diffgraph::graph::{ErrorKind, GraphError};
use diffgraph::Registry;
use std::sync::OnceLock;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| common::registry_with(&["diffgraph_testnodes"]))
}

/// Validates `text`; returns the errors (panics if it was valid).
fn errors(text: &str) -> Vec<GraphError> {
    common::graph_errors(text, registry())
}

fn one(text: &str, kind: ErrorKind) -> GraphError {
    common::one_error(text, registry(), kind)
}

#[test]
fn valid_graph_passes() {
    let g = r#"{"nodes": {"a": {"type": "AddInt", "inputs": {"a": 1}}, "s": {"type": "Sink", "inputs": {"x": ["a", "sum"]}}}}"#;
    assert!(diffgraph::parse_graph(g, &[], registry(), true).is_ok());
}

#[test]
fn malformed_json_gives_line_and_column() {
    let e = one(
        "{\n  \"nodes\": {\n    \"a\": {\"type\": \"AddInt\",,}\n  }\n}",
        ErrorKind::MalformedJson,
    );
    assert_eq!(e.line, Some(3));
    assert!(e.column.unwrap() > 20, "{e:?}");
}

#[test]
fn not_a_graph_object() {
    let errs = errors(r#"{"nodez": {}}"#);
    assert!(
        errs.iter()
            .any(|e| e.message.contains("unknown top-level field `nodez`")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.message.contains("missing the `nodes` object")),
        "{errs:?}"
    );
    let e = one(
        r#"{"nodes": {"a": {"inputs": {}}}}"#,
        ErrorKind::InvalidGraph,
    );
    assert_eq!(e.node.as_deref(), Some("a"));
}

#[test]
fn unknown_node_type_suggests_close_names() {
    let e = one(
        r#"{"nodes": {"n1": {"type": "AddInnt", "inputs": {"a": 1}}}}"#,
        ErrorKind::UnknownNodeType,
    );
    assert_eq!(e.node.as_deref(), Some("n1"));
    assert!(e.message.contains("`AddInt`"), "{}", e.message);
}

#[test]
fn required_input_missing() {
    let e = one(
        r#"{"nodes": {"n": {"type": "AddInt", "inputs": {"b": 2}}, "s": {"type": "Sink", "inputs": {"x": ["n", "sum"]}}}}"#,
        ErrorKind::RequiredInputMissing,
    );
    assert_eq!(
        (e.node.as_deref(), e.input.as_deref(), e.expected.as_deref()),
        (Some("n"), Some("a"), Some("INT"))
    );
}

#[test]
fn unknown_input() {
    let e = one(
        r#"{"nodes": {"n": {"type": "AddInt", "inputs": {"a": 1, "c": 2}}, "s": {"type": "Sink", "inputs": {"x": 1}}}}"#,
        ErrorKind::UnknownInput,
    );
    assert_eq!(e.input.as_deref(), Some("c"));
    assert!(e.expected.unwrap().contains("a, b"));
}

#[test]
fn link_to_missing_node_and_output() {
    let e = one(
        r#"{"nodes": {"s": {"type": "Sink", "inputs": {"x": ["ghost", "sum"]}}}}"#,
        ErrorKind::LinkToMissingNode,
    );
    assert!(e.message.contains("ghost"));
    let e = one(
        r#"{"nodes": {"n": {"type": "AddInt", "inputs": {"a": 1}}, "s": {"type": "Sink", "inputs": {"x": ["n", "total"]}}}}"#,
        ErrorKind::LinkToMissingOutput,
    );
    assert_eq!(
        (e.node.as_deref(), e.input.as_deref()),
        (Some("s"), Some("x"))
    );
    assert!(e.expected.unwrap().contains("sum"));
}

#[test]
fn type_mismatch_on_links_and_constants() {
    let e = one(
        r#"{"nodes": {"n": {"type": "AddInt", "inputs": {"a": 1}}, "r": {"type": "ReadCounter", "inputs": {"counter": ["n", "sum"]}}, "s": {"type": "Sink", "inputs": {"x": ["r", "value"]}}}}"#,
        ErrorKind::TypeMismatch,
    );
    assert_eq!(
        (e.expected.as_deref(), e.received.as_deref()),
        (Some("TEST_COUNTER"), Some("INT"))
    );
    let e = one(
        r#"{"nodes": {"n": {"type": "AddInt", "inputs": {"a": "seven"}}, "s": {"type": "Sink", "inputs": {"x": ["n", "sum"]}}}}"#,
        ErrorKind::TypeMismatch,
    );
    assert_eq!(
        (e.input.as_deref(), e.expected.as_deref()),
        (Some("a"), Some("INT"))
    );
    assert!(e.received.unwrap().contains("seven"));
    // A float where an int is expected is refused too.
    one(
        r#"{"nodes": {"n": {"type": "AddInt", "inputs": {"a": 1.5}}, "s": {"type": "Sink", "inputs": {"x": ["n", "sum"]}}}}"#,
        ErrorKind::TypeMismatch,
    );
}

const COUNTER: &str =
    r#""c": {"type": "MakeCounter"}, "s": {"type": "Sink", "inputs": {"x": ["r", "value"]}}"#;

#[test]
fn values_out_of_range() {
    let g = format!(
        r#"{{"nodes": {{{COUNTER}, "r": {{"type": "ReadCounter", "inputs": {{"counter": ["c", "counter"], "offset": 500}}}}}}}}"#
    );
    let e = one(&g, ErrorKind::ValueBiggerThanMax);
    assert_eq!(
        (e.expected.as_deref(), e.received.as_deref()),
        (Some("<= 100"), Some("500"))
    );
    let g = format!(
        r#"{{"nodes": {{{COUNTER}, "r": {{"type": "ReadCounter", "inputs": {{"counter": ["c", "counter"], "offset": -101}}}}}}}}"#
    );
    let e = one(&g, ErrorKind::ValueSmallerThanMin);
    assert_eq!(e.input.as_deref(), Some("offset"));
}

#[test]
fn value_not_among_choices() {
    let g = format!(
        r#"{{"nodes": {{{COUNTER}, "r": {{"type": "ReadCounter", "inputs": {{"counter": ["c", "counter"], "mode": "mul"}}}}}}}}"#
    );
    let e = one(&g, ErrorKind::ValueNotInList);
    assert!(e.expected.unwrap().contains("add, sub"));
    assert_eq!(e.received.as_deref(), Some("\"mul\""));
}

#[test]
fn cycles_name_their_nodes() {
    let g = r#"{"nodes": {
        "a": {"type": "AddInt", "inputs": {"a": ["b", "sum"]}},
        "b": {"type": "AddInt", "inputs": {"a": ["a", "sum"]}},
        "self": {"type": "AddInt", "inputs": {"a": ["self", "sum"]}},
        "s": {"type": "Sink", "inputs": {"x": ["b", "sum"]}}}}"#;
    let errs = errors(g);
    let cycles: Vec<_> = errs.iter().filter(|e| e.kind == ErrorKind::Cycle).collect();
    assert_eq!(cycles.len(), 2, "{errs:#?}");
    assert!(cycles.iter().any(|e| e.message.contains("a -> b")));
    assert!(cycles.iter().any(|e| e.message.contains("self")));
}

#[test]
fn cycle_through_a_loop_body() {
    // The body reads `after`, which reads the loop's result.
    let g = r#"{"nodes": {
        "l": {"type": "Loop", "inputs": {"over": 3, "acc": 0},
              "body": {"step": {"type": "AddInt", "inputs": {"a": ["l", "acc"], "b": ["after", "sum"]}}},
              "next": {"acc": ["step", "sum"]}},
        "after": {"type": "AddInt", "inputs": {"a": ["l", "acc"]}},
        "s": {"type": "Sink", "inputs": {"x": ["after", "sum"]}}}}"#;
    let e = one(g, ErrorKind::Cycle);
    assert!(
        e.message.contains("after") && e.message.contains('l'),
        "{}",
        e.message
    );
}

#[test]
fn malformed_loops() {
    let no_over = r#"{"nodes": {"l": {"type": "Loop", "inputs": {"acc": 0}, "body": {"b": {"type": "AddInt", "inputs": {"a": ["l", "acc"]}}}, "next": {"acc": ["b", "sum"]}}, "s": {"type": "Sink", "inputs": {"x": ["l", "acc"]}}}}"#;
    assert_eq!(
        one(no_over, ErrorKind::MalformedLoop).input.as_deref(),
        Some("over")
    );
    let no_next = r#"{"nodes": {"l": {"type": "Loop", "inputs": {"over": 2, "acc": 0}, "body": {}}, "s": {"type": "Sink", "inputs": {"x": ["l", "acc"]}}}}"#;
    assert_eq!(
        one(no_next, ErrorKind::MalformedLoop).input.as_deref(),
        Some("acc")
    );
    let stray_next = r#"{"nodes": {"l": {"type": "Loop", "inputs": {"over": 2, "acc": 0}, "body": {"b": {"type": "AddInt", "inputs": {"a": ["l", "acc"]}}}, "next": {"acc": ["b", "sum"], "other": ["b", "sum"]}}, "s": {"type": "Sink", "inputs": {"x": ["l", "acc"]}}}}"#;
    assert_eq!(
        one(stray_next, ErrorKind::MalformedLoop).input.as_deref(),
        Some("other")
    );
    let item_outside = r#"{"nodes": {"l": {"type": "Loop", "inputs": {"over": 2, "acc": 0}, "body": {"b": {"type": "AddInt", "inputs": {"a": ["l", "acc"]}}}, "next": {"acc": ["b", "sum"]}}, "s": {"type": "Sink", "inputs": {"x": ["l", "item"]}}}}"#;
    assert!(one(item_outside, ErrorKind::MalformedLoop)
        .message
        .contains("only inside its body"));
    let no_body = r#"{"nodes": {"l": {"type": "Loop", "inputs": {"over": 2}}, "s": {"type": "Sink", "inputs": {"x": 1}}}}"#;
    one(no_body, ErrorKind::MalformedLoop);
    let bad_over = r#"{"nodes": {"l": {"type": "Loop", "inputs": {"over": "many"}, "body": {}}, "s": {"type": "Sink", "inputs": {"x": 1}}}}"#;
    one(bad_over, ErrorKind::MalformedLoop);
}

#[test]
fn body_nodes_are_not_visible_outside() {
    let g = r#"{"nodes": {"l": {"type": "Loop", "inputs": {"over": 2, "acc": 0}, "body": {"b": {"type": "AddInt", "inputs": {"a": ["l", "acc"]}}}, "next": {"acc": ["b", "sum"]}}, "s": {"type": "Sink", "inputs": {"x": ["b", "sum"]}}}}"#;
    let e = one(g, ErrorKind::LinkToMissingNode);
    assert!(
        e.message.contains("inside the body of loop `l`"),
        "{}",
        e.message
    );
}

#[test]
fn duplicate_ids_across_scopes() {
    let g = r#"{"nodes": {"b": {"type": "AddInt", "inputs": {"a": 1}}, "l": {"type": "Loop", "inputs": {"over": 2, "acc": 0}, "body": {"b": {"type": "AddInt", "inputs": {"a": ["l", "acc"]}}}, "next": {"acc": ["b", "sum"]}}, "s": {"type": "Sink", "inputs": {"x": ["l", "acc"]}}}}"#;
    assert_eq!(
        one(g, ErrorKind::DuplicateNodeId).node.as_deref(),
        Some("b")
    );
}

#[test]
fn no_output_nodes() {
    one(
        r#"{"nodes": {"n": {"type": "AddInt", "inputs": {"a": 1}}}}"#,
        ErrorKind::NoOutputs,
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let g = r#"{"nodes": {
        "x": {"type": "Nope"},
        "y": {"type": "AddInt", "inputs": {"a": "str", "zzz": 1}},
        "z": {"type": "Sink", "inputs": {"x": ["missing", "out"]}}}}"#;
    let kinds: Vec<_> = errors(g).iter().map(|e| e.kind).collect();
    for k in [
        ErrorKind::UnknownNodeType,
        ErrorKind::TypeMismatch,
        ErrorKind::UnknownInput,
        ErrorKind::LinkToMissingNode,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
}

#[test]
fn errors_serialise_for_json_output() {
    let errs = errors(
        r#"{"nodes": {"n": {"type": "AddInt", "inputs": {"a": "x"}}, "s": {"type": "Sink", "inputs": {"x": 1}}}}"#,
    );
    let v = serde_json::to_value(&errs).unwrap();
    assert_eq!(v[0]["kind"], "type_mismatch");
    assert_eq!(v[0]["node"], "n");
    assert_eq!(v[0]["input"], "a");
}
