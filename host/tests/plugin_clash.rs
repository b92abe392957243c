//! Node type names across plugins: clashes are explicit and do not depend on
//! load order; nothing is replaced silently (fixture plugins `clash`, which
//! also provides `AddInt`, and `twice`, which lists a type twice).
mod common;

use diffgraph::graph::ErrorKind;
use diffgraph::{Executor, Registry, Silent, Value};

fn load(order: &[&str]) -> Registry {
    diffgraph::device::init();
    let mut r = Registry::new();
    for c in order {
        r.load_file(&common::plugin_path(c))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    r
}

const PLAIN: &str = r#"{"nodes": {"a": {"type": "AddInt", "inputs": {"a": 1}}, "s": {"type": "Sink", "inputs": {"x": ["a", "sum"]}}}}"#;

#[test]
fn a_clash_names_both_libraries_in_either_load_order() {
    for order in [
        ["diffgraph_testnodes", "diffgraph_testnodes_clash"],
        ["diffgraph_testnodes_clash", "diffgraph_testnodes"],
    ] {
        let r = load(&order);
        let clashes: Vec<_> = r.clashes().map(|(n, p)| (n.to_string(), p.len())).collect();
        assert_eq!(clashes, vec![("AddInt".to_string(), 2)]);
        let Err(e) = diffgraph::parse_graph(PLAIN, &[], &r, true) else {
            panic!("ambiguous")
        };
        assert_eq!(e.kinds(), vec![ErrorKind::AmbiguousNodeType], "{e}");
        let msg = e.to_string();
        for needle in [
            "libdiffgraph_testnodes.so",
            "libdiffgraph_testnodes_clash.so",
            "\"clash/AddInt\"",
            "\"testing/AddInt\"",
        ] {
            assert!(msg.contains(needle), "{needle} missing in {msg}");
        }
        // The qualified names pick one; each runs its own code.
        for (name, expect) in [("testing/AddInt", 2), ("clash/AddInt", 102)] {
            let g = PLAIN.replace("\"AddInt\"", &format!("{name:?}"));
            let checked =
                diffgraph::parse_graph(&g, &[], &r, true).unwrap_or_else(|e| panic!("{e}"));
            let out = Executor::new(r.clone())
                .run(&checked, None, &Silent)
                .unwrap();
            assert!(
                matches!(out.output("s", "x"), Some(Value::Int(v)) if *v == expect),
                "{name}"
            );
        }
    }
}

#[test]
fn qualified_names_work_without_a_clash() {
    let r = load(&["diffgraph_testnodes"]);
    let g = PLAIN.replace("\"AddInt\"", "\"testing/AddInt\"");
    diffgraph::parse_graph(&g, &[], &r, true).unwrap_or_else(|e| panic!("{e}"));
    diffgraph::parse_graph(PLAIN, &[], &r, true).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_plugin_cannot_take_another_plugins_name() {
    // A second library calling itself `testing` (as a plugin might call
    // itself `core`) is refused; the first stays.
    let mut r = load(&["diffgraph_testnodes"]);
    let dir = tempfile::tempdir().unwrap();
    let impostor = dir.path().join("libimpostor.so");
    std::fs::copy(common::plugin_path("diffgraph_testnodes"), &impostor).unwrap();
    let before = r.get("AddInt").unwrap().library.path.clone();
    let err = r.load_file(&impostor).err().expect("refused");
    assert!(
        err.message
            .contains("plugin name `testing` is already taken by"),
        "{err}"
    );
    assert!(err.message.contains("libdiffgraph_testnodes.so"), "{err}");
    assert_eq!(r.get("AddInt").unwrap().library.path, before);
    // Loading the same file again is a reload, not a clash.
    r.load_file(&before).expect("reload");
}

#[test]
fn a_plugin_listing_a_type_twice_is_refused() {
    let mut r = Registry::new();
    diffgraph::device::init();
    let err = r
        .load_file(&common::plugin_path("diffgraph_testnodes_twice"))
        .err()
        .expect("refused");
    assert!(
        err.message.contains("lists node type `Same` twice"),
        "{err}"
    );
    assert!(r.libraries().is_empty());
}
