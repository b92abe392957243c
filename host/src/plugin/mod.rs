//! Node plugins: loading libraries and the registry of node types they
//! provide. Where libraries are found is `discovery`; the unsafe ABI layer
//! is `ffi`, the only module of the crate allowed unsafe code; the lock it
//! lends plugins around the global generator is `global_rng`.
pub mod discovery;
#[allow(unsafe_code)]
pub mod ffi;
pub mod global_rng;
pub mod probe;

use diffgraph_sdk::NodeSchema;
use ffi::OpenedLibrary;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// One loaded plugin library. Each load of a library (even of the same file)
/// is a new generation: cache keys include it, so a reloaded plugin's nodes
/// re-run.
pub struct PluginLibrary {
    pub name: String,
    pub path: PathBuf,
    pub generation: u64,
    pub(crate) opened: OpenedLibrary,
}

/// A node type as registered: its schema and where its code lives.
pub struct NodeType {
    pub schema: NodeSchema,
    pub library: Arc<PluginLibrary>,
    pub index: u32,
}

/// Why a library was not loaded.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin {}: {}", self.path.display(), self.message)
    }
}

/// Every node type the host knows. Each is registered under its qualified
/// name `plugin/Type`, always, and under its plain name `Type` when exactly
/// one plugin provides it. A plain name two plugins provide is *ambiguous*:
/// both stay loaded, nothing is replaced, and a graph using the plain name
/// gets an error naming both libraries and the qualified names to write
/// instead. This does not depend on the order libraries load in.
#[derive(Default, Clone)]
pub struct Registry {
    /// Plain names with exactly one provider.
    types: BTreeMap<String, Arc<NodeType>>,
    /// `plugin/Type` for every type.
    qualified: BTreeMap<String, Arc<NodeType>>,
    /// Plain names with several providers (sorted by plugin name).
    ambiguous: BTreeMap<String, Vec<Arc<NodeType>>>,
    libraries: Vec<Arc<PluginLibrary>>,
}

