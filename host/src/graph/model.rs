//! The graph file format, parsed into a flat list of nodes.
//!
//! ```json
//! { "nodes": {
//!     "seed":  { "type": "IntConstant", "inputs": { "value": 42 } },
//!     "noise": { "type": "GaussianNoise", "inputs": { "seed": ["seed", "value"], "shape": [1, 4, 8, 8] } },
//!     "loop":  { "type": "Loop",
//!                "inputs": { "over": ["sched", "timesteps"], "x": ["noise", "noise"] },
//!                "body":   { "step": { "type": "...", "inputs": { "x": ["loop", "x"], "t": ["loop", "item"] } } },
//!                "next":   { "x": ["step", "x"] } } } }
//! ```
//! An input is a constant or a link `["node id", "output name" | output index]`.
//! Any other array is a list constant; `{"value": ...}` forces a constant.
//! Node ids are unique in the whole file, loop bodies included.
use super::errors::{ErrorKind, GraphError};
use serde_json::{Map, Value as Json};
use std::collections::HashMap;

/// The built-in node type that evaluates a body sub-graph once per element.
pub const LOOP_TYPE: &str = "Loop";
/// Loop input holding the list to iterate (or an int: that many iterations).
pub const LOOP_OVER: &str = "over";
/// Per-iteration variables that body nodes read from the loop node.
pub const LOOP_ITEM: &str = "item";
pub const LOOP_INDEX: &str = "index";

/// Which output of a node a link reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OutputRef {
    Name(String),
    Index(usize),
}

impl std::fmt::Display for OutputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputRef::Name(n) => f.write_str(n),
            OutputRef::Index(i) => write!(f, "#{i}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    pub node: String,
    pub output: OutputRef,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Link(Link),
    Const(Json),
}

/// One node of the file, wherever it sits.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    pub type_name: String,
    pub inputs: Vec<(String, Input)>,
    /// The loop whose body holds this node (index into `Graph::nodes`).
    pub scope: Option<usize>,
    /// For loops: the body's nodes (indices) and the carried variables' next values.
    pub body: Vec<usize>,
    pub next: Vec<(String, Input)>,
}

impl Node {
    pub fn is_loop(&self) -> bool {
        self.type_name == LOOP_TYPE
    }
    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, i)| i)
    }
}

/// A parsed graph file: all nodes, flattened; `scope` says where each sits.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub by_id: HashMap<String, usize>,
    pub description: Option<String>,
}

impl Graph {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.by_id.get(id).map(|&i| &self.nodes[i])
    }
    /// The nodes directly in `scope` (None: the top level).
    pub fn scope_nodes(&self, scope: Option<usize>) -> Vec<usize> {
        match scope {
            None => (0..self.nodes.len())
                .filter(|&i| self.nodes[i].scope.is_none())
                .collect(),
            Some(l) => self.nodes[l].body.clone(),
        }
    }
}

const NODE_KEYS: &[&str] = &["type", "inputs", "body", "next", "title", "comment"];

/// Parses graph text; collects every structural problem it can find.
pub fn parse(text: &str) -> Result<Graph, Vec<GraphError>> {
    // Well-formed text takes the streaming path; anything else gets the
    // full parser's errors (`fast_parse`).
    if let Some(graph) = super::fast_parse::parse(text) {
        return Ok(graph);
    }
    let json = parse_document(text)?;
    from_json(&json)
}

/// Graph text to JSON: a leading UTF-8 byte order mark is skipped (editors on
/// Windows write one), and keys given twice in one object are errors naming
/// both lines (serde_json alone would keep the last silently).
pub fn parse_document(text: &str) -> Result<Json, Vec<GraphError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let json: Json = serde_json::from_str(text).map_err(|e| {
        let mut err = GraphError::new(ErrorKind::MalformedJson, format!("not valid JSON: {e}"));
        err.line = Some(e.line());
        err.column = Some(e.column());
        vec![err]
    })?;
    let duplicates = super::json_keys::duplicate_keys(text);
    if !duplicates.is_empty() {
        return Err(duplicates.iter().map(|d| d.to_error()).collect());
    }
    Ok(json)
}

/// Builds a graph from already-parsed JSON (after `--set` overrides).
pub fn from_json(json: &Json) -> Result<Graph, Vec<GraphError>> {
    let mut errors = Vec::new();
    let mut graph = Graph::default();
    let Some(root) = json.as_object() else {
        return Err(vec![GraphError::new(
            ErrorKind::InvalidGraph,
            "a graph file is a JSON object with a `nodes` object",
        )]);
    };
    graph.description = root
        .get("description")
        .and_then(|d| d.as_str())
        .map(String::from);
    for key in root.keys() {
        if !["nodes", "description", "version"].contains(&key.as_str()) {
            errors.push(
                GraphError::new(
                    ErrorKind::InvalidGraph,
                    format!("unknown top-level field `{key}`"),
                )
                .expected("`nodes`, `description` or `version`"),
            );
        }
    }
    match root.get("nodes") {
        Some(Json::Object(nodes)) => {
            parse_scope(nodes, None, &mut graph, &mut errors);
        }
        None => errors.push(GraphError::new(
            ErrorKind::InvalidGraph,
            "missing the `nodes` object",
        )),
        Some(other) => errors.push(
            GraphError::new(
                ErrorKind::InvalidGraph,
                "`nodes` must be an object keyed by node id, e.g. \
                 {\"nodes\": {\"noise\": {\"type\": \"GaussianNoise\", \"inputs\": {...}}}}",
            )
            .expected("an object of id: node")
            .received(json_kind(other)),
        ),
    }
    if errors.is_empty() {
        Ok(graph)
    } else {
        Err(errors)
    }
}

