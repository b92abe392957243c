//! Subgraphs of ComfyUI's editor format (`definitions.subgraphs`) flattened
//! into one graph before the UI-to-API conversion, as the frontend's
//! `ExecutableNodeDTO` (`src/lib/litegraph/src/subgraph/ExecutableNodeDTO.ts`,
//! `resolveInput`/`resolveOutput`) resolves them:
//! - a node whose `type` is a subgraph definition's `id` is an instance; its
//!   inner nodes get the execution ids `INSTANCE:INNER` (nested: `A:B:C`);
//! - inside, a link from the input node (id -10) slot k reads whatever feeds
//!   the instance's input k (outside the instance, recursively); an unlinked
//!   instance input gives its promoted widget's value (the instance's
//!   `widgets_values`, one per widget input in order), else the inner
//!   node's own widget value stays;
//! - a link from an instance's output j reads what is linked, inside, to the
//!   output node (id -20) slot j;
//! - an instance's mode (muted 2, bypassed 4) is given to its inner nodes.
//!
//! The result is a flat editor-format document (links re-numbered, a
//! promoted widget value as a `PrimitiveNode`), which `ui::to_api` converts.
use crate::graph::{ErrorKind, GraphError};
use serde_json::{json, Value as Json};
use std::collections::HashMap;

const INPUT_NODE: i64 = -10;
const OUTPUT_NODE: i64 = -20;
/// Deeper nesting than this is taken for a definition that contains itself.
const MAX_DEPTH: usize = 32;

/// One link: (origin node, origin slot, target node, target slot, type).
#[derive(Clone)]
struct Link {
    origin: String,
    slot: u64,
    target: String,
    target_slot: u64,
    ty: Json,
}

struct Graph<'a> {
    nodes: HashMap<String, &'a Json>,
    order: Vec<&'a Json>,
    links: HashMap<i64, Link>,
}

/// A frame of the instance stack: the graph, its id prefix, and the
/// instance (in the enclosing frame's graph) it is the inside of.
#[derive(Clone)]
struct Frame<'x> {
    graph: &'x Graph<'x>,
    prefix: String,
    instance: Option<&'x Json>,
}

/// What a link delivers, once subgraph boundaries are crossed.
enum Src {
    Output(String, u64, Json),
    Value(Json),
    Nothing,
}

type Errors = Vec<GraphError>;
type Defs<'x> = HashMap<String, Graph<'x>>;

fn bad(m: String) -> Errors {
    vec![GraphError::new(ErrorKind::InvalidGraph, m)]
}

fn id_string(v: &Json) -> Option<String> {
    match v {
        Json::Number(n) => Some(n.to_string()),
        Json::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn graph(doc: &Json) -> Result<Graph<'_>, Errors> {
    let mut g = Graph {
        nodes: HashMap::new(),
        order: Vec::new(),
        links: HashMap::new(),
    };
    for n in doc["nodes"].as_array().into_iter().flatten() {
        let id = id_string(&n["id"]).ok_or_else(|| bad(format!("a node without an `id`: {n}")))?;
        g.nodes.insert(id, n);
        g.order.push(n);
    }
    for l in doc["links"].as_array().into_iter().flatten() {
        let get = |i: usize, k: &str| match l {
            Json::Array(a) => a.get(i).cloned(),
            _ => l.get(k).cloned(),
        };
        let (id, origin, slot, target_slot) = (
            get(0, "id").and_then(|v| v.as_i64()),
            get(1, "origin_id").as_ref().and_then(id_string),
            get(2, "origin_slot").and_then(|v| v.as_u64()),
            get(4, "target_slot").and_then(|v| v.as_u64()),
        );
        let target = get(3, "target_id").as_ref().and_then(id_string);
        let (Some(id), Some(origin), Some(slot), Some(target), Some(target_slot)) =
            (id, origin, slot, target, target_slot)
        else {
            return Err(bad(format!(
                "a link that is not [id, origin node, origin slot, target node, target slot, type]: {l}"
            )));
        };
        let ty = get(5, "type").unwrap_or(Json::Null);
        g.links.insert(
            id,
            Link {
                origin,
                slot,
                target,
                target_slot,
                ty,
            },
        );
    }
    Ok(g)
}

/// Every subgraph definition by id, nested `definitions` included.
fn definitions<'a>(doc: &'a Json, out: &mut HashMap<String, &'a Json>) {
    for d in doc["definitions"]["subgraphs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(id) = d["id"].as_str() {
            out.insert(id.to_string(), d);
            definitions(d, out);
        }
    }
}

