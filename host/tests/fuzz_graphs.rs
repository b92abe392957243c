//! A stable-Rust structural fuzzer: proptest-driven mutations of valid
//! graphs (the seed corpus `tests/fuzz_corpus/*.json` and `graphs/*.json`)
//! through parse, validate and plan. Any outcome but a panic (or a stack
//! overflow, which aborts the test binary) passes: each mutated graph either
//! validates and plans, or yields errors.
//!
//! In the suite it runs `FUZZ_CASES` cases (default 200). `scripts/fuzz.sh`
//! runs it for a bounded time (`FUZZ_SECONDS`); a failing case is printed
//! (proptest shrinks it) and belongs in `tests/fuzz_corpus/` as
//! `regression_<n>.json`.
mod common;

use diffgraph::Registry;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value as J};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        common::registry_with(&[
            "diffgraph_testnodes",
            "diffgraph_nodes_core",
            "diffgraph_nodes_sampling",
            "diffgraph_nodes_sd",
            "diffgraph_nodes_guidance",
        ])
    })
}

fn corpus() -> &'static Vec<J> {
    static C: OnceLock<Vec<J>> = OnceLock::new();
    C.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = ["tests/fuzz_corpus", "../graphs"]
            .iter()
            .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let docs: Vec<J> = files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect();
        assert!(docs.len() >= 5, "the seed corpus is missing");
        docs
    })
}

/// One structural change; indices pick among what exists (modulo its count).
#[derive(Clone, Debug)]
enum Mutation {
    RemoveNode(usize),
    CopyNode(usize, String),
    SetType(usize, String),
    RemoveInput(usize, usize),
    SetInput(usize, String, J),
    LinkTo(usize, String, usize, J),
    MoveIntoLoop(usize, usize),
    SetTop(String, J),
}

fn value() -> impl Strategy<Value = J> {
    prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::from),
        Just(json!(u64::MAX)),
        Just(json!(1_000_000_000_000i64)),
        Just(json!(-1)),
        Just(json!(0)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(J::Null, J::Number)),
        "\\PC{0,8}".prop_map(J::String),
        Just(json!("\u{1b}[31m\n\u{0}")),
        Just(json!([])),
        Just(json!([0, 0, 0])),
        Just(json!(["x", 7])),
        Just(json!({"value": [1, 2]})),
        Just(json!({"a": {"b": []}})),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "",
                "Loop",
                "AddInt",
                "Sink",
                "Count",
                "GaussianNoise",
                "SaveImage",
                "SaveTensor",
                "testing/AddInt",
                "core/SaveImage",
                "over",
                "acc",
                "item",
                "index",
                "next",
                "body",
                "inputs",
                "a",
                "x",
                "sum",
                "tensor",
                "image",
                "seed",
                "shape",
            ][..]
        )
        .prop_map(str::to_string),
        "\\PC{0,6}",
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = any::<usize>();
    prop_oneof![
        i.prop_map(Mutation::RemoveNode),
        (i, name()).prop_map(|(a, b)| Mutation::CopyNode(a, b)),
        (i, name()).prop_map(|(a, b)| Mutation::SetType(a, b)),
        (i, i).prop_map(|(a, b)| Mutation::RemoveInput(a, b)),
        (i, name(), value()).prop_map(|(a, b, c)| Mutation::SetInput(a, b, c)),
        (
            i,
            name(),
            i,
            prop_oneof![name().prop_map(J::String), (0u64..4).prop_map(J::from)]
        )
            .prop_map(|(a, b, c, d)| Mutation::LinkTo(a, b, c, d)),
        (i, i).prop_map(|(a, b)| Mutation::MoveIntoLoop(a, b)),
        (name(), value()).prop_map(|(a, b)| Mutation::SetTop(a, b)),
    ]
}

/// Text-level damage after the structural changes.
#[derive(Clone, Debug)]
enum TextMutation {
    None,
    Bom,
    Truncate(usize),
    RepeatLine(usize),
}

fn text_mutation() -> impl Strategy<Value = TextMutation> {
    prop_oneof![
        6 => Just(TextMutation::None),
        1 => Just(TextMutation::Bom),
        1 => any::<usize>().prop_map(TextMutation::Truncate),
        1 => any::<usize>().prop_map(TextMutation::RepeatLine),
    ]
}

/// Every node object in the document with its id, loop bodies included.
fn node_paths(doc: &J) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![vec!["nodes".to_string()]];
    while let Some(path) = stack.pop() {
        let Some(J::Object(map)) = get(doc, &path) else {
            continue;
        };
        for (id, node) in map {
            let mut p = path.clone();
            p.push(id.clone());
            if node.get("body").is_some() {
                let mut b = p.clone();
                b.push("body".into());
                stack.push(b);
            }
            out.push(p);
        }
    }
    out
}

fn get<'a>(doc: &'a J, path: &[String]) -> Option<&'a J> {
    path.iter().try_fold(doc, |v, k| v.get(k))
}

fn get_mut<'a>(doc: &'a mut J, path: &[String]) -> Option<&'a mut J> {
    path.iter().try_fold(doc, |v, k| v.get_mut(k))
}

