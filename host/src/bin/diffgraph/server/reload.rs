//! `diffgraph serve --watch`: plugin libraries rebuilt in the plugin
//! folders are picked up between jobs, as `diffgraph watch` picks them up
//! (`diffgraph::watch::Reloader`: private copies, the ABI handshake, a
//! refused generation leaves the old one serving).
//!
//! Two registries follow the files: the server's (validation,
//! `/object_info`) and the worker's (running). The server loads a new
//! generation first, so a library it refuses never reaches the worker; the
//! job runner then hands it to the worker between two jobs
//! (`Supervisor::reload`). Each registry is replaced whole, so no prompt is
//! checked and no job runs against a half-loaded one. Cache keys carry each
//! plugin's generation: the loaded models of the plugins that did not
//! change stay cached; the queue is untouched.
use super::state::AppState;
use crate::watch::{debounce, is_watched_library, is_write, Msg};
use diffgraph::plugin::discovery::{self, PluginSource};
use diffgraph::watch::Reloader;
use diffgraph::Registry;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The plugins from `sources`; with `watch`, each from a private copy (the
/// file may then be overwritten in place). Warnings for what was skipped.
pub fn load_plugins(sources: &[PluginSource], watch: bool) -> (Registry, Vec<String>) {
    if !watch {
        let (registry, skipped) = discovery::load(sources);
        return (registry, skipped.iter().map(|s| s.to_string()).collect());
    }
    let mut registry = Registry::new();
    let mut warnings = Vec::new();
    let mut reloader = match Reloader::new() {
        Ok(r) => r,
        Err(e) => return (registry, vec![format!("no staging folder: {e}")]),
    };
    for file in sources.iter().flat_map(PluginSource::files) {
        match reloader.load(&registry, &file) {
            Ok((r, _)) => registry = r,
            Err(e) => warnings.push(format!("plugin {}: {e} (not loaded)", file.display())),
        }
    }
    (registry, warnings)
}

/// The server's side of hot reload: its loader and the libraries the
/// worker has yet to load.
#[derive(Default)]
pub struct Reloads {
    reloader: Mutex<Option<Reloader>>,
    pending: Mutex<Vec<PathBuf>>,
}

impl Reloads {
    /// Paths the worker should load now (between jobs), oldest first.
    pub fn take_pending(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Loads a new generation of `path` into the server's registry; if it is
/// accepted, queues it for the worker and wakes the runner.
fn reload(state: &AppState, path: &Path) {
    let mut slot = state
        .reloads
        .reloader
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        match Reloader::new() {
            Ok(r) => *slot = Some(r),
            Err(e) => return eprintln!("warning: --watch: no staging folder: {e}"),
        }
    }
    let reloader = slot.as_mut().expect("just made");
    match reloader.load(&state.registry(), path) {
        Ok((registry, lib)) => {
            *state.registry.write().unwrap_or_else(|p| p.into_inner()) = registry;
            eprintln!(
                "reloaded plugin `{}` from {} (generation {}); the worker loads it before the next job",
                lib.name,
                path.display(),
                lib.generation
            );
            state
                .reloads
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(path.to_path_buf());
            state.wake();
        }
        Err(e) => eprintln!(
            "not reloading {}: {e}\n  the previous generation keeps serving",
            path.display()
        ),
    }
}

/// Watches the plugin folders (folders, not files: cargo replaces a library
/// by remove + link) and reloads changed libraries after `quiet` without
/// further changes.
pub fn spawn_watcher(
    state: Arc<AppState>,
    sources: Vec<PluginSource>,
    quiet: Duration,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let _ = tx.send(match res {
            Ok(e) if is_write(&e.kind) => Msg::Changed(e.paths),
            Ok(_) => return,
            Err(e) => Msg::WatchError(e.to_string()),
        });
    })
    .map_err(|e| format!("cannot watch files: {e}"))?;
    for s in &sources {
        watcher
            .watch(&s.dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", s.dir.display()))?;
    }
    std::thread::Builder::new()
        .name("plugin-watch".into())
        .spawn(move || {
            let _watcher = watcher; // watching stops when it is dropped
            while let Ok(msg) = rx.recv() {
                let paths = match msg {
                    Msg::Changed(first) => match debounce(&rx, first, quiet) {
                        Some(p) => p,
                        None => return,
                    },
                    Msg::WatchError(e) => {
                        eprintln!("warning: file watching: {e}");
                        continue;
                    }
                    Msg::Stop => return,
                };
                for path in paths
                    .iter()
                    .filter(|p| is_watched_library(p, &sources) && p.is_file())
                {
                    reload(&state, path);
                }
            }
        })
        .map_err(|e| format!("cannot start the watcher: {e}"))?;
    Ok(())
}
