//! File paths in a native graph file are relative to the graph file's
//! folder, so a graph runs from any working directory. For compatibility a
//! relative path that already names something from the working directory
//! (the old rule) keeps meaning that; otherwise, when it names something
//! next to the graph file, it becomes that path. Only file inputs
//! (`InputSpec::file`) given as constants are touched.
use super::model::{Graph, Input};
use crate::plugin::Registry;
use serde_json::Value as Json;
use std::path::Path;

/// Rewrites the relative file paths of `graph` that exist only under `base`.
pub fn resolve_relative(graph: &mut Graph, base: &Path, registry: &Registry) {
    for node in &mut graph.nodes {
        let Some(t) = registry.get(&node.type_name) else {
            continue;
        };
        for (name, input) in &mut node.inputs {
            let is_file = t.schema.inputs.iter().any(|i| i.file && i.name == *name);
            let Input::Const(Json::String(path)) = input else {
                continue;
            };
            let p = Path::new(path.as_str());
            if !is_file || path.is_empty() || p.is_absolute() || p.exists() {
                continue;
            }
            let beside = base.join(p);
            if beside.exists() {
                *path = beside.to_string_lossy().into_owned();
            }
        }
    }
}