/// Whether the document has subgraph definitions.
pub fn has_subgraphs(doc: &Json) -> bool {
    doc["definitions"]["subgraphs"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

/// The document with every subgraph instance replaced by its inner nodes.
pub fn flatten(doc: &Json) -> Result<Json, Errors> {
    let mut raw = HashMap::new();
    definitions(doc, &mut raw);
    let mut defs = Defs::new();
    for (id, d) in &raw {
        defs.insert(id.clone(), graph(d)?);
    }
    let top = graph(doc)?;
    let mut out = Out::default();
    let mut frames = vec![Frame {
        graph: &top,
        prefix: String::new(),
        instance: None,
    }];
    out.emit(&defs, &mut frames, None)?;
    let mut doc = doc.clone();
    doc["nodes"] = Json::Array(out.nodes);
    doc["links"] = Json::Array(out.links);
    if let Some(d) = doc.get_mut("definitions").and_then(Json::as_object_mut) {
        d.remove("subgraphs");
    }
    Ok(doc)
}

#[derive(Default)]
struct Out {
    nodes: Vec<Json>,
    links: Vec<Json>,
}

impl Out {
    fn link(&mut self, origin: &str, slot: u64, target: &str, target_slot: usize, ty: Json) -> i64 {
        let id = self.links.len() as i64 + 1;
        self.links
            .push(json!([id, origin, slot, target, target_slot, ty]));
        id
    }

    /// Emits the nodes of the innermost frame, instances expanded; `mode`
    /// is an enclosing instance's mute or bypass.
    fn emit<'x>(
        &mut self,
        defs: &'x Defs<'x>,
        frames: &mut Vec<Frame<'x>>,
        mode: Option<i64>,
    ) -> Result<(), Errors> {
        if frames.len() > MAX_DEPTH {
            return Err(bad(format!(
                "subgraphs nested more than {MAX_DEPTH} deep (a subgraph that contains itself?)"
            )));
        }
        let frame = frames.last().expect("a frame").clone();
        for n in &frame.graph.order {
            let id = id_string(&n["id"]).unwrap_or_default();
            let own = n["mode"].as_i64().filter(|m| matches!(m, 2 | 4));
            if let Some(d) = n["type"].as_str().and_then(|t| defs.get(t)) {
                frames.push(Frame {
                    graph: d,
                    prefix: format!("{}{id}:", frame.prefix),
                    instance: Some(n),
                });
                let r = self.emit(defs, frames, mode.or(own));
                frames.pop();
                r?;
                continue;
            }
            let flat_id = format!("{}{id}", frame.prefix);
            let mut node = (*n).clone();
            node["id"] = json!(flat_id);
            if let Some(m) = mode {
                node["mode"] = json!(m);
            }
            let inputs = node["inputs"].as_array().cloned().unwrap_or_default();
            for (i, input) in inputs.iter().enumerate() {
                let Some(link) = input["link"].as_i64() else {
                    continue;
                };
                let new = match src(defs, frames, link, 0)? {
                    Src::Output(origin, slot, ty) => {
                        json!(self.link(&origin, slot, &flat_id, i, ty))
                    }
                    Src::Value(v) => {
                        let prim = format!("{flat_id}:{i}:value");
                        self.nodes.push(json!({ "id": prim, "type": "PrimitiveNode",
                            "mode": 0, "widgets_values": [v] }));
                        json!(self.link(&prim, 0, &flat_id, i, input["type"].clone()))
                    }
                    Src::Nothing => Json::Null,
                };
                node["inputs"][i]["link"] = new;
            }
            self.nodes.push(node);
        }
        Ok(())
    }
}

/// What link `id` of the innermost frame's graph delivers.
fn src<'x>(defs: &'x Defs<'x>, frames: &[Frame<'x>], id: i64, depth: usize) -> Result<Src, Errors> {
    if depth > MAX_DEPTH * 4 {
        return Err(bad("subgraph links that lead in a circle".into()));
    }
    let frame = frames.last().expect("a frame");
    let Some(l) = frame.graph.links.get(&id) else {
        return Ok(Src::Nothing);
    };
    if l.origin == INPUT_NODE.to_string() {
        // Out of the subgraph: what feeds the instance's input.
        let Some(inst) = frame.instance else {
            return Ok(Src::Nothing);
        };
        let inputs = inst["inputs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let Some(input) = inputs.get(l.slot as usize) else {
            return Ok(Src::Nothing);
        };
        if let Some(outer) = input["link"].as_i64() {
            return src(defs, &frames[..frames.len() - 1], outer, depth + 1);
        }
        if input.get("widget").is_some() {
            let index = inputs[..l.slot as usize]
                .iter()
                .filter(|i| i.get("widget").is_some())
                .count();
            if let Some(v) = inst["widgets_values"].get(index) {
                return Ok(Src::Value(v.clone()));
            }
        }
        return Ok(Src::Nothing);
    }
    let Some(origin) = frame.graph.nodes.get(&l.origin) else {
        return Ok(Src::Nothing);
    };
    if let Some(d) = origin["type"].as_str().and_then(|t| defs.get(t)) {
        // Into an instance: what its definition links to output `slot`.
        let inner = d
            .links
            .iter()
            .find(|(_, x)| x.target == OUTPUT_NODE.to_string() && x.target_slot == l.slot);
        let Some((inner, _)) = inner else {
            return Ok(Src::Nothing);
        };
        let mut deeper = frames.to_vec();
        deeper.push(Frame {
            graph: d,
            prefix: format!("{}{}:", frame.prefix, l.origin),
            instance: Some(origin),
        });
        return src(defs, &deeper, *inner, depth + 1);
    }
    Ok(Src::Output(
        format!("{}{}", frame.prefix, l.origin),
        l.slot,
        l.ty.clone(),
    ))
}