/// Why a type name did not resolve.
pub enum Lookup<'a> {
    Unknown,
    /// Several plugins provide this plain name.
    Ambiguous(&'a [Arc<NodeType>]),
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The type called `type_name`: `plugin/Type`, or a plain name that one
    /// plugin provides.
    pub fn get(&self, type_name: &str) -> Option<&Arc<NodeType>> {
        self.types
            .get(type_name)
            .or_else(|| self.qualified.get(type_name))
    }

    /// Like [`Registry::get`], saying why a name does not resolve.
    pub fn lookup(&self, type_name: &str) -> Result<&Arc<NodeType>, Lookup<'_>> {
        if let Some(t) = self.get(type_name) {
            return Ok(t);
        }
        match self.ambiguous.get(type_name) {
            Some(all) => Err(Lookup::Ambiguous(all)),
            None => Err(Lookup::Unknown),
        }
    }

    /// Every type once (ambiguous ones too), by plain then plugin name.
    pub fn types(&self) -> impl Iterator<Item = &Arc<NodeType>> {
        let mut all: Vec<&Arc<NodeType>> = self.qualified.values().collect();
        all.sort_by(|a, b| {
            (&a.schema.type_name, &a.library.name).cmp(&(&b.schema.type_name, &b.library.name))
        });
        all.into_iter()
    }

    /// The names a graph can use unambiguously (plain names with one
    /// provider; the qualified names of the others).
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        let ambiguous = self
            .qualified
            .iter()
            .filter(|(_, t)| self.ambiguous.contains_key(&t.schema.type_name));
        self.types
            .keys()
            .map(|s| s.as_str())
            .chain(ambiguous.map(|(k, _)| k.as_str()))
    }

    /// Plain names provided by more than one plugin, with their providers.
    pub fn clashes(&self) -> impl Iterator<Item = (&str, &[Arc<NodeType>])> {
        self.ambiguous
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn libraries(&self) -> &[Arc<PluginLibrary>] {
        &self.libraries
    }

    /// Loads one plugin library. Loading a plugin again from the same path
    /// replaces its earlier generation (a reload). Refused as a whole: a
    /// library whose plugin name another library (another path) already
    /// has (a plugin calling itself `core` does not replace the core
    /// plugin), and one listing a node type twice. A type name another
    /// plugin also provides is not refused: see [`Registry`]. Returns the
    /// library.
    pub fn load_file(&mut self, path: &Path) -> Result<Arc<PluginLibrary>, LoadError> {
        self.load_file_from(path, path)
    }

    /// Loads the library file `open` (a private copy, for hot reload) as the
    /// plugin found at `origin`: the path users know, and errors name.
    pub fn load_file_from(
        &mut self,
        open: &Path,
        origin: &Path,
    ) -> Result<Arc<PluginLibrary>, LoadError> {
        let path = origin;
        let fail = |message: String| LoadError {
            path: path.to_path_buf(),
            message,
        };
        // A library that kills the process opening it is refused here, not
        // opened (`probe`; a no-op unless the program turned probing on).
        if let Some(Err(m)) = probe::check(&[open.to_path_buf()]).pop() {
            return Err(fail(m));
        }
        let hs = ffi::open_library(open).map_err(fail)?;
        let schemas: Vec<NodeSchema> = serde_json::from_str(&hs.schema_json)
            .map_err(|e| fail(format!("its node metadata is not valid: {e}")))?;
        if let Some(other) = self
            .libraries
            .iter()
            .find(|l| l.name == hs.plugin_name && l.path != path)
        {
            return Err(fail(format!(
                "its plugin name `{}` is already taken by {}; plugin names are unique \
                 (a library cannot replace another plugin by taking its name)",
                hs.plugin_name,
                other.path.display()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &schemas {
            if !seen.insert(s.type_name.as_str()) {
                return Err(fail(format!(
                    "it lists node type `{}` twice; each type name once per plugin",
                    s.type_name
                )));
            }
            if s.type_name.is_empty() || s.type_name.contains('/') {
                return Err(fail(format!(
                    "node type name {:?} is empty or contains `/` (reserved for `plugin/Type`)",
                    s.type_name
                )));
            }
        }
        let library = Arc::new(PluginLibrary {
            name: hs.plugin_name,
            path: path.to_path_buf(),
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            opened: hs.library,
        });
        // A reload drops the old generation's types that the new one no longer has.
        self.qualified.retain(|_, t| t.library.name != library.name);
        for (index, schema) in schemas.into_iter().enumerate() {
            let t = NodeType {
                schema,
                library: library.clone(),
                index: index as u32,
            };
            self.qualified.insert(t.qualified_name(), Arc::new(t));
        }
        self.libraries.retain(|l| l.name != library.name);
        self.libraries.push(library.clone());
        self.index_plain_names();
        Ok(library)
    }

    /// Rebuilds the plain-name index from the qualified one.
    fn index_plain_names(&mut self) {
        let mut by_plain: BTreeMap<String, Vec<Arc<NodeType>>> = BTreeMap::new();
        for t in self.qualified.values() {
            by_plain
                .entry(t.schema.type_name.clone())
                .or_default()
                .push(t.clone());
        }
        self.types.clear();
        self.ambiguous.clear();
        for (name, mut providers) in by_plain {
            if providers.len() == 1 {
                self.types.insert(name, providers.remove(0));
            } else {
                providers.sort_by(|a, b| a.library.name.cmp(&b.library.name));
                self.ambiguous.insert(name, providers);
            }
        }
    }
}

impl NodeType {
    /// `plugin/Type`: always accepted in graphs, and the way to pick one of
    /// two plugins providing the same type name.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.library.name, self.schema.type_name)
    }
}

/// Calls one node directly, outside any graph (CPU, output folder `output`):
/// for tests and tools. Graph runs go through the executor instead.
pub fn call_node(
    node: &NodeType,
    inputs: &[&crate::value::Value],
) -> Result<Vec<crate::value::Value>, String> {
    let interrupt = std::sync::atomic::AtomicBool::new(false);
    let env = ffi::CallEnv {
        device: -1,
        output_dir: "output",
        progress: &|_, _| {},
        interrupt: &interrupt,
    };
    node.library
        .opened
        .call(node.index, inputs, &env)
        .map_err(|f| match f {
            ffi::CallFailure::Error(m) => m,
            ffi::CallFailure::Panic(m) => format!("panicked: {m}"),
        })
}