fn apply(doc: &mut J, m: &Mutation) {
    let nodes = node_paths(doc);
    if nodes.is_empty() {
        if let Mutation::SetTop(k, v) = m {
            if let Some(o) = doc.as_object_mut() {
                o.insert(k.clone(), v.clone());
            }
        }
        return;
    }
    let pick = |i: &usize| nodes[i % nodes.len()].clone();
    let parent_of = |p: &[String]| p[..p.len() - 1].to_vec();
    match m {
        Mutation::RemoveNode(i) => {
            let p = pick(i);
            if let Some(J::Object(map)) = get_mut(doc, &parent_of(&p)) {
                map.remove(p.last().unwrap());
            }
        }
        Mutation::CopyNode(i, id) => {
            let p = pick(i);
            let node = get(doc, &p).cloned().unwrap_or(J::Null);
            if let Some(J::Object(map)) = get_mut(doc, &parent_of(&p)) {
                map.insert(id.clone(), node);
            }
        }
        Mutation::SetType(i, t) => {
            if let Some(J::Object(n)) = get_mut(doc, &pick(i)) {
                n.insert("type".into(), J::String(t.clone()));
            }
        }
        Mutation::RemoveInput(i, k) => {
            if let Some(J::Object(inputs)) =
                get_mut(doc, &pick(i)).and_then(|n| n.get_mut("inputs"))
            {
                if let Some(key) = inputs.keys().nth(k % inputs.len().max(1)).cloned() {
                    inputs.remove(&key);
                }
            }
        }
        Mutation::SetInput(i, name, v) | Mutation::LinkTo(i, name, _, v) => {
            let v = match m {
                Mutation::LinkTo(_, _, j, out) => json!([pick(j).last().unwrap(), out]),
                _ => v.clone(),
            };
            if let Some(J::Object(n)) = get_mut(doc, &pick(i)) {
                let inputs = n.entry("inputs").or_insert_with(|| J::Object(Map::new()));
                if let J::Object(inputs) = inputs {
                    inputs.insert(name.clone(), v);
                }
            }
        }
        Mutation::MoveIntoLoop(i, l) => {
            let (p, target) = (pick(i), pick(l));
            if p == target || target.starts_with(&p) {
                return;
            }
            let node = get_mut(doc, &parent_of(&p))
                .and_then(|m| m.as_object_mut())
                .and_then(|m| m.remove(p.last().unwrap()));
            if let (Some(node), Some(J::Object(t))) = (node, get_mut(doc, &target)) {
                t.insert("type".into(), json!("Loop"));
                if let J::Object(body) = t.entry("body").or_insert_with(|| J::Object(Map::new())) {
                    body.insert(p.last().unwrap().clone(), node);
                }
            }
        }
        Mutation::SetTop(k, v) => {
            if let Some(o) = doc.as_object_mut() {
                o.insert(k.clone(), v.clone());
            }
        }
    }
}

fn damage(text: String, t: &TextMutation) -> String {
    match t {
        TextMutation::None => text,
        TextMutation::Bom => format!("\u{feff}{text}"),
        TextMutation::Truncate(at) => {
            let mut cut = at % (text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_string()
        }
        TextMutation::RepeatLine(k) => {
            let lines: Vec<&str> = text.lines().collect();
            let k = k % lines.len().max(1);
            let mut out: Vec<&str> = lines.clone();
            if let Some(l) = lines.get(k) {
                out.insert(k, l);
            }
            out.join("\n")
        }
    }
}

/// The property: parse + validate + plan never panics.
fn check(text: &str) {
    if let Ok(checked) = diffgraph::parse_graph(text, &[], registry(), false) {
        let _ = diffgraph::exec::Plan::new(&checked, None);
    }
}

fn case() -> impl Strategy<Value = (usize, Vec<Mutation>, TextMutation, bool)> {
    (
        any::<usize>(),
        prop::collection::vec(mutation(), 1..6),
        text_mutation(),
        any::<bool>(),
    )
}

fn run_case(seed: usize, muts: &[Mutation], text_mut: &TextMutation, pretty: bool) {
    let docs = corpus();
    let mut doc = docs[seed % docs.len()].clone();
    for m in muts {
        apply(&mut doc, m);
    }
    let text = if pretty {
        serde_json::to_string_pretty(&doc).unwrap()
    } else {
        doc.to_string()
    };
    check(&damage(text, text_mut));
}

#[test]
fn corpus_graphs_pass_unmutated() {
    for doc in corpus() {
        check(&serde_json::to_string_pretty(doc).unwrap());
    }
}

#[test]
fn mutated_graphs_never_panic() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = env("FUZZ_CASES").unwrap_or(200) as u32;
    let deadline = env("FUZZ_SECONDS").map(|s| Instant::now() + Duration::from_secs(s));
    let mut total = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&case(), |(seed, muts, text_mut, pretty)| {
            run_case(seed, &muts, &text_mut, pretty);
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        total += u64::from(cases);
        if deadline.is_none_or(|d| Instant::now() >= d) {
            break;
        }
    }
    if deadline.is_some() {
        println!("fuzz: {total} mutated graphs through parse, validate and plan, no panic");
    }
}
