//! ComfyUI's editor (UI) format to its API format, as the frontend's
//! `graphToPrompt` does it (ComfyUI_frontend `src/utils/executionUtil.ts`,
//! `src/lib/litegraph` `LGraphNode`): `nodes` is a list with
//! `widgets_values` (the widget inputs in the node schema's order, with the
//! frontend's extra `control_after_generate` value after a seed widget),
//! `links` are `[id, origin node, origin slot, target node, target slot,
//! type]` (or objects with those names), and:
//! - `PrimitiveNode` is not a node: its value goes into the inputs it feeds;
//! - `Reroute` is followed to what feeds it; `Note`/`MarkdownNote` are ignored;
//! - a muted node (mode 2) is left out, and so is every input it fed;
//! - a bypassed node (mode 4) is left out and its consumers read the input of
//!   the same type instead (the same slot first, else the first such input);
//! - subgraphs (`definitions.subgraphs`) are flattened first (`subgraph`).
use super::schema::{self, Ty};
use crate::graph::{ErrorKind, GraphError};
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;

const MODE_MUTED: i64 = 2;
const MODE_BYPASSED: i64 = 4;
/// Widgets after which the frontend stores `control_after_generate`.
const SEED_WIDGETS: &[&str] = &["seed", "noise_seed"];

struct Link {
    origin: String,
    slot: usize,
}

/// What an input link resolves to.
enum Source {
    Link(String, usize),
    Value(Json),
    Nothing,
}

struct Ui<'a> {
    nodes: HashMap<String, &'a Json>,
    links: HashMap<i64, Link>,
}

/// The API-format workflow of a UI-format document.
pub fn to_api(doc: &Json) -> Result<Json, Vec<GraphError>> {
    let bad = |m: String| vec![GraphError::new(ErrorKind::InvalidGraph, m)];
    if super::subgraph::has_subgraphs(doc) {
        return to_api(&super::subgraph::flatten(doc)?);
    }
    let list = doc["nodes"]
        .as_array()
        .ok_or_else(|| bad("`nodes` is not a list".into()))?;
    let mut ui = Ui {
        nodes: HashMap::new(),
        links: HashMap::new(),
    };
    for n in list {
        let id = id_string(&n["id"]).ok_or_else(|| bad(format!("a node without an `id`: {n}")))?;
        ui.nodes.insert(id, n);
    }
    for l in doc["links"].as_array().into_iter().flatten() {
        let (id, origin, slot) = match l {
            Json::Array(a) => (a.first(), a.get(1), a.get(2)),
            _ => (l.get("id"), l.get("origin_id"), l.get("origin_slot")),
        };
        let (Some(id), Some(origin), Some(slot)) = (
            id.and_then(Json::as_i64),
            origin.and_then(id_string),
            slot.and_then(Json::as_u64),
        ) else {
            return Err(bad(format!("a link that is not [id, origin node, origin slot, target node, target slot, type]: {l}")));
        };
        ui.links.insert(
            id,
            Link {
                origin,
                slot: slot as usize,
            },
        );
    }
    let mut api = Map::new();
    for (id, n) in &ui.nodes {
        let class = n["type"].as_str().unwrap_or_default();
        if is_virtual(class) || matches!(mode(n), MODE_MUTED | MODE_BYPASSED) {
            continue;
        }
        let mut inputs = widget_inputs(n, class);
        for input in n["inputs"].as_array().into_iter().flatten() {
            let (Some(name), Some(link)) = (input["name"].as_str(), input["link"].as_i64()) else {
                continue;
            };
            match ui.resolve(link, 0) {
                Source::Link(node, slot) => {
                    inputs.insert(name.into(), json!([node, slot]));
                }
                Source::Value(v) => {
                    inputs.insert(name.into(), v);
                }
                Source::Nothing => {
                    inputs.remove(name);
                }
            }
        }
        api.insert(id.clone(), json!({ "class_type": class, "inputs": inputs }));
    }
    Ok(Json::Object(api))
}

fn id_string(v: &Json) -> Option<String> {
    match v {
        Json::Number(n) => Some(n.to_string()),
        Json::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn mode(n: &Json) -> i64 {
    n["mode"].as_i64().unwrap_or(0)
}

fn is_virtual(class: &str) -> bool {
    matches!(class, "PrimitiveNode" | "Reroute" | "Note" | "MarkdownNote")
}

/// The widget values by name, in the schema's widget order. Unknown node
/// types get none (validation then names the type).
fn widget_inputs(n: &Json, class: &str) -> Map<String, Json> {
    let mut out = Map::new();
    let Some(spec) = schema::spec(class) else {
        return out;
    };
    let widgets = spec
        .inputs
        .iter()
        .filter(|(_, ty)| !matches!(ty, Ty::Link(_)))
        .map(|(name, _)| *name);
    match &n["widgets_values"] {
        Json::Array(values) => {
            let mut values = values.iter();
            for name in widgets {
                let Some(v) = values.next() else { break };
                out.insert(name.into(), v.clone());
                if SEED_WIDGETS.contains(&name) {
                    values.next(); // control_after_generate
                }
            }
        }
        Json::Object(by_name) => {
            for name in widgets {
                if let Some(v) = by_name.get(name) {
                    out.insert(name.into(), v.clone());
                }
            }
        }
        _ => {}
    }
    out
}

impl Ui<'_> {
    /// What link `id` delivers, through Reroutes, PrimitiveNodes and bypassed
    /// nodes (`depth` guards against cycles of them).
    fn resolve(&self, id: i64, depth: usize) -> Source {
        let Some(link) = self.links.get(&id) else {
            return Source::Nothing;
        };
        let Some(n) = self.nodes.get(&link.origin) else {
            return Source::Nothing;
        };
        if depth > self.nodes.len() {
            return Source::Nothing;
        }
        let class = n["type"].as_str().unwrap_or_default();
        let input_link = |i: usize| n["inputs"].get(i).and_then(|x| x["link"].as_i64());
        match class {
            "PrimitiveNode" => match n["widgets_values"].get(0) {
                Some(v) => Source::Value(v.clone()),
                None => Source::Nothing,
            },
            "Reroute" => match input_link(0) {
                Some(l) => self.resolve(l, depth + 1),
                None => Source::Nothing,
            },
            _ if mode(n) == MODE_MUTED => Source::Nothing,
            _ if mode(n) == MODE_BYPASSED => {
                let ty = &n["outputs"][link.slot]["type"];
                let inputs = n["inputs"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let same = |i: &usize| inputs[*i]["type"] == *ty && inputs[*i]["link"].is_i64();
                let pick = Some(link.slot)
                    .filter(|i| *i < inputs.len() && same(i))
                    .or_else(|| (0..inputs.len()).find(same));
                match pick.and_then(input_link) {
                    Some(l) => self.resolve(l, depth + 1),
                    None => Source::Nothing,
                }
            }
            _ => Source::Link(link.origin.clone(), link.slot),
        }
    }
}