fn parse_scope(
    nodes: &Map<String, Json>,
    scope: Option<usize>,
    graph: &mut Graph,
    errors: &mut Vec<GraphError>,
) -> Vec<usize> {
    let mut members = Vec::new();
    for (id, spec) in nodes {
        if let Some(i) = parse_node(id, spec, scope, graph, errors) {
            members.push(i);
        }
    }
    members
}

fn parse_node(
    id: &str,
    spec: &Json,
    scope: Option<usize>,
    graph: &mut Graph,
    errors: &mut Vec<GraphError>,
) -> Option<usize> {
    let err = |kind, msg: String| GraphError::new(kind, msg).node(id);
    if graph.by_id.contains_key(id) {
        errors.push(err(ErrorKind::DuplicateNodeId, "this id is used by another node (ids are unique in the whole file, loop bodies included)".into()));
        return None;
    }
    if id.is_empty() || id.contains('.') || id.chars().any(char::is_whitespace) {
        errors.push(err(
            ErrorKind::InvalidGraph,
            "node ids must be non-empty, without dots or spaces".into(),
        ));
    }
    let Some(obj) = spec.as_object() else {
        errors.push(
            err(
                ErrorKind::InvalidGraph,
                "a node is an object with `type` and `inputs`".into(),
            )
            .received(json_kind(spec)),
        );
        return None;
    };
    for key in obj.keys() {
        if !NODE_KEYS.contains(&key.as_str()) && key != "class_type" {
            errors.push(
                err(ErrorKind::InvalidGraph, format!("unknown field `{key}`"))
                    .expected(NODE_KEYS.join(", ")),
            );
        }
    }
    // `class_type` is accepted as ComfyUI's name for `type`.
    let type_name = match obj.get("type").or_else(|| obj.get("class_type")) {
        Some(Json::String(t)) if !t.trim().is_empty() => t.clone(),
        Some(Json::String(_)) => {
            errors.push(
                err(ErrorKind::InvalidGraph, "empty `type`".into())
                    .expected(
                        "a node type name such as \"GaussianNoise\" (`diffgraph nodes` lists them)",
                    )
                    .received("\"\""),
            );
            String::new()
        }
        other => {
            errors.push(
                err(ErrorKind::InvalidGraph, "missing `type`".into())
                    .expected("a string such as \"GaussianNoise\"")
                    .received(other.map(json_kind).unwrap_or("nothing")),
            );
            String::new()
        }
    };
    let inputs = parse_inputs(id, "inputs", obj.get("inputs"), errors);
    let index = graph.nodes.len();
    graph.by_id.insert(id.to_string(), index);
    graph.nodes.push(Node {
        id: id.to_string(),
        type_name,
        inputs,
        scope,
        body: Vec::new(),
        next: Vec::new(),
    });

    let is_loop = graph.nodes[index].is_loop();
    match (is_loop, obj.get("body")) {
        (true, Some(Json::Object(body))) => {
            let members = parse_scope(body, Some(index), graph, errors);
            graph.nodes[index].body = members;
        }
        (true, _) => errors.push(err(
            ErrorKind::MalformedLoop,
            "a Loop needs a `body` object of nodes".into(),
        )),
        (false, Some(_)) => errors.push(err(
            ErrorKind::InvalidGraph,
            "only Loop nodes have a `body`".into(),
        )),
        (false, None) => {}
    }
    match (is_loop, obj.get("next")) {
        (true, next) => graph.nodes[index].next = parse_inputs(id, "next", next, errors),
        (false, Some(_)) => errors.push(err(
            ErrorKind::InvalidGraph,
            "only Loop nodes have `next`".into(),
        )),
        (false, None) => {}
    }
    Some(index)
}

fn parse_inputs(
    id: &str,
    field: &str,
    spec: Option<&Json>,
    errors: &mut Vec<GraphError>,
) -> Vec<(String, Input)> {
    match spec {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Object(map)) => map
            .iter()
            .map(|(name, v)| (name.clone(), parse_input(v)))
            .collect(),
        Some(other) => {
            errors.push(
                GraphError::new(
                    ErrorKind::InvalidGraph,
                    format!("`{field}` must be an object of name: value"),
                )
                .node(id)
                .received(json_kind(other)),
            );
            Vec::new()
        }
    }
}

fn parse_input(v: &Json) -> Input {
    input_of(v.clone())
}

/// A link is `["id", "output"]` or `["id", index]`; `{"value": x}` is the
/// constant x; anything else is a constant as written.
pub(super) fn input_of(v: Json) -> Input {
    if let Json::Array(items) = &v {
        if let [Json::String(node), out] = items.as_slice() {
            let output = match out {
                Json::String(name) => Some(OutputRef::Name(name.clone())),
                Json::Number(n) => n.as_u64().map(|i| OutputRef::Index(i as usize)),
                _ => None,
            };
            if let Some(output) = output {
                return Input::Link(Link {
                    node: node.clone(),
                    output,
                });
            }
        }
    }
    match v {
        Json::Object(mut map) if map.len() == 1 => {
            match map.remove("value").or_else(|| map.remove("__value__")) {
                Some(inner) => Input::Const(inner),
                None => Input::Const(Json::Object(map)),
            }
        }
        v => Input::Const(v),
    }
}

/// How a JSON value is described in error messages.
pub fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a bool",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an int",
        Json::Number(_) => "a float",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}
