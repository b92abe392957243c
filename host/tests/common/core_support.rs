//! Helpers for the core plugin's tests (core_nodes.rs, core_images.rs).
use diffgraph::{Executor, Value};
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub fn executor(out: &Path) -> Executor {
    let mut exec = Executor::new(super::registry_with(&["diffgraph_nodes_core"]));
    exec.set_output_dir(out.to_str().expect("utf-8 temp path"));
    exec
}

pub fn tensor_out(outcome: &diffgraph::RunOutcome, node: &str, name: &str) -> Tensor {
    match outcome.output(node, name) {
        Some(v) => v
            .as_tensor()
            .unwrap_or_else(|| panic!("{node}.{name} is {v:?}, not a tensor"))
            .shallow_clone(),
        None => panic!("no output {node}.{name}"),
    }
}

pub fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1)).unwrap()
}

pub fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::List(items)) => items.iter().map(|i| i.to_string()).collect(),
        other => panic!("expected a list of strings, got {other:?}"),
    }
}

pub fn ints(v: Option<&Value>) -> Vec<i64> {
    match v {
        Some(Value::List(items)) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) => *n,
                other => panic!("expected an int, got {other:?}"),
            })
            .collect(),
        other => panic!("expected a list of ints, got {other:?}"),
    }
}

/// Runs graph text that is expected to fail; returns the error message.
pub fn run_err(exec: &mut Executor, text: &str) -> String {
    let checked =
        diffgraph::parse_graph(text, &[], &exec.registry, false).unwrap_or_else(|e| panic!("{e}"));
    match exec.run(&checked, None, &diffgraph::Silent) {
        Ok(o) => panic!("expected the run to fail, got {:?}", o.outputs),
        Err(e) => e.to_string(),
    }
}

/// File names in `dir` (not recursive), sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
