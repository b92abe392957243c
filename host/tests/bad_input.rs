//! Bad input: one test per failure class of the reliability issue (a bad
//! graph or value gets a clear error, never a panic or an abort), and a
//! property test that any JSON value either validates or yields errors.
mod common;

use diffgraph::graph::{ErrorKind, GraphError};
use diffgraph::{Executor, Registry, RunError, Silent};
use proptest::prelude::*;
use std::sync::OnceLock;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| common::registry_with(&["diffgraph_testnodes", "diffgraph_nodes_core"]))
}

fn errors(text: &str) -> Vec<GraphError> {
    common::graph_errors(text, registry())
}

fn one(text: &str, kind: ErrorKind) -> GraphError {
    common::one_error(text, registry(), kind)
}

/// Runs graph text (valid) and returns the run's error.
fn run_error(text: &str) -> RunError {
    let checked =
        diffgraph::parse_graph(text, &[], registry(), false).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let mut exec = Executor::new(common::registry_with(&[
        "diffgraph_testnodes",
        "diffgraph_nodes_core",
    ]));
    exec.set_output_dir(dir.path().to_str().unwrap());
    match exec.run(&checked, None, &Silent) {
        Ok(_) => panic!("expected a run error for {text}"),
        Err(e) => e,
    }
}

#[test]
fn empty_type_name() {
    for t in [r#""""#, r#""   ""#] {
        let g = format!(
            r#"{{"nodes": {{"a": {{"type": {t}}}, "s": {{"type": "Sink", "inputs": {{"x": 1}}}}}}}}"#
        );
        let e = one(&g, ErrorKind::InvalidGraph);
        assert_eq!(e.node.as_deref(), Some("a"));
        assert!(e.message.contains("empty `type`"), "{e}");
    }
}

#[test]
fn loop_count_is_iterated_lazily() {
    // 10^12 iterations: the loop must start at once (no 10^12-element
    // allocation) and stop at the interrupt between iterations.
    let g = r#"{"nodes": {"l": {"type": "Loop", "inputs": {"over": 1000000000000, "acc": 0},
        "body": {"b": {"type": "AddInt", "inputs": {"a": ["l", "acc"]}}}, "next": {"acc": ["b", "sum"]}},
        "s": {"type": "Sink", "inputs": {"x": ["l", "acc"]}}}}"#;
    let checked =
        diffgraph::parse_graph(g, &[], registry(), true).unwrap_or_else(|e| panic!("{e}"));
    let mut exec = Executor::new(common::registry_with(&["diffgraph_testnodes"]));
    let flag = exec.interrupt_flag();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let err = exec.run(&checked, None, &Silent).unwrap_err();
    stopper.join().unwrap();
    assert!(matches!(err, RunError::Interrupted { .. }), "{err}");
    // A negative count is a clear error, not an empty loop.
    let neg = g.replace("1000000000000", "-5");
    let err = run_error(&neg);
    assert!(err.to_string().contains("cannot be negative"), "{err}");
}

#[test]
fn duplicate_keys_name_both_lines() {
    let g = "{\"nodes\": {\n\"a\": {\"type\": \"AddInt\", \"inputs\": {\"a\": 1}},\n\"a\": {\"type\": \"AddInt\", \"inputs\": {\"a\": 2}},\n\
             \"s\": {\"type\": \"Sink\", \"inputs\": {\"x\": [\"a\", \"sum\"],\n\"x\": 3}}}}";
    let errs = errors(g);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    let id = one(g, ErrorKind::DuplicateNodeId);
    assert_eq!(id.node.as_deref(), Some("a"));
    assert!(id.message.contains("line 2 and on line 3"), "{id}");
    let input = one(g, ErrorKind::DuplicateKey);
    assert_eq!(
        (input.node.as_deref(), input.input.as_deref()),
        (Some("s"), Some("x"))
    );
    assert!(input.message.contains("line 4 and on line 5"), "{input}");
    // The same through `--set` (the document path).
    let set: diffgraph::graph::overrides::Override = "s.x=1".parse().unwrap();
    let Err(e) = diffgraph::parse_graph(g, &[set], registry(), true) else {
        panic!("duplicates")
    };
    assert_eq!(e.0.len(), 2, "{e}");
}

#[test]
fn quoted_user_strings_are_bounded_and_escaped() {
    let huge = "x".repeat(50 << 20);
    let g = format!(
        r#"{{"nodes": {{"a": {{"type": "{huge}"}}, "s": {{"type": "Sink", "inputs": {{"x": ["{huge}", "out"]}}}}}}}}"#
    );
    let started = std::time::Instant::now();
    for e in errors(&g) {
        let shown = e.to_string();
        assert!(shown.len() < 3000, "{} bytes: {:.300}", shown.len(), shown);
        assert!(shown.contains("more bytes"), "{:.300}", shown);
    }
    assert!(
        started.elapsed().as_secs() < 30,
        "validation stalled on a long name"
    );
    let g = r#"{"nodes": {"\u001b[2J\u001b[31mred\nline": {"type": "Nope"}, "s": {"type": "Sink", "inputs": {"x": 1}}}}"#;
    let e = one(g, ErrorKind::InvalidGraph);
    let shown = e.to_string();
    assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
    assert!(shown.contains(r"\u{1b}[31mred\nline"), "{shown}");
}

