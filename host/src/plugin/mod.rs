//! Node plugins: loading libraries and the registry of node types they
//! provide. Where libraries are found is `discovery`; the unsafe ABI layer
//! is `ffi`, the only module of the crate allowed unsafe code.
pub mod discovery;
#[allow(unsafe_code)]
pub mod ffi;

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

/// Every node type the host knows, by type name.
#[derive(Default, Clone)]
pub struct Registry {
    types: BTreeMap<String, Arc<NodeType>>,
    libraries: Vec<Arc<PluginLibrary>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn get(&self, type_name: &str) -> Option<&Arc<NodeType>> {
        self.types.get(type_name)
    }

    pub fn types(&self) -> impl Iterator<Item = &Arc<NodeType>> {
        self.types.values()
    }

    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(|s| s.as_str())
    }

    pub fn libraries(&self) -> &[Arc<PluginLibrary>] {
        &self.libraries
    }

    /// Loads one plugin library. Its node types replace same-named types of an
    /// earlier library with the same plugin name (a reload); a clash with
    /// another plugin's type is refused. Returns the library.
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
        let hs = ffi::open_library(open).map_err(fail)?;
        let schemas: Vec<NodeSchema> = serde_json::from_str(&hs.schema_json)
            .map_err(|e| fail(format!("its node metadata is not valid: {e}")))?;
        for s in &schemas {
            if let Some(existing) = self.types.get(&s.type_name) {
                if existing.library.name != hs.plugin_name {
                    return Err(fail(format!(
                        "node type `{}` is already provided by plugin `{}` ({})",
                        s.type_name,
                        existing.library.name,
                        existing.library.path.display()
                    )));
                }
            }
        }
        let library = Arc::new(PluginLibrary {
            name: hs.plugin_name,
            path: path.to_path_buf(),
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            opened: hs.library,
        });
        // A reload drops the old generation's types that the new one no longer has.
        self.types.retain(|_, t| t.library.name != library.name);
        for (index, schema) in schemas.into_iter().enumerate() {
            let t = NodeType {
                schema,
                library: library.clone(),
                index: index as u32,
            };
            self.types.insert(t.schema.type_name.clone(), Arc::new(t));
        }
        self.libraries.retain(|l| l.name != library.name);
        self.libraries.push(library.clone());
        Ok(library)
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
