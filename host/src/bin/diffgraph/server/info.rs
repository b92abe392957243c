//! `/object_info` (every node type in ComfyUI's schema, `server.py`
//! `node_info`), `/system_stats`, `/features`.
use super::state::AppState;
use super::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use diffgraph_sdk::{InputSpec, NodeSchema, PortType};
use serde_json::{json, Map, Value as Json_};
use std::sync::Arc;

/// ComfyUI's name for a port type (`BOOLEAN`; the rest are diffgraph's).
fn type_name(t: &PortType) -> String {
    match t {
        PortType::Bool => "BOOLEAN".into(),
        other => other.to_string(),
    }
}

/// `[TYPE or [choices], {default, min, max, step, tooltip}]`.
fn input_json(i: &InputSpec) -> Json_ {
    let mut opts = Map::new();
    if let Some(d) = &i.default {
        opts.insert("default".into(), d.clone());
    }
    if let Some(m) = i.min {
        opts.insert("min".into(), m.into());
    }
    if let Some(m) = i.max {
        opts.insert("max".into(), m.into());
    }
    if i.ty == PortType::Int {
        opts.insert("step".into(), 1.into());
    }
    if !i.description.is_empty() {
        opts.insert("tooltip".into(), i.description.clone().into());
    }
    let ty = match &i.choices {
        Some(c) => json!(c),
        None => type_name(&i.ty).into(),
    };
    json!([ty, opts])
}

/// One node type as ComfyUI describes it. Inputs that are required or have
/// a default (widgets) are `required`; inputs the node may go without are
/// `optional`.
pub fn node_info(s: &NodeSchema) -> Json_ {
    let (mut required, mut optional) = (Map::new(), Map::new());
    let (mut req_order, mut opt_order) = (Vec::new(), Vec::new());
    for i in &s.inputs {
        if i.required || i.default.is_some() {
            required.insert(i.name.clone(), input_json(i));
            req_order.push(i.name.clone());
        } else {
            optional.insert(i.name.clone(), input_json(i));
            opt_order.push(i.name.clone());
        }
    }
    json!({
        "input": { "required": required, "optional": optional },
        "input_order": { "required": req_order, "optional": opt_order },
        "output": s.outputs.iter().map(|o| type_name(&o.ty)).collect::<Vec<_>>(),
        "output_is_list": s.outputs.iter().map(|_| false).collect::<Vec<_>>(),
        "output_name": s.outputs.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
        "output_tooltips": s.outputs.iter().map(|o| o.description.clone()).collect::<Vec<_>>(),
        "name": s.type_name,
        "display_name": s.type_name,
        "description": s.description,
        "python_module": "diffgraph",
        "category": s.category,
        "output_node": s.output_node,
    })
}

/// The model and input folders whose files `/object_info` lists.
fn folders(state: &AppState) -> diffgraph::comfy::ModelFolders {
    diffgraph::comfy::ModelFolders::new(std::slice::from_ref(&state.models))
        .with_input(state.input.clone())
}

/// Native node types, then ComfyUI's (`diffgraph::comfy::object_info`),
/// which take a name both have.
pub async fn object_info(State(state): State<Arc<AppState>>) -> Json<Json_> {
    let mut map: Map<String, Json_> = state
        .registry()
        .types()
        .map(|t| (t.schema.type_name.clone(), node_info(&t.schema)))
        .collect();
    map.extend(diffgraph::comfy::object_info::all_nodes(&folders(&state)));
    Json(Json_::Object(map))
}

pub async fn object_info_one(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    if let Some(spec) = diffgraph::comfy::schema::spec(&name) {
        let info = diffgraph::comfy::object_info::node_info(spec, &folders(&state));
        return Ok(Json(json!({ name: info })));
    }
    match state.registry().get(&name) {
        Some(t) => Ok(Json(json!({ name: node_info(&t.schema) }))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            "unknown_node_type".into(),
            format!("no node type `{name}`"),
        )),
    }
}

/// Total and available memory from /proc/meminfo (bytes; 0 elsewhere).
fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

pub async fn system_stats(State(state): State<Arc<AppState>>) -> Json<Json_> {
    let (total, free) = memory();
    // The worker measures its device (the server process never touches the
    // GPU): at its start and after each job. Until it has started, the
    // device as requested, nothing measured yet.
    let mut device = state
        .device_stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if device.is_null() {
        device = json!({
            "name": state.device, "type": state.device.split(':').next().unwrap_or("cpu"),
            "index": state.device.split(':').nth(1).and_then(|i| i.parse::<u32>().ok()),
            "vram_total": 0, "vram_free": 0, "torch_vram_total": 0, "torch_vram_free": 0,
        });
    }
    Json(json!({
        "system": {
            "os": std::env::consts::OS,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": format!("diffgraph {}", env!("CARGO_PKG_VERSION")),
            "python_version": "",
            "pytorch_version": format!("libtorch (tch {})", diffgraph_sdk::abi::TCH_VERSION),
            "embedded_python": false,
            "argv": std::env::args().collect::<Vec<_>>(),
        },
        "devices": [device],
    }))
}

pub async fn features(State(state): State<Arc<AppState>>) -> Json<Json_> {
    Json(json!({ "supports_preview_metadata": false, "max_upload_size": state.max_body }))
}
