//! Where plugin libraries come from, and loading all of them: the one path
//! the CLI, `watch` and library users (a server) share.
//!
//! A source is a folder (every shared library in it whose name starts with a
//! prefix) or one library file. Without explicit paths: `$DIFFGRAPH_PLUGINS`
//! (colon-separated), else the `libdiffgraph_nodes_*` libraries next to the
//! running executable (where cargo puts them).
use super::{LoadError, Registry};
use std::fmt;
use std::path::{Path, PathBuf};

/// File-name prefix of the plugins loaded from the executable's folder by
/// default (`libdiffgraph_nodes_*.so`). Folders named explicitly load every
/// shared library in them.
pub const DEFAULT_PLUGIN_PREFIX: &str = "libdiffgraph_nodes_";

/// Environment variable listing plugin folders or files, colon-separated.
pub const PLUGINS_ENV: &str = "DIFFGRAPH_PLUGINS";

/// A folder (every library whose name starts with `prefix`) or one file in it.
#[derive(Clone, Debug)]
pub struct PluginSource {
    pub dir: PathBuf,
    pub prefix: &'static str,
    pub file: Option<PathBuf>,
}

impl PluginSource {
    /// The source at `path` (made absolute): the folder, or the file if `path`
    /// is not a folder.
    pub fn new(path: &Path, prefix: &'static str) -> PluginSource {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if path.is_dir() {
            PluginSource {
                dir: path,
                prefix,
                file: None,
            }
        } else {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            PluginSource {
                dir,
                prefix,
                file: Some(path),
            }
        }
    }

    /// The path the user named (the file, else the folder).
    pub fn path(&self) -> &Path {
        self.file.as_deref().unwrap_or(&self.dir)
    }

    pub fn exists(&self) -> bool {
        self.file.as_ref().is_none_or(|f| f.exists()) && self.dir.is_dir()
    }

    /// Whether `path` is a plugin library this source provides.
    pub fn matches(&self, path: &Path) -> bool {
        match &self.file {
            Some(f) => f == path,
            None => path.parent() == Some(self.dir.as_path()) && is_plugin_file(path, self.prefix),
        }
    }

    /// The plugin library files this source provides now, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        if let Some(f) = &self.file {
            return vec![f.clone()];
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| self.matches(p))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// The sources to load: `explicit` paths (e.g. `--plugins`), else
/// `$DIFFGRAPH_PLUGINS`, else the executable's folder with the default prefix.
pub fn sources(explicit: &[PathBuf]) -> Vec<PluginSource> {
    let mut paths: Vec<(PathBuf, &'static str)> =
        explicit.iter().map(|p| (p.clone(), "")).collect();
    if paths.is_empty() {
        if let Ok(env) = std::env::var(PLUGINS_ENV) {
            paths.extend(
                env.split(':')
                    .filter(|s| !s.is_empty())
                    .map(|s| (PathBuf::from(s), "")),
            );
        }
    }
    if paths.is_empty() {
        if let Some(dir) = default_plugin_dir() {
            paths.push((dir, DEFAULT_PLUGIN_PREFIX));
        }
    }
    paths
        .iter()
        .map(|(path, prefix)| PluginSource::new(path, prefix))
        .collect()
}

/// A plugin that was not loaded; the host keeps running without it.
#[derive(Debug)]
pub enum Skipped {
    /// A source path that does not exist.
    Missing(PathBuf),
    /// A library that failed to load (not a plugin, another ABI, a clash).
    Failed(LoadError),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::Missing(p) => write!(f, "plugin path {} does not exist", p.display()),
            Skipped::Failed(e) => write!(f, "{e} (not loaded)"),
        }
    }
}

/// Loads every library of every source into `registry`; what could not be
/// loaded is returned, in order, and is not fatal.
pub fn load_into(registry: &mut Registry, sources: &[PluginSource]) -> Vec<Skipped> {
    // Probe every library in one child process first (see `probe`).
    let all: Vec<PathBuf> = sources.iter().flat_map(PluginSource::files).collect();
    super::probe::check(&all);
    let mut skipped = Vec::new();
    for source in sources {
        if !source.exists() {
            skipped.push(Skipped::Missing(source.path().to_path_buf()));
            continue;
        }
        for file in source.files() {
            if let Err(e) = registry.load_file(&file) {
                skipped.push(Skipped::Failed(e));
            }
        }
    }
    skipped
}

/// A registry with every plugin of `sources`, and what was skipped.
pub fn load(sources: &[PluginSource]) -> (Registry, Vec<Skipped>) {
    let mut registry = Registry::new();
    let skipped = load_into(&mut registry, sources);
    (registry, skipped)
}

/// A shared library (`.so`, `.dylib`, `.dll`) whose name starts with `prefix`.
pub fn is_plugin_file(path: &Path, prefix: &str) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    name.starts_with(prefix) && matches!(ext, "so" | "dylib" | "dll")
}

/// The folder of the running executable (cargo puts the plugins next to the
/// binary).
pub fn default_plugin_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()?
        .parent()
        .map(|p| p.to_path_buf())
}
