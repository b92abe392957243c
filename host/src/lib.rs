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

pub mod device;
pub mod exec;
pub mod graph;
pub mod plugin;
pub mod report;
pub mod threads;
pub mod value;
pub mod watch;

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

/// Reads, overrides and validates a graph file.
pub fn load_graph(
    path: &std::path::Path,
    overrides: &[graph::overrides::Override],
    registry: &Registry,
    require_outputs: bool,
) -> Result<CheckedGraph, GraphErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        GraphErrors(vec![GraphError::new(
            graph::ErrorKind::InvalidGraph,
            format!("cannot read {}: {e}", path.display()),
        )])
    })?;
    parse_graph(&text, overrides, registry, require_outputs)
}

/// Parses, overrides and validates graph text.
pub fn parse_graph(
    text: &str,
    overrides: &[graph::overrides::Override],
    registry: &Registry,
    require_outputs: bool,
) -> Result<CheckedGraph, GraphErrors> {
    let graph = if overrides.is_empty() {
        graph::model::parse(text).map_err(GraphErrors)?
    } else {
        let mut doc: serde_json::Value = match serde_json::from_str(text) {
            Ok(d) => d,
            Err(_) => {
                return Err(GraphErrors(
                    graph::model::parse(text).err().unwrap_or_default(),
                ))
            }
        };
        graph::overrides::apply(&mut doc, overrides)
            .map_err(|m| GraphErrors(vec![GraphError::new(graph::ErrorKind::InvalidGraph, m)]))?;
        graph::model::from_json(&doc).map_err(GraphErrors)?
    };
    graph::validate(graph, registry, require_outputs)
}
