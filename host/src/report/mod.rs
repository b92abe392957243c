//! Reports for people and programs: outcomes, run and graph errors, the node
//! listing and the host's build as JSON or text, progress events as JSON,
//! and per-node timing. The CLI prints these; a server returns them. The
//! JSON shapes are what `diffgraph ... --json` prints, so keep them stable.
mod info;
mod nodes;
pub mod profile;

pub use info::info_json;
pub use nodes::{nodes_json, nodes_text};
pub use profile::Profile;

use crate::exec::{Event, RunError, RunOutcome};
use crate::graph::{CheckedGraph, GraphErrors};
use crate::value::Value;
use serde_json::{json, Map, Value as Json};
use std::path::Path;

/// A value as JSON (tensors and objects are described, not dumped).
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Int(i) => (*i).into(),
        Value::Float(f) => (*f).into(),
        Value::Bool(b) => (*b).into(),
        Value::Str(s) => s.as_ref().into(),
        Value::List(items) => items.iter().map(value_json).collect(),
        Value::Tensor(t) => {
            json!({ "tensor": t.tensor().size(), "dtype": format!("{:?}", t.tensor().kind()) })
        }
        Value::Object(o) => json!({ "object": o.type_name() }),
    }
}

/// `{target id: {output name: value}}`.
pub fn outputs_json(outcome: &RunOutcome) -> Map<String, Json> {
    outcome
        .outputs
        .iter()
        .map(|(id, outs)| {
            let named = outs.iter().map(|(n, v)| (n.clone(), value_json(v)));
            (id.clone(), named.collect())
        })
        .collect()
}

/// A finished run: `{"ok": true, "outputs", "executed", "cached", "seconds"}`.
pub fn outcome_json(outcome: &RunOutcome) -> Json {
    json!({
        "ok": true, "outputs": outputs_json(outcome), "executed": outcome.executed,
        "cached": outcome.cached, "seconds": outcome.seconds,
    })
}

/// A failed run: `{"node", "error"}` (`node` is null for planning errors).
pub fn run_error_fields(e: &RunError) -> Json {
    json!({ "node": e.node(), "error": e.to_string() })
}

/// A failed run as a result: [`run_error_fields`] with `"ok": false`.
pub fn run_error_json(e: &RunError) -> Json {
    let mut v = run_error_fields(e);
    v["ok"] = false.into();
    v
}

/// A graph that did not validate: `{"ok": false, "errors": [...]}`.
pub fn graph_errors_json(errors: &GraphErrors) -> Json {
    json!({ "ok": false, "errors": errors.0 })
}

/// A graph that validated: `{"ok": true, "nodes": count}`.
pub fn valid_json(checked: &CheckedGraph) -> Json {
    json!({ "ok": true, "nodes": checked.graph.nodes.len() })
}

/// The files the run's output nodes reported writing (strings naming
/// existing files, lists searched too), in output order.
pub fn output_files(outcome: &RunOutcome) -> Vec<String> {
    let mut files = Vec::new();
    for (_, outs) in &outcome.outputs {
        for (_, v) in outs {
            collect_files(v, &mut files);
        }
    }
    files
}

/// The files among one node's output values (strings naming existing files,
/// lists searched too).
pub fn files_in(values: &[Value]) -> Vec<String> {
    let mut files = Vec::new();
    values.iter().for_each(|v| collect_files(v, &mut files));
    files
}

fn collect_files(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Str(s) if Path::new(s.as_ref()).is_file() => out.push(s.to_string()),
        Value::List(items) => items.iter().for_each(|i| collect_files(i, out)),
        _ => {}
    }
}

/// A progress event as JSON, `{"event": kind, ...fields}`, for streaming
/// (e.g. a server's event feed).
pub fn event_json(e: &Event) -> Json {
    match e {
        Event::RunStart { steps } => json!({ "event": "run_start", "steps": steps }),
        Event::NodeStart { id, type_name } => {
            json!({ "event": "node_start", "node": id, "type": type_name })
        }
        Event::NodeCached { id } => json!({ "event": "node_cached", "node": id }),
        Event::NodeDone { id, seconds } => {
            json!({ "event": "node_done", "node": id, "seconds": seconds })
        }
        Event::LoopStep { id, done, total } => {
            json!({ "event": "loop_step", "node": id, "done": done, "total": total })
        }
        Event::NodeProgress { id, done, total } => {
            json!({ "event": "node_progress", "node": id, "done": done, "total": total })
        }
        Event::OutputDone { id, values } => {
            json!({ "event": "output_done", "node": id, "files": files_in(values) })
        }
        // The values themselves are tensors and objects: not JSON.
        Event::LoopCarried {
            id, done, total, ..
        } => json!({ "event": "loop_carried", "node": id, "done": done, "total": total }),
        Event::RunDone { seconds } => json!({ "event": "run_done", "seconds": seconds }),
    }
}

/// The inverse of [`event_json`]: hands an event received as JSON (from a
/// worker process) to `observer`, so progress bars and profiles work the same
/// for isolated runs. Unknown or malformed events are ignored.
pub fn replay_event(event: &Json, observer: &dyn crate::exec::Observer) {
    let s = |k: &str| event[k].as_str().unwrap_or_default();
    let n = |k: &str| event[k].as_u64().unwrap_or_default();
    let f = |k: &str| event[k].as_f64().unwrap_or_default();
    let e = match s("event") {
        "run_start" => Event::RunStart {
            steps: n("steps") as usize,
        },
        "node_start" => Event::NodeStart {
            id: s("node"),
            type_name: s("type"),
        },
        "node_cached" => Event::NodeCached { id: s("node") },
        "node_done" => Event::NodeDone {
            id: s("node"),
            seconds: f("seconds"),
        },
        "loop_step" => Event::LoopStep {
            id: s("node"),
            done: n("done") as usize,
            total: n("total") as usize,
        },
        "node_progress" => Event::NodeProgress {
            id: s("node"),
            done: n("done"),
            total: n("total"),
        },
        "run_done" => Event::RunDone {
            seconds: f("seconds"),
        },
        _ => return,
    };
    observer.event(&e);
}
