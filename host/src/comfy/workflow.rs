//! ComfyUI's API-format workflow (what `POST /prompt` takes and the
//! "Save (API)" menu writes): `{"<id>": {"class_type": "...", "inputs":
//! {"<name>": constant | ["<source id>", <output index>]}}}`, a constant
//! list wrapped as `{"__value__": [...]}` (ComfyUI's `execution.py`), and
//! what a file that is none of diffgraph's or ComfyUI's formats looks like.
use crate::graph::overrides::Override;
use crate::graph::{ErrorKind, GraphError};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// Which format a JSON document is in.
#[derive(Debug, PartialEq)]
pub enum Format {
    /// A diffgraph graph (`{"nodes": {...}}`).
    Native,
    /// ComfyUI's API format.
    Api,
    /// ComfyUI's editor format (`nodes` list, `links`).
    Ui,
    /// Neither: what it looks like instead.
    Other(String),
}

/// Tells the formats apart by their shape.
pub fn detect(doc: &Json) -> Format {
    let Some(root) = doc.as_object() else {
        return Format::Other(format!(
            "it is {}, not an object",
            crate::graph::model::json_kind(doc)
        ));
    };
    match root.get("nodes") {
        Some(Json::Object(_)) => return Format::Native,
        Some(Json::Array(_)) if root.contains_key("links") => return Format::Ui,
        _ => {}
    }
    if !root.is_empty()
        && root
            .values()
            .any(|v| v.get("class_type").is_some_and(Json::is_string))
    {
        return Format::Api;
    }
    let keys: Vec<&str> = root.keys().map(String::as_str).take(5).collect();
    Format::Other(if keys.is_empty() {
        "it is an empty object".into()
    } else {
        format!(
            "it is an object with the fields {}",
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// One input as written: a link or a constant.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiInput {
    Link { node: String, output: usize },
    Const(Json),
}

/// One node of an API workflow.
#[derive(Clone, Debug)]
pub struct ApiNode {
    pub class_type: String,
    pub inputs: BTreeMap<String, ApiInput>,
}

impl ApiNode {
    pub fn input(&self, name: &str) -> Option<&ApiInput> {
        self.inputs.get(name)
    }
}

/// A parsed API workflow, by node id.
pub type Workflow = BTreeMap<String, ApiNode>;

/// Applies `--set ID.INPUT=VALUE` to the workflow's JSON (ComfyUI node ids and
/// input names), then parses it; collects every structural problem.
pub fn parse(mut doc: Json, overrides: &[Override]) -> Result<Workflow, Vec<GraphError>> {
    let mut errors = Vec::new();
    let root = doc.as_object_mut().expect("detect() saw an object");
    for o in overrides {
        let inputs = root
            .get_mut(&o.node)
            .and_then(Json::as_object_mut)
            .map(|n| {
                n.entry("inputs")
                    .or_insert_with(|| Json::Object(Map::new()))
            })
            .and_then(Json::as_object_mut);
        match inputs {
            Some(inputs) => {
                inputs.insert(o.input.clone(), o.value.clone());
            }
            None => errors.push(GraphError::new(
                ErrorKind::InvalidGraph,
                format!(
                    "--set {}.{}: no node `{}` in the workflow",
                    o.node, o.input, o.node
                ),
            )),
        }
    }
    let mut wf = Workflow::new();
    for (id, spec) in root.iter() {
        let err = |msg: &str| GraphError::new(ErrorKind::InvalidGraph, msg).node(id);
        let Some(class_type) = spec.get("class_type").and_then(Json::as_str) else {
            errors.push(err(
                "a ComfyUI node is an object with a `class_type` string and `inputs`",
            ));
            continue;
        };
        let inputs = match spec.get("inputs") {
            None | Some(Json::Null) => BTreeMap::new(),
            Some(Json::Object(m)) => m.iter().map(|(k, v)| (k.clone(), input(v))).collect(),
            Some(_) => {
                errors.push(err("`inputs` must be an object of name: value"));
                continue;
            }
        };
        wf.insert(
            id.clone(),
            ApiNode {
                class_type: class_type.to_string(),
                inputs,
            },
        );
    }
    if errors.is_empty() {
        Ok(wf)
    } else {
        Err(errors)
    }
}

/// ComfyUI's rule (`execution.py`, `is_link`): a two-element list whose
/// first element is a string and second an integer is a link.
fn input(v: &Json) -> ApiInput {
    if let Json::Array(items) = v {
        if let [Json::String(node), Json::Number(n)] = items.as_slice() {
            if let Some(output) = n.as_u64() {
                return ApiInput::Link {
                    node: node.clone(),
                    output: output as usize,
                };
            }
        }
    }
    if let Json::Object(m) = v {
        if let (1, Some(inner)) = (m.len(), m.get("__value__")) {
            return ApiInput::Const(inner.clone());
        }
    }
    ApiInput::Const(v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn detects_formats_and_parses_links() {
        assert_eq!(detect(&json!({"nodes": {}})), Format::Native);
        assert_eq!(detect(&json!({"nodes": [], "links": []})), Format::Ui);
        let api = json!({"3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "l": {"__value__": [1, 2]}}}});
        assert_eq!(detect(&api), Format::Api);
        assert!(matches!(detect(&json!([1])), Format::Other(m) if m.contains("a list")));
        assert!(matches!(detect(&json!({"a": 1})), Format::Other(m) if m.contains("`a`")));
        let wf = parse(api, &["3.seed=5".parse().unwrap()]).unwrap();
        let n = &wf["3"];
        assert_eq!(
            n.input("model"),
            Some(&ApiInput::Link {
                node: "4".into(),
                output: 0
            })
        );
        assert_eq!(n.input("l"), Some(&ApiInput::Const(json!([1, 2]))));
        assert_eq!(n.input("seed"), Some(&ApiInput::Const(json!(5))));
        let bad = json!({"3": {"class_type": "X"}});
        assert!(parse(bad, &["9.seed=5".parse().unwrap()]).is_err());
    }
}
