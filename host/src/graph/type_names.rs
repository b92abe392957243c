//! Errors for node type names that do not resolve to one node type: unknown
//! (with the closest known names) or ambiguous (several plugins provide it).
use super::errors::{ErrorKind, GraphError};
use crate::plugin::{NodeType, Registry};
use std::sync::Arc;

/// A plain type name several plugins provide: name them all, and the
/// qualified names that pick one.
pub(super) fn ambiguous_type(id: &str, type_name: &str, all: &[Arc<NodeType>]) -> GraphError {
    let providers: Vec<String> = all
        .iter()
        .map(|t| format!("`{}` ({})", t.library.name, t.library.path.display()))
        .collect();
    let choices: Vec<String> = all
        .iter()
        .map(|t| format!("\"{}\"", t.qualified_name()))
        .collect();
    GraphError::new(
        ErrorKind::AmbiguousNodeType,
        format!(
            "node type `{type_name}` is provided by several plugins: {}; write the plugin's name before it",
            providers.join(" and ")
        ),
    )
    .node(id)
    .expected(format!("one of {}", choices.join(", ")))
    .received(type_name)
}

/// A type name nothing provides, with the closest known names.
pub(super) fn unknown_type(id: &str, type_name: &str, registry: &Registry) -> GraphError {
    // Suggestions only for names of a plausible length (string similarity
    // is quadratic: a 50 MB name must not stall validation).
    let mut close: Vec<(f64, &str)> = registry
        .type_names()
        .chain([super::model::LOOP_TYPE])
        .filter(|_| type_name.len() <= 200)
        .map(|k| {
            (
                strsim::jaro_winkler(&k.to_lowercase(), &type_name.to_lowercase()),
                k,
            )
        })
        .filter(|(s, _)| *s > 0.75)
        .collect();
    close.sort_by(|a, b| b.0.total_cmp(&a.0));
    let hint = match close.len() {
        0 => "run `diffgraph nodes` to list the known types".to_string(),
        _ => format!(
            "did you mean {}?",
            close
                .iter()
                .take(3)
                .map(|(_, k)| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    GraphError::new(
        ErrorKind::UnknownNodeType,
        format!("unknown node type `{type_name}`; {hint}"),
    )
    .node(id)
    .received(type_name)
}