#[test]
fn ints_beyond_64_bits_are_refused_with_the_range() {
    for big in ["18446744073709551615", "9223372036854775808"] {
        let g = format!(
            r#"{{"nodes": {{"n": {{"type": "GaussianNoise", "inputs": {{"seed": {big}, "shape": [1, 2]}}}},
            "s": {{"type": "SaveTensor", "inputs": {{"tensor": ["n", "noise"]}}}}}}}}"#
        );
        let e = one(&g, ErrorKind::ValueBiggerThanMax);
        assert_eq!(
            (e.node.as_deref(), e.input.as_deref()),
            (Some("n"), Some("seed"))
        );
        assert_eq!(e.received.as_deref(), Some(big));
        assert_eq!(
            e.expected.as_deref(),
            Some("an int in 0..=9223372036854775807")
        );
    }
    // In a list of ints too.
    let g = r#"{"nodes": {"n": {"type": "GaussianNoise", "inputs": {"shape": [1, 18446744073709551615]}},
        "s": {"type": "SaveTensor", "inputs": {"tensor": ["n", "noise"]}}}}"#;
    one(g, ErrorKind::ValueBiggerThanMax);
}

#[test]
fn zero_sized_batches_are_refused() {
    let noise = r#"{"nodes": {"n": {"type": "GaussianNoise", "inputs": {"shape": [0, 3, 4, 4]}},
        "s": {"type": "SaveTensor", "inputs": {"tensor": ["n", "noise"]}}}}"#;
    let e = run_error(noise).to_string();
    assert!(e.contains("expected positive dimensions"), "{e}");
    // An empty batch made another way (an empty tensor in a file) reaches the savers.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.safetensors");
    let empty = tch::Tensor::zeros([0, 3, 4, 4], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("t", &empty)], &file).unwrap();
    for saver in [
        r#""SaveImage", "inputs": {"image": ["e", "tensor"]}"#,
        r#""SaveTensor", "inputs": {"tensor": ["e", "tensor"]}"#,
    ] {
        let g = format!(
            r#"{{"nodes": {{"e": {{"type": "LoadTensor", "inputs": {{"path": {:?}}}}},
            "s": {{"type": {saver}}}}}}}"#,
            file.to_str().unwrap()
        );
        let e = run_error(&g).to_string();
        assert!(e.contains("empty"), "{e}");
    }
}

#[test]
fn allocation_failures_are_one_line() {
    // 4 * 10^15 bytes: libtorch's allocator refuses at once.
    let g = r#"{"nodes": {"n": {"type": "GaussianNoise", "inputs": {"shape": [1000000, 1000000, 1000]}},
        "s": {"type": "SaveTensor", "inputs": {"tensor": ["n", "noise"]}}}}"#;
    let e = run_error(g).to_string();
    assert!(!e.contains('\n') && !e.contains("frame #"), "{e}");
    assert!(e.len() < 600, "{} bytes: {e}", e.len());
    assert!(e.contains("4000000000000000 bytes"), "{e}");
}

#[test]
fn missing_input_files_are_found_by_validation() {
    let g = r#"{"nodes": {"i": {"type": "LoadImage", "inputs": {"path": "/no/such/image.png"}},
        "s": {"type": "SaveImage", "inputs": {"image": ["i", "image"]}}}}"#;
    let e = one(g, ErrorKind::FileNotFound);
    assert_eq!(
        (e.node.as_deref(), e.input.as_deref()),
        (Some("i"), Some("path"))
    );
    assert_eq!(e.received.as_deref(), Some("\"/no/such/image.png\""));
}

#[test]
fn byte_order_mark_is_accepted() {
    let g = "\u{feff}{\"nodes\": {\"a\": {\"type\": \"AddInt\", \"inputs\": {\"a\": 1}}, \"s\": {\"type\": \"Sink\", \"inputs\": {\"x\": [\"a\", \"sum\"]}}}}";
    assert!(diffgraph::parse_graph(g, &[], registry(), true).is_ok());
    let set: diffgraph::graph::overrides::Override = "a.a=2".parse().unwrap();
    assert!(diffgraph::parse_graph(g, &[set], registry(), true).is_ok());
}

#[test]
fn nodes_given_as_a_list() {
    let e = one(
        r#"{"nodes": [{"type": "AddInt"}]}"#,
        ErrorKind::InvalidGraph,
    );
    assert!(
        e.message
            .contains("`nodes` must be an object keyed by node id"),
        "{e}"
    );
    assert_eq!(e.received.as_deref(), Some("a list"));
}

/// Any JSON value, nested up to a few levels, with strings drawn from the
/// graph vocabulary so that some values look like graphs.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as J;
    const WORDS: &[&str] = &[
        "nodes", "type", "inputs", "body", "next", "over", "Loop", "AddInt", "Sink", "a", "x",
        "sum",
    ];
    let word = prop_oneof![
        prop::sample::select(WORDS).prop_map(str::to_string),
        ".{0,6}",
    ];
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::from),
        any::<u64>().prop_map(J::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(J::Number)
            .unwrap_or(J::Null)),
        word.clone().prop_map(J::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Array),
            prop::collection::vec((word.clone(), inner), 0..5)
                .prop_map(|kv| J::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_json_validates_or_errs(doc in any_json(), wrap in any::<bool>()) {
        let doc = if wrap { serde_json::json!({ "nodes": doc }) } else { doc };
        let text = doc.to_string();
        match diffgraph::parse_graph(&text, &[], registry(), false) {
            Ok(checked) => {
                // A valid graph also plans.
                let _ = diffgraph::exec::Plan::new(&checked, None);
            }
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }
}
