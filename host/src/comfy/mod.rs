//! ComfyUI workflows run unchanged: format detection (`workflow::detect`),
//! the API format with `--set` on ComfyUI node ids (`workflow`), validation
//! against ComfyUI's node schemas (`schema`), expansion into a native graph
//! (`expand`: a KSampler becomes the native denoising Loop), model folders
//! with ComfyUI's layout (`models`, `extra_paths`); workflows embedded in PNGs are read by
//! `crate::pngtext`.
//! The editor's (UI) format is converted to the API format first (`ui`).
//! `load_graph`/`parse_graph` call `translate` for any file that is not a
//! native graph, so `run`, `validate`, `convert` and servers all get it.
pub mod conditioning;
pub mod expand;
pub mod extra_paths;
pub mod image_nodes;
pub mod inpaint;
pub mod loaders;
pub mod models;
pub mod object_info;
pub mod sampler_specs;
pub mod schema;
pub mod subgraph;
pub mod ui;
pub mod workflow;

use crate::graph::overrides::Override;
use crate::graph::{ErrorKind, GraphError, GraphErrors};
pub use models::ModelFolders;
use serde_json::Value as Json;
pub use workflow::{detect, Format};

/// A ComfyUI workflow as a native graph document.
pub struct Translation {
    pub doc: Json,
    origins: Vec<((String, String), (String, String))>,
}

impl Translation {
    /// Rewrites errors about the expanded graph into the workflow's terms:
    /// `ID:part` nodes are reported as ComfyUI node `ID`, native input names
    /// as the ComfyUI input they came from.
    pub fn map_errors(&self, errors: GraphErrors) -> GraphErrors {
        GraphErrors(
            errors
                .0
                .into_iter()
                .map(|mut e| {
                    let Some(node) = e.node.clone() else {
                        return e;
                    };
                    let origin = e.input.as_ref().and_then(|i| {
                        self.origins
                            .iter()
                            .find(|((n, ni), _)| *n == node && ni == i)
                            .map(|(_, c)| c.clone())
                    });
                    match origin {
                        Some((cn, ci)) => {
                            e.node = Some(cn);
                            e.input = Some(ci);
                        }
                        None => {
                            if let Some((comfy, part)) = node.split_once(':') {
                                e.message = format!(
                                    "{} (in `{node}`, the {part} node it expands into)",
                                    e.message
                                );
                                e.node = Some(comfy.to_string());
                            }
                        }
                    }
                    e
                })
                .collect(),
        )
    }
}

/// For a ComfyUI workflow (API or UI format), the native graph it becomes; None
/// for a native graph. `overrides` use the workflow's node ids and input
/// names. A document in no known format is an error saying what it looks like.
pub fn translate(
    doc: Json,
    overrides: &[Override],
    models: &ModelFolders,
) -> Result<Option<Translation>, GraphErrors> {
    match detect(&doc) {
        Format::Native => Ok(None),
        Format::Api => api_to_native(doc, overrides, models).map(Some),
        Format::Ui => {
            let api = ui::to_api(&doc).map_err(GraphErrors)?;
            api_to_native(api, overrides, models).map(Some)
        }
        Format::Other(what) => Err(GraphErrors(vec![not_a_graph(&what)])),
    }
}

fn api_to_native(
    doc: Json,
    overrides: &[Override],
    models: &ModelFolders,
) -> Result<Translation, GraphErrors> {
    let wf = workflow::parse(doc, overrides).map_err(GraphErrors)?;
    schema::check(&wf, models).map_err(GraphErrors)?;
    if !wf
        .values()
        .any(|n| schema::spec(&n.class_type).is_some_and(|s| s.output_node))
    {
        return Err(GraphErrors(vec![GraphError::new(
            ErrorKind::NoOutputs,
            "the workflow has no output node (SaveImage, PreviewImage)",
        )]));
    }
    let e = expand::expand(&wf, models);
    Ok(Translation {
        doc: e.doc,
        origins: e.origins,
    })
}

/// An API-format prompt (no `nodes`) whose every `class_type` is one of the
/// ComfyUI node types `diffgraph::comfy` translates.
pub fn uses_comfy_node_types(prompt: &Json) -> bool {
    match prompt.as_object() {
        Some(o) if !o.contains_key("nodes") && !o.is_empty() => o.values().all(|n| {
            n.get("class_type")
                .and_then(Json::as_str)
                .is_some_and(|c| schema::spec(c).is_some())
        }),
        _ => false,
    }
}

/// The error for a document in no format diffgraph reads.
pub fn not_a_graph(what: &str) -> GraphError {
    GraphError::new(
        ErrorKind::InvalidGraph,
        format!("not a diffgraph graph (an object with `nodes`), a ComfyUI API workflow ({{\"ID\": {{\"class_type\": ..., \"inputs\": ...}}}}) or a ComfyUI UI workflow: {what}"),
    )
}
