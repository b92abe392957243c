//! Choosing the device, and making sure libtorch's CUDA library is loaded.
//!
//! tch links `libtorch_cuda.so`, but Rust links with `--as-needed`, and since
//! no symbol of it is referenced the dependency is dropped: without loading it
//! by hand, `Cuda::is_available()` is false even on a GPU machine.
use std::path::PathBuf;
use std::sync::OnceLock;
use tch::Device;

/// The state of libtorch's CUDA library in this process.
#[derive(Clone, Debug)]
pub enum CudaLibrary {
    Loaded(PathBuf),
    /// This libtorch has no CUDA library (a CPU-only build).
    NotShipped,
    Failed(String),
}

static CUDA: OnceLock<CudaLibrary> = OnceLock::new();

/// Loads `libtorch_cuda.so` once, from where libtorch itself was loaded (or
/// the usual library search path). Call before any CUDA query.
pub fn init() -> &'static CudaLibrary {
    CUDA.get_or_init(|| {
        // Make sure libtorch is mapped (tch loads it lazily with the process).
        let _ = tch::Cuda::device_count;
        let mut candidates = Vec::new();
        if let Some(dir) = libtorch_dir() {
            candidates.push(dir.join("libtorch_cuda.so"));
        }
        let existing: Vec<PathBuf> = candidates.into_iter().filter(|p| p.exists()).collect();
        if existing.is_empty() {
            return match crate::plugin::ffi::load_global_library("libtorch_cuda.so") {
                Ok(()) => CudaLibrary::Loaded(
                    mapped_path("libtorch_cuda.so").unwrap_or_else(|| "libtorch_cuda.so".into()),
                ),
                Err(_) => CudaLibrary::NotShipped,
            };
        }
        let path = &existing[0];
        match crate::plugin::ffi::load_global_library(&path.to_string_lossy()) {
            Ok(()) => CudaLibrary::Loaded(path.clone()),
            Err(e) => CudaLibrary::Failed(e),
        }
    })
}

/// The folder libtorch_cpu.so was loaded from, read from /proc/self/maps.
pub fn libtorch_dir() -> Option<PathBuf> {
    mapped_path("libtorch_cpu.so").and_then(|p| p.parent().map(|d| d.to_path_buf()))
}

/// The path of a mapped shared library whose file name is `name`.
pub fn mapped_path(name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.rsplit('/').next() == Some(name))
        .map(PathBuf::from)
}

/// `--device`: cpu, cuda, cuda:N or auto.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    Cpu,
    Cuda(usize),
    Auto,
}

impl std::str::FromStr for DeviceRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "gpu" => Ok(DeviceRequest::Cuda(0)),
            "auto" => Ok(DeviceRequest::Auto),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| format!("`{s}` is not a device; use cpu, cuda, cuda:N or auto")),
        }
    }
}

/// Resolves a request to a device and a line saying which one and why.
/// `cpu` does not load libtorch's CUDA library: mapping and initialising it
/// (with cuBLAS and the CUDA runtime) is ~0.3 s of every process start on the
/// development machine, and nothing in a CPU run calls it.
pub fn select(request: DeviceRequest) -> Result<(Device, String), String> {
    // The CUDA index asked for; `None`: auto.
    let index = match request {
        DeviceRequest::Cpu => return Ok((Device::Cpu, "using device cpu".into())),
        DeviceRequest::Cuda(n) => Some(n),
        DeviceRequest::Auto => None,
    };
    let lib = init();
    let count = tch::Cuda::device_count() as usize;
    let why_none = || match lib {
        CudaLibrary::Loaded(p) => format!(
            "libtorch's CUDA library is loaded ({}) but no CUDA device or driver was found",
            p.display()
        ),
        CudaLibrary::NotShipped => {
            "this libtorch is a CPU-only build (no libtorch_cuda.so)".to_string()
        }
        CudaLibrary::Failed(e) => format!("libtorch's CUDA library failed to load: {e}"),
    };
    match index {
        Some(n) if n < count => Ok((
            Device::Cuda(n),
            format!("using device cuda:{n} ({count} CUDA device(s))"),
        )),
        Some(n) if count > 0 => Err(format!(
            "--device cuda:{n} was requested but only {count} CUDA device(s) exist"
        )),
        Some(_) => Err(format!(
            "--device cuda was requested but CUDA is not available: {}",
            why_none()
        )),
        None if count > 0 => Ok((
            Device::Cuda(0),
            format!("using device cuda:0 (auto; {count} CUDA device(s))"),
        )),
        None => Ok((
            Device::Cpu,
            format!("using device cpu (auto: {})", why_none()),
        )),
    }
}

/// A device's memory as ComfyUI's `/system_stats` reports it (bytes).
/// On the CPU every figure is 0 (ComfyUI reports the CPU device so too).
pub fn stats_json(device: Device) -> serde_json::Value {
    let (name, kind, index, free, total) = match device {
        Device::Cuda(n) => {
            let (free, total, gpu) = match init() {
                CudaLibrary::Loaded(lib) => crate::plugin::ffi::cuda_memory(lib, n as i32),
                _ => None,
            }
            .unwrap_or_default();
            (format!("cuda:{n} {gpu}"), "cuda", Some(n), free, total)
        }
        _ => ("cpu".to_string(), "cpu", None, 0, 0),
    };
    // libtorch's caching-allocator statistics (ComfyUI's torch_vram_*) are
    // C++ only (no C symbol to reach them): reported as 0.
    serde_json::json!({
        "name": name, "type": kind, "index": index,
        "vram_total": total, "vram_free": free,
        "torch_vram_total": 0, "torch_vram_free": 0,
    })
}
