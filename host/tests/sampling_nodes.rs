//! The sampling plugin's nodes run through graphs:
//!
//! - `ddim`: DDIMScheduler timesteps, schedule and steps against diffusers
//!   (tests/fixtures/ddim_reference.json, scripts/fixtures/ddim_reference.py);
//! - `schedulers`: the Scheduler node for every sampler against diffusers
//!   (tests/fixtures/schedulers_reference.json,
//!   scripts/fixtures/scheduler_reference.py): timesteps and sigmas, 10-step
//!   trajectories through a Loop carrying the scheduler state, img2img,
//!   seeded noise continuing after GaussianNoise, config files and aliases;
//! - `demo`: sampling loops with the exact denoiser that must land on one of
//!   the procedural images, and graphs/exact_denoiser.json.
//!
//! Graph constants cannot be tensors, so tensor inputs (the fixture's step
//! inputs, the loop's initial noise) are injected after validation: the graph
//! links a placeholder tensor output there, and the test replaces that
//! resolved input with a constant tensor before planning. Each run uses a
//! fresh executor, since the cache key of an injected tensor is not its content.
mod common;
#[path = "sampling_nodes/ddim.rs"]
mod ddim;
#[path = "sampling_nodes/demo.rs"]
mod demo;
#[path = "sampling_nodes/schedulers.rs"]
mod schedulers;

use diffgraph::graph::{Kind, Resolved};
use diffgraph::value::SharedTensor;
use diffgraph::{Executor, RunOutcome, Silent, Value};
use serde_json::Value as Json;
use std::sync::{Mutex, MutexGuard};
use tch::{Device, Kind as DType, Tensor};

const SAMPLING: &str = "diffgraph_nodes_sampling";

/// tests/fixtures/`name`.
fn fixture(name: &str) -> Json {
    let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture"))
        .expect("fixture is JSON")
}

/// Held by tests whose graphs draw from libtorch's global generator
/// (GaussianNoise, stochastic samplers): they reseed it, and test threads
/// run in parallel.
static GLOBAL_RNG: Mutex<()> = Mutex::new(());

fn rng_lock() -> MutexGuard<'static, ()> {
    GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn json_ints(v: &Json) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("int"))
        .collect()
}

fn json_floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

/// Validates `text`, puts `tensors` in place of the named (node, input)
/// links, and runs `targets` on a fresh executor.
fn run_with(
    plugins: &[&str],
    text: &str,
    tensors: Vec<(&str, &str, Tensor)>,
    targets: Option<&[&str]>,
) -> RunOutcome {
    let mut exec = Executor::new(common::registry_with(plugins));
    let mut checked =
        diffgraph::parse_graph(text, &[], &exec.registry, false).unwrap_or_else(|e| panic!("{e}"));
    for (id, input, tensor) in tensors {
        let i = checked.graph.by_id[id];
        let k = match &checked.kinds[i] {
            Kind::Plugin(t) => t.schema.input_index(input).expect("input of the schema"),
            Kind::Loop { carried } => {
                1 + carried
                    .iter()
                    .position(|c| c == input)
                    .expect("carried variable")
            }
        };
        assert!(
            matches!(checked.inputs[i][k], Resolved::Link { .. }),
            "{id}.{input} must be a placeholder link"
        );
        checked.inputs[i][k] = Resolved::Const(Value::Tensor(SharedTensor::new(tensor)));
    }
    exec.run(&checked, targets, &Silent)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn output<'a>(outcome: &'a RunOutcome, node: &str, name: &str) -> &'a Value {
    outcome
        .output(node, name)
        .unwrap_or_else(|| panic!("no output {node}.{name}"))
}

fn tensor(outcome: &RunOutcome, node: &str, name: &str) -> Tensor {
    output(outcome, node, name)
        .as_tensor()
        .unwrap_or_else(|| panic!("{node}.{name} is not a tensor"))
        .shallow_clone()
}

/// A list output of numbers, as f64.
fn numbers(outcome: &RunOutcome, node: &str, name: &str) -> Vec<f64> {
    match output(outcome, node, name) {
        Value::List(items) => items
            .iter()
            .map(|v| match v {
                Value::Int(i) => *i as f64,
                Value::Float(x) => *x,
                other => panic!("{node}.{name}: {other:?} is not a number"),
            })
            .collect(),
        other => panic!("{node}.{name}: expected a list, got {other:?}"),
    }
}

fn float(outcome: &RunOutcome, node: &str, name: &str) -> f64 {
    match output(outcome, node, name) {
        Value::Float(x) => *x,
        other => panic!("{node}.{name}: expected a float, got {other:?}"),
    }
}

fn ints(outcome: &RunOutcome, node: &str, name: &str) -> Vec<i64> {
    match output(outcome, node, name) {
        Value::List(items) => items
            .iter()
            .map(|v| {
                if let Value::Int(i) = v {
                    *i
                } else {
                    panic!("{v:?}")
                }
            })
            .collect(),
        other => panic!("{node}.{name}: expected a list, got {other:?}"),
    }
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_device(Device::Cpu).to_kind(DType::Float).reshape([-1]))
        .expect("float tensor")
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max)
}
