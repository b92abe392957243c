//! What `POST /prompt` accepts: diffgraph's native graph (an object with
//! `nodes`) or ComfyUI's API format (`graph::comfy_api`: node types and
//! input names must be diffgraph's until the ComfyUI workflow translation
//! exists). Validation errors come back in ComfyUI's `{error, node_errors}`
//! shape.
use diffgraph::graph::{comfy_api, ErrorKind};
use diffgraph::{CheckedGraph, GraphErrors, Registry};
use serde_json::{json, Map, Value as Json};

/// A prompt ready to queue: the native graph text and its output node ids.
pub struct Accepted {
    pub graph: String,
    pub outputs: Vec<String>,
}

/// Validates a prompt against the node types; errors in ComfyUI's shape.
pub fn check(
    prompt: &Json,
    registry: &Registry,
    models: &diffgraph::comfy::ModelFolders,
) -> Result<(Accepted, CheckedGraph), Json> {
    let graph = if diffgraph::comfy::uses_comfy_node_types(prompt) {
        // ComfyUI's own node types (CheckpointLoaderSimple, KSampler, ...):
        // the workflow translation (`diffgraph::comfy`) expands them.
        match diffgraph::comfy::translate(prompt.clone(), &[], models) {
            Ok(Some(t)) => t.doc,
            Ok(None) => prompt.clone(),
            Err(errors) => return Err(errors_json(&errors, prompt)),
        }
    } else {
        comfy_api::to_native(prompt).map_err(|m| prompt_error("invalid_prompt", &m))?
    };
    let text = graph.to_string();
    match diffgraph::parse_graph(&text, &[], registry, true) {
        Ok(checked) => {
            let outputs = checked
                .graph
                .nodes
                .iter()
                .filter(|n| {
                    registry
                        .get(&n.type_name)
                        .is_some_and(|t| t.schema.output_node)
                })
                .map(|n| n.id.clone())
                .collect();
            Ok((
                Accepted {
                    graph: text,
                    outputs,
                },
                checked,
            ))
        }
        Err(errors) => Err(errors_json(&errors, &graph)),
    }
}

/// `{"error": {type, message, details, extra_info}, "node_errors": {}}`.
pub fn prompt_error(kind: &str, message: &str) -> Json {
    json!({
        "error": { "type": kind, "message": message, "details": "", "extra_info": {} },
        "node_errors": {},
    })
}

/// ComfyUI's error type for a diffgraph error kind, where they differ.
fn comfy_kind(kind: ErrorKind) -> String {
    match kind {
        ErrorKind::TypeMismatch => "return_type_mismatch".into(),
        ErrorKind::LinkToMissingNode | ErrorKind::LinkToMissingOutput => "bad_linked_input".into(),
        ErrorKind::NoOutputs => "prompt_no_outputs".into(),
        ErrorKind::UnknownNodeType => "invalid_prompt".into(),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    }
}

/// Errors that name a node go to `node_errors`; the first that names none
/// (malformed JSON, no outputs, unknown type) is the top-level `error`.
fn errors_json(errors: &GraphErrors, graph: &Json) -> Json {
    let mut node_errors = Map::new();
    let mut top: Option<Json> = None;
    for e in &errors.0 {
        let kind = comfy_kind(e.kind);
        let item = json!({
            "type": kind,
            "message": e.message,
            "details": e.to_string(),
            "extra_info": {
                "input_name": e.input,
                "received_value": e.received,
                "expected": e.expected,
            },
        });
        let node = match &e.node {
            Some(n) if e.kind != ErrorKind::UnknownNodeType => n,
            _ => {
                top.get_or_insert(json!({
                    "type": kind, "message": e.to_string(), "details": "", "extra_info": {}
                }));
                continue;
            }
        };
        let class = graph["nodes"][node]["type"].clone();
        let entry = node_errors.entry(node.clone()).or_insert_with(
            || json!({ "errors": [], "dependent_outputs": [], "class_type": class }),
        );
        if let Some(list) = entry["errors"].as_array_mut() {
            list.push(item);
        }
    }
    let error = top.unwrap_or_else(|| {
        json!({
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": errors.to_string(),
            "extra_info": {},
        })
    });
    json!({ "error": error, "node_errors": node_errors })
}
