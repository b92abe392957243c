//! ComfyUI's API-format prompt (`{id: {class_type, inputs}}`) as a native
//! graph, taken as it is: node types and input names must be diffgraph's
//! (translating ComfyUI's node types is a separate layer). Links
//! `["id", index]` are the same in both; ComfyUI's wrapped list constants
//! `{"__value__": [...]}` become diffgraph's `{"value": [...]}`.
use serde_json::{json, Map, Value as Json};

/// Whether `doc` is a native graph (an object with `nodes`).
pub fn is_native(doc: &Json) -> bool {
    doc.get("nodes").is_some_and(Json::is_object)
}

/// The native graph for `doc`: itself when native, else converted.
pub fn to_native(doc: &Json) -> Result<Json, String> {
    let Some(obj) = doc.as_object() else {
        return Err("the prompt must be a JSON object".into());
    };
    if is_native(doc) {
        return Ok(doc.clone());
    }
    let mut nodes = Map::new();
    for (id, node) in obj {
        let Some(class) = node.get("class_type").and_then(Json::as_str) else {
            return Err(format!(
                "node `{id}` has no `class_type` (a prompt is a native graph with `nodes`, or ComfyUI's API format)"
            ));
        };
        let inputs: Map<String, Json> = node
            .get("inputs")
            .and_then(Json::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), input(v))).collect())
            .unwrap_or_default();
        nodes.insert(id.clone(), json!({ "type": class, "inputs": inputs }));
    }
    Ok(json!({ "nodes": nodes }))
}

fn input(v: &Json) -> Json {
    match v.get("__value__") {
        Some(inner) if v.as_object().is_some_and(|o| o.len() == 1) => json!({ "value": inner }),
        _ => v.clone(),
    }
}
