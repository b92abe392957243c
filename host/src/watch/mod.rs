//! Hot reload: a session that keeps one executor (and its cache) alive while
//! plugin libraries are rebuilt and the graph file is edited, re-running only
//! what changed. The file watching and printing are the binary's
//! (`src/bin/diffgraph/watch.rs`); this is the part a library user (or a
//! server) can drive directly.
pub mod cargo;

use crate::exec::{Executor, Observer, RunError, RunOutcome};
use crate::graph::overrides::Override;
use crate::graph::GraphErrors;
use crate::plugin::{PluginLibrary, Registry};
use crate::CheckedGraph;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Loads new generations of plugin libraries into a copy of a registry,
/// each from a private copy of the file: the dynamic loader returns the
/// already-open library for a path it has seen, so each generation must be
/// opened from a path of its own, and the original file may then be
/// overwritten in place (`cp`) without touching the code this process runs.
/// [`Session`] and `diffgraph serve --watch` (server and worker) use it.
pub struct Reloader {
    staging: tempfile::TempDir,
    copies: u64,
}

impl Reloader {
    pub fn new() -> std::io::Result<Reloader> {
        Ok(Reloader {
            staging: tempfile::Builder::new()
                .prefix("diffgraph-reload-")
                .tempdir()?,
            copies: 0,
        })
    }

    /// `registry` with the library at `path` loaded (a new generation
    /// replacing an older one of the same plugin), or why it was refused
    /// (it does not open, fails the ABI handshake, or clashes); `registry`
    /// itself is untouched either way, so the caller swaps in the result
    /// whole and nobody sees a half-loaded registry.
    pub fn load(
        &mut self,
        registry: &Registry,
        path: &Path,
    ) -> Result<(Registry, Arc<PluginLibrary>), String> {
        self.copies += 1;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin");
        let copy = self
            .staging
            .path()
            .join(format!("{stem}.gen{}.so", self.copies));
        std::fs::copy(path, &copy).map_err(|e| format!("cannot copy {}: {e}", path.display()))?;
        let mut registry = registry.clone();
        let loaded = registry.load_file_from(&copy, path);
        // The copy is mapped (or was refused): its file is no longer needed.
        let _ = std::fs::remove_file(&copy);
        let library = loaded.map_err(|e| e.message)?;
        Ok((registry, library))
    }
}

/// One `diffgraph watch` session.
pub struct Session {
    pub exec: Executor,
    graph_path: PathBuf,
    overrides: Vec<Override>,
    /// Where ComfyUI workflows' model names resolve.
    models: crate::comfy::ModelFolders,
    /// The last graph that validated (None until one does).
    checked: Option<CheckedGraph>,
    reloader: Reloader,
}

impl Session {
    /// Starts a session on `graph_path`; the executor's registry holds the
    /// initially loaded plugins.
    pub fn new(
        exec: Executor,
        graph_path: &Path,
        overrides: Vec<Override>,
    ) -> std::io::Result<Session> {
        Ok(Session {
            exec,
            graph_path: graph_path.to_path_buf(),
            overrides,
            models: crate::comfy::ModelFolders::new(&[]),
            checked: None,
            reloader: Reloader::new()?,
        })
    }

    /// Model folders for ComfyUI workflows (default: `$DIFFGRAPH_MODELS`).
    pub fn set_models(&mut self, models: crate::comfy::ModelFolders) {
        self.models = models;
    }

    pub fn graph_path(&self) -> &Path {
        &self.graph_path
    }

    /// Re-reads and validates the graph file. On errors the previous graph is
    /// kept but not run again until the file validates.
    pub fn reload_graph(&mut self) -> Result<(), GraphErrors> {
        match crate::load_graph_with(
            &self.graph_path,
            &self.overrides,
            &self.exec.registry,
            true,
            &self.models,
        ) {
            Ok(c) => {
                self.checked = Some(c);
                Ok(())
            }
            Err(e) => {
                self.checked = None;
                Err(e)
            }
        }
    }

    /// Loads a new generation of the plugin library at `path`. It replaces
    /// the old generation only if it opens, passes the ABI handshake, and
    /// the graph still validates against it; otherwise the old generation
    /// keeps serving and the reason is returned.
    ///
    /// Every generation, the first included, is opened from a private copy:
    /// the original file may then be overwritten in place (`cp`) without
    /// touching the code this process runs.
    pub fn reload_library(&mut self, path: &Path) -> Result<Arc<PluginLibrary>, String> {
        let (registry, library) = self.reloader.load(&self.exec.registry, path)?;
        let checked = if self.checked.is_some() || self.graph_path.exists() {
            match crate::load_graph_with(
                &self.graph_path,
                &self.overrides,
                &registry,
                true,
                &self.models,
            ) {
                Ok(c) => Some(c),
                Err(e) if self.checked.is_some() => {
                    return Err(format!(
                        "the new library breaks the graph, keeping the old one:\n{e}"
                    ));
                }
                Err(_) => None,
            }
        } else {
            None
        };
        self.exec.registry = registry;
        // Validation resolved node types to the new generation's.
        self.checked = checked;
        Ok(library)
    }

    /// Runs the current graph, if it validated.
    pub fn run(&mut self, observer: &dyn Observer) -> Option<Result<RunOutcome, RunError>> {
        let checked = self.checked.as_ref()?;
        Some(self.exec.run(checked, None, observer))
    }

    pub fn has_valid_graph(&self) -> bool {
        self.checked.is_some()
    }
}
