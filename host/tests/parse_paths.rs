//! The graph parser's two paths agree: well-formed text takes the streaming
//! fast path (`graph/fast_parse.rs`), everything else the full parser
//! (`parse_document` + `from_json`), and both must build the same graph (same
//! node order, inputs, bodies, scopes) or, for bad text, the same errors.
#[path = "common/chains.rs"]
mod chains;

use diffgraph::graph::model::{from_json, parse, parse_document, Graph};
use std::path::Path;

/// The full parser, bypassing the fast path.
fn full(text: &str) -> Result<Graph, Vec<diffgraph::GraphError>> {
    from_json(&parse_document(text)?)
}

/// Everything a graph holds, in a comparable form.
fn shape(g: &Graph) -> String {
    let mut ids: Vec<_> = g.by_id.iter().collect();
    ids.sort();
    format!("{:?}\n{ids:?}\n{:?}", g.nodes, g.description)
}

fn same(text: &str) {
    match (parse(text), full(text)) {
        (Ok(a), Ok(b)) => assert_eq!(shape(&a), shape(&b), "{text:.300}"),
        (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{text:.300}"),
        (a, b) => panic!(
            "the paths disagree on {text:.300}:\n{:?}\n{:?}",
            a.err(),
            b.err()
        ),
    }
}

#[test]
fn fast_and_full_parsers_build_the_same_graphs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = 0;
    for dir in [root.join("../graphs"), root.join("tests/fuzz_corpus")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                same(&std::fs::read_to_string(&path).unwrap());
                files += 1;
            }
        }
    }
    assert!(files >= 5, "{files}");
    for reverse in [false, true] {
        same(&chains::add_chain(300, reverse));
        same(&chains::loop_chain(100, reverse));
    }
    // What the fast path reads itself, and what it hands to the full parser.
    for text in [
        "\u{feff}{\"nodes\": {\"a\": {\"type\": \"AddInt\", \"inputs\": {\"a\": 1}}}}",
        r#"{"version": 1, "description": "d", "nodes": {"b": {"class_type": "X", "inputs": null, "title": "t", "comment": {"k": [1]}},
            "a": {"type": "X", "inputs": {"z": {"value": [1, 2]}, "y": ["b", 0], "x": ["b", "out"], "w": {"__value__": 3},
                  "v": {"value": 1, "other": 2}, "u": [1.5, -2, 18446744073709551615, null, true, "s"]}}}}"#,
        r#"{"nodes": {"l": {"type": "Loop", "inputs": {"over": 3, "x": 0}, "next": {"x": ["b", "y"]},
            "body": {"b": {"type": "AddInt", "inputs": {"a": ["l", "x"]}}}}, "m": {"type": "Loop", "next": null, "body": {}}}}"#,
        // Errors: each must come from the full parser, with its lines.
        r#"{"nodes": {"a": {"type": "X"}, "a": {"type": "Y"}}}"#,
        r#"{"nodes": {"a": {"type": "X", "inputs": {"p": 1, "p": 2}}}}"#,
        r#"{"nodes": {"a": {"type": "X", "inputs": {"p": {"k": 1, "k": 2}}}}}"#,
        r#"{"nodes": {"a": {"type": "X", "type": "Y"}}}"#,
        r#"{"nodes": {"l": {"type": "Loop", "body": {"a": {"type": "X"}}}, "a": {"type": "X"}}}"#,
        r#"{"nodes": {"a": {"type": ""}, "b c": {"type": "X"}, "d.e": {"type": "X"}}}"#,
        r#"{"nodes": {"a": {"type": "X", "body": {}}, "b": {"type": "X", "next": null}, "l": {"type": "Loop"}}}"#,
        r#"{"nodes": {"a": {"type": "X", "inputs": [1]}, "b": 3, "c": {"inputs": {}}, "d": {"type": 4}}}"#,
        r#"{"nodes": [], "extra": 1}"#,
        r#"{"nodes": {}, "nodes": {}}"#,
        r#"{"nodes": {"a": {"type": "X"}}} trailing"#,
        r#"[1, 2]"#,
        "",
    ] {
        same(text);
    }
}
