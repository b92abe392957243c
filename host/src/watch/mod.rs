//! Hot reload: a session that keeps one executor (and its cache) alive while
//! plugin libraries are rebuilt and the graph file is edited, re-running only
//! what changed. The file watching and printing are the binary's
//! (`src/bin/diffgraph/watch.rs`); this is the part a library user (or a
//! server) can drive directly.
pub mod cargo;

use crate::exec::{Executor, Observer, RunError, RunOutcome};
use crate::graph::overrides::Override;
use crate::graph::GraphErrors;
use crate::plugin::PluginLibrary;
use crate::plugin::Registry;
use crate::CheckedGraph;
use std::collections::BTreeMap;
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
        let (registry, library, copy) = self.load_keeping_copy(registry, path)?;
        // The copy is mapped: its file is no longer needed.
        let _ = std::fs::remove_file(&copy);
        Ok((registry, library))
    }

    /// As [`Reloader::load`], keeping the private copy (returned), which a
    /// worker process (`watch --isolate`) then loads; the caller removes it.
    pub fn load_keeping_copy(
        &mut self,
        registry: &Registry,
        path: &Path,
    ) -> Result<(Registry, Arc<PluginLibrary>, PathBuf), String> {
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
        match registry.load_file_from(&copy, path) {
            Ok(library) => Ok((registry, library, copy)),
            Err(e) => {
                let _ = std::fs::remove_file(&copy);
                Err(e.message)
            }
        }
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
    /// The private copy each loaded library was opened from, by the path
    /// users know: a worker process (`watch --isolate`) loads these.
    staged: BTreeMap<PathBuf, PathBuf>,
    /// The plugins of the last run that did not crash ([`Session::mark_good`]).
    good: Option<(Registry, BTreeMap<PathBuf, PathBuf>)>,
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
            staged: BTreeMap::new(),
            good: None,
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
        let (registry, library, copy) =
            self.reloader.load_keeping_copy(&self.exec.registry, path)?;
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
        if let Some(old) = self.staged.insert(path.to_path_buf(), copy) {
            self.remove_unless_kept(&old);
        }
        Ok(library)
    }

    /// Removes a private copy no generation still names (the process keeps
    /// what it mapped).
    fn remove_unless_kept(&self, copy: &Path) {
        let kept = |m: &BTreeMap<PathBuf, PathBuf>| m.values().any(|c| c == copy);
        if !kept(&self.staged) && !self.good.as_ref().is_some_and(|g| kept(&g.1)) {
            let _ = std::fs::remove_file(copy);
        }
    }

    /// The private copies of the current generation's libraries: what a
    /// worker process loads to run exactly the code validation used.
    pub fn plugin_files(&self) -> Vec<PathBuf> {
        self.staged.values().cloned().collect()
    }

    /// Records the current plugins as good: a run with them did not crash.
    pub fn mark_good(&mut self) {
        let old = self
            .good
            .replace((self.exec.registry.clone(), self.staged.clone()));
        for copy in old.iter().flat_map(|g| g.1.values()) {
            self.remove_unless_kept(copy);
        }
    }

    /// Goes back to the plugins of the last run that did not crash, when a
    /// newer generation crashed a worker (`watch --isolate`). Returns the
    /// plugins changed back as (name, generation now serving, generation
    /// dropped); None if there is nothing to go back to. The graph is
    /// validated again against the old generation.
    pub fn fall_back(&mut self) -> Option<Vec<(String, u64, u64)>> {
        let (registry, staged) = self.good.clone()?;
        let generation = |r: &Registry, name: &str| {
            r.libraries()
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.generation)
        };
        let changed: Vec<(String, u64, u64)> = self
            .exec
            .registry
            .libraries()
            .iter()
            .filter_map(|l| {
                let old = generation(&registry, &l.name)?;
                (old != l.generation).then(|| (l.name.clone(), old, l.generation))
            })
            .collect();
        if changed.is_empty() {
            return None;
        }
        let dropped: Vec<PathBuf> = std::mem::replace(&mut self.staged, staged)
            .into_values()
            .collect();
        self.exec.registry = registry;
        for copy in dropped {
            self.remove_unless_kept(&copy);
        }
        let _ = self.reload_graph();
        Some(changed)
    }

    /// The validated graph as native JSON text (ComfyUI translated,
    /// overrides applied), for a worker process. None until a graph validated.
    pub fn native_text(&self) -> Option<Result<String, GraphErrors>> {
        self.checked.as_ref()?;
        Some(
            crate::read_graph_text(&self.graph_path)
                .and_then(|t| crate::native_graph_text(&t, &self.overrides, &self.models)),
        )
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
