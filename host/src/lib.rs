//! # diffgraph
//!
//! A headless node-graph executor for diffusion models. Graphs are JSON files
//! (`graph::model`), validated completely before anything runs
//! (`graph::validate`), planned in dependency order and executed with a
//! content-keyed cache (`exec`). Node types come from plugins: dynamic
//! libraries speaking a small versioned C ABI (`plugin`, and the SDK crate
//! `diffgraph-sdk` that plugin authors use), found by `plugin::discovery`.
//! `report` turns outcomes, errors and the node listing into JSON or text;
//! `watch` keeps a session alive across plugin rebuilds and graph edits.
//!
//! This is the library the `diffgraph` binary (clap, progress bars, Ctrl-C:
//! `src/bin/diffgraph/`, behind the default `cli` feature) and servers build
//! on; it depends on none of the binary's crates. All unsafe code is in
//! `plugin::ffi`.
#![deny(unsafe_code)]

pub mod comfy;
pub mod device;
pub mod engine_env;
pub mod exec;
pub mod graph;
pub mod plugin;
pub mod pngtext;
pub mod report;
pub mod threads;
pub mod value;
pub mod watch;
pub mod worker;

pub use exec::{Event, Executor, Observer, RunError, RunOutcome, SharedCache, Silent};
pub use graph::{CheckedGraph, GraphError, GraphErrors};
pub use plugin::Registry;
pub use value::Value;

// Servers move executors and values between threads and share caches.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Value>();
    send_sync::<Executor>();
    send_sync::<SharedCache>();
    send_sync::<CheckedGraph>();
};

/// Reads, overrides and validates a graph file: a native graph, a ComfyUI
/// API workflow, or a PNG carrying one (`comfy`). Model names resolve in
/// `ModelFolders::new(&[])` (`$DIFFGRAPH_MODELS` and the demo model).
pub fn load_graph(
    path: &std::path::Path,
    overrides: &[graph::overrides::Override],
    registry: &Registry,
    require_outputs: bool,
) -> Result<CheckedGraph, GraphErrors> {
    load_graph_with(
        path,
        overrides,
        registry,
        require_outputs,
        &comfy::ModelFolders::new(&[]),
    )
}

/// `load_graph` with explicit model folders (`--models`).
pub fn load_graph_with(
    path: &std::path::Path,
    overrides: &[graph::overrides::Override],
    registry: &Registry,
    require_outputs: bool,
    models: &comfy::ModelFolders,
) -> Result<CheckedGraph, GraphErrors> {
    let text = read_graph_text(path)?;
    let base = path.parent().unwrap_or(std::path::Path::new(""));
    parse_graph_in(
        &text,
        overrides,
        registry,
        require_outputs,
        models,
        Some(base),
    )
}

/// The text of a graph file; for a PNG, the ComfyUI workflow it carries.
pub fn read_graph_text(path: &std::path::Path) -> Result<String, GraphErrors> {
    let cannot = |m: String| {
        GraphErrors(vec![GraphError::new(
            graph::ErrorKind::InvalidGraph,
            format!("cannot read {}: {m}", path.display()),
        )])
    };
    let bytes = std::fs::read(path).map_err(|e| cannot(e.to_string()))?;
    if pngtext::is_png(&bytes) {
        return pngtext::embedded_graph(&bytes).map_err(cannot);
    }
    String::from_utf8(bytes).map_err(|e| cannot(format!("not UTF-8 text: {e}")))
}

/// Parses, overrides and validates graph text (native or ComfyUI).
pub fn parse_graph(
    text: &str,
    overrides: &[graph::overrides::Override],
    registry: &Registry,
    require_outputs: bool,
) -> Result<CheckedGraph, GraphErrors> {
    parse_graph_with(
        text,
        overrides,
        registry,
        require_outputs,
        &comfy::ModelFolders::new(&[]),
    )
}

/// `parse_graph` with explicit model folders.
pub fn parse_graph_with(
    text: &str,
    overrides: &[graph::overrides::Override],
    registry: &Registry,
    require_outputs: bool,
    models: &comfy::ModelFolders,
) -> Result<CheckedGraph, GraphErrors> {
    parse_graph_in(text, overrides, registry, require_outputs, models, None)
}

/// `parse_graph_with` for the text of a file in `base`: a native graph's
/// relative file paths also resolve there (`graph::relative`).
fn parse_graph_in(
    text: &str,
    overrides: &[graph::overrides::Override],
    registry: &Registry,
    require_outputs: bool,
    models: &comfy::ModelFolders,
    base: Option<&std::path::Path>,
) -> Result<CheckedGraph, GraphErrors> {
    if let Some(t) = translate_comfy(text, overrides, models)? {
        let graph = graph::model::from_json(&t.doc).map_err(|e| t.map_errors(GraphErrors(e)))?;
        return graph::validate(graph, registry, require_outputs).map_err(|e| t.map_errors(e));
    }
    let graph = if overrides.is_empty() {
        graph::model::parse(text).map_err(|e| with_format_hint(text, e))?
    } else {
        let mut doc = graph::model::parse_document(text).map_err(GraphErrors)?;
        graph::overrides::apply(&mut doc, overrides)
            .map_err(|m| GraphErrors(vec![GraphError::new(graph::ErrorKind::InvalidGraph, m)]))?;
        graph::model::from_json(&doc).map_err(|e| with_format_hint(text, e))?
    };
    let mut graph = graph;
    if let Some(base) = base {
        graph::relative::resolve_relative(&mut graph, base, registry);
    }
    graph::validate(graph, registry, require_outputs)
}

/// The native graph a ComfyUI workflow text becomes (None: not a ComfyUI
/// workflow; the native parser reports on it).
pub fn translate_comfy(
    text: &str,
    overrides: &[graph::overrides::Override],
    models: &comfy::ModelFolders,
) -> Result<Option<comfy::Translation>, GraphErrors> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(doc) if matches!(comfy::detect(&doc), comfy::Format::Api | comfy::Format::Ui) => {
            comfy::translate(doc, overrides, models)
        }
        _ => Ok(None),
    }
}

/// The native graph JSON that graph text (native or ComfyUI) becomes once
/// translated and overridden: what a worker process (`run --isolate`) runs.
/// Validate it first ([`parse_graph_with`]): errors here are parse errors
/// only.
pub fn native_graph_text(
    text: &str,
    overrides: &[graph::overrides::Override],
    models: &comfy::ModelFolders,
) -> Result<String, GraphErrors> {
    if let Some(t) = translate_comfy(text, overrides, models)? {
        return Ok(t.doc.to_string());
    }
    if overrides.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc = graph::model::parse_document(text).map_err(GraphErrors)?;
    graph::overrides::apply(&mut doc, overrides)
        .map_err(|m| GraphErrors(vec![GraphError::new(graph::ErrorKind::InvalidGraph, m)]))?;
    Ok(doc.to_string())
}

/// Native parse errors, plus what the document looks like when it is in no
/// format diffgraph reads.
fn with_format_hint(text: &str, mut errors: Vec<GraphError>) -> GraphErrors {
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) {
        // A document with a `nodes` field was meant as a native graph: the
        // native parser's error about it says it all.
        let meant_native = doc.get("nodes").is_some();
        if let (comfy::Format::Other(what), false) = (comfy::detect(&doc), meant_native) {
            errors.push(comfy::not_a_graph(&what));
        }
    }
    GraphErrors(errors)
}
