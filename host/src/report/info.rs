//! `diffgraph info`: the ABI, libtorch, the CUDA library state and the
//! loaded plugins, and the environment the engine runs in.
use crate::device::{self, CudaLibrary};
use crate::engine_env;
use crate::plugin::Registry;
use serde_json::{json, Value as Json};
use std::path::PathBuf;

/// The host's build and plugins. `cuda` is what `device::init` found;
/// `cuda_mapped` where libtorch_cuda is mapped (read before plugins load).
pub fn info_json(registry: &Registry, cuda: &CudaLibrary, cuda_mapped: Option<PathBuf>) -> Json {
    let cuda_state = match cuda {
        CudaLibrary::Loaded(p) => format!("loaded ({})", p.display()),
        CudaLibrary::NotShipped => "not shipped (CPU-only libtorch)".into(),
        CudaLibrary::Failed(e) => format!("failed: {e}"),
    };
    let plugins: Vec<Json> = registry
        .libraries()
        .iter()
        .map(|l| json!({ "name": l.name, "path": l.path, "generation": l.generation }))
        .collect();
    json!({
        "abi": diffgraph_sdk::abi::compat_string(),
        "libtorch_dir": device::libtorch_dir(),
        "cuda_library": cuda_state,
        "cuda_library_mapped": cuda_mapped,
        "cuda_available": tch::Cuda::is_available(),
        "cuda_devices": tch::Cuda::device_count(),
        "plugins": plugins,
        // What this process started with (crate::engine_env): the launcher
        // sets what the user did not.
        "environment": {
            engine_env::WAIT_POLICY_VAR: std::env::var(engine_env::WAIT_POLICY_VAR).ok(),
            engine_env::TUNABLES_VAR: std::env::var(engine_env::TUNABLES_VAR).ok(),
        },
    })
}
