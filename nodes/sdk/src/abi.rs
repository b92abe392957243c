//! The C ABI between the host and node plugins: the only types that cross a
//! library boundary. Everything here is `#[repr(C)]`; Rust's own layouts
//! (String, Vec, trait objects) are no contract between separately built
//! libraries.
//!
//! # Protocol
//! 1. The host opens the library and calls [`ENTRY_SYMBOL`], an
//!    `extern "C" fn() -> *const PluginDescriptor`.
//! 2. It reads `abi_version` and `struct_size` (the first 8 bytes, whose
//!    layout never changes between ABI versions) and refuses the library
//!    unless both match its own, then compares [`PluginDescriptor::compat`].
//! 3. It parses `schema_json` (a JSON array of [`crate::NodeSchema`]).
//! 4. To run node `i` it calls `run(i, &call)`.
//!
//! # Ownership
//! - **Inputs** (`AbiCall::inputs`) are borrowed for the duration of `run`:
//!   strings, list arrays, tensor handles and object data stay owned by the host.
//!   A node never modifies an input in place: the host caches values and may
//!   read the same tensor from other threads meanwhile.
//! - **Outputs** are handed over with `AbiCall::emit`, once per declared output,
//!   in order. The host *takes ownership* of every tensor handle (a heap
//!   `torch::Tensor*`, freed by the host's libtorch) and every object (freed by
//!   calling its `drop` function, which lives in the plugin) inside the emitted
//!   value; string bytes and list arrays are *copied* by the host, so the plugin
//!   frees those itself after `emit` returns.
//! - No tensor data is ever copied: handles are reference-counted libtorch
//!   tensors shared by both sides.
//! - Libraries are never unloaded, so an object's `drop` function and a
//!   tensor's deleter stay callable for as long as the host lives.
use std::ffi::c_void;

// The two versions are macros so that `compat_string` can `concat!` them:
// `concat!` takes literals, not consts. The consts below are the public names.
macro_rules! abi_version {
    () => {
        2
    };
}
macro_rules! tch_version {
    () => {
        "0.24.0"
    };
}

/// Bumped whenever any `#[repr(C)]` type below changes.
pub const ABI_VERSION: u32 = abi_version!();

/// Name of the single exported entry function (NUL-terminated for dlsym).
pub const ENTRY_SYMBOL: &[u8] = b"diffgraph_plugin_entry\0";

/// tch version the SDK is pinned to (`tch = "=0.24.0"` in the workspace's
/// Cargo.toml; a test keeps the two equal); a tensor handle means the same
/// thing on both sides only for the same tch shim.
pub const TCH_VERSION: &str = tch_version!();

/// What makes a tensor handle valid on both sides of the boundary: tch, the
/// libtorch it was built against, the C++ string ABI flag and the ABI version.
/// Host and plugin must agree on it exactly, e.g.
/// `diffgraph-abi=2;tch=0.24.0;libtorch=2.11.0;cxx11abi=1`.
pub fn compat_string() -> &'static str {
    concat!(
        "diffgraph-abi=",
        abi_version!(),
        ";tch=",
        tch_version!(),
        ";libtorch=",
        env!("DIFFGRAPH_LIBTORCH_VERSION"),
        ";cxx11abi=",
        env!("DIFFGRAPH_CXX11_ABI")
    )
}

/// A borrowed UTF-8 string: pointer and length, not NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AbiStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl AbiStr {
    pub const EMPTY: AbiStr = AbiStr {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn of(s: &str) -> AbiStr {
        AbiStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// `ptr..ptr+len` must be valid, initialised bytes for the returned lifetime.
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees the range is valid for 'a.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }

    /// # Safety
    /// As [`AbiStr::as_bytes`]. Invalid UTF-8 is replaced, never trusted.
    pub unsafe fn to_string_lossy(self) -> String {
        // SAFETY: forwarded to the caller.
        String::from_utf8_lossy(unsafe { self.as_bytes() }).into_owned()
    }
}

/// The kind of an [`AbiValue`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiKind {
    None = 0,
    Int = 1,
    Float = 2,
    Bool = 3,
    Str = 4,
    Tensor = 5,
    Object = 6,
    List = 7,
}

impl AbiKind {
    pub fn from_u32(v: u32) -> Option<AbiKind> {
        Some(match v {
            0 => AbiKind::None,
            1 => AbiKind::Int,
            2 => AbiKind::Float,
            3 => AbiKind::Bool,
            4 => AbiKind::Str,
            5 => AbiKind::Tensor,
            6 => AbiKind::Object,
            7 => AbiKind::List,
            _ => return None,
        })
    }
}

/// An object made by a plugin (a loaded model, a scheduler state): opaque to
/// the host, tagged with its port type name and the library that made it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AbiObject {
    /// Port type name (e.g. `SCHEDULER_STATE`); checked against input types.
    pub type_name: AbiStr,
    /// Address of a static unique to the library (and generation) that made
    /// the object: only that library may look inside it.
    pub producer: *const c_void,
    /// Frees `AbiValue::ptr`; called exactly once by the owner.
    pub drop: Option<unsafe extern "C" fn(*mut c_void)>,
}

impl AbiObject {
    pub const NONE: AbiObject = AbiObject {
        type_name: AbiStr::EMPTY,
        producer: std::ptr::null(),
        drop: None,
    };
}

/// One value crossing the boundary. Which fields are meaningful depends on `kind`:
/// `int` (Int, Bool as 0/1), `float` (Float), `ptr`+`len` (Str: UTF-8 bytes;
/// List: `*const AbiValue` array), `ptr` (Tensor: `*mut C_tensor`; Object: data)
/// and `object` (Object).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AbiValue {
    pub kind: u32,
    pub int: i64,
    pub float: f64,
    pub ptr: *mut c_void,
    pub len: usize,
    pub object: AbiObject,
}

impl AbiValue {
    pub const NONE: AbiValue = AbiValue {
        kind: AbiKind::None as u32,
        int: 0,
        float: 0.0,
        ptr: std::ptr::null_mut(),
        len: 0,
        object: AbiObject::NONE,
    };
}

/// Result of [`PluginDescriptor::run`].
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiStatus {
    Ok = 0,
    /// The node returned an error; the message was passed to `fail`.
    Error = 1,
    /// The node panicked; the panic was caught in the plugin and its message
    /// passed to `fail`.
    Panic = 2,
}

/// Everything a node call needs from the host. Callbacks take `host` first.
#[repr(C)]
pub struct AbiCall {
    pub inputs: *const AbiValue,
    pub n_inputs: usize,
    /// -1 for CPU, n >= 0 for CUDA device n.
    pub device: i64,
    /// Folder where output nodes write files.
    pub output_dir: AbiStr,
    pub host: *mut c_void,
    /// Hands one output to the host (see the module's ownership rules).
    pub emit: unsafe extern "C" fn(host: *mut c_void, value: *const AbiValue),
    /// Reports the node's error message.
    pub fail: unsafe extern "C" fn(host: *mut c_void, message: AbiStr),
    /// Reports progress inside a long node.
    pub progress: unsafe extern "C" fn(host: *mut c_void, done: u64, total: u64),
    /// True once the user asked to stop; long nodes should return an error.
    pub interrupted: unsafe extern "C" fn(host: *mut c_void) -> bool,
    /// Takes (`acquire` true) or gives back (false) the host's process-wide
    /// lock on libtorch's global CPU generator ([`crate::rng`]): plugins are
    /// separate libraries, so only the host can give them one lock. Blocks
    /// until the lock is free; a call that acquires must release it.
    pub global_rng: unsafe extern "C" fn(host: *mut c_void, acquire: bool),
}

/// Returned by the entry symbol; lives as long as the library.
#[repr(C)]
pub struct PluginDescriptor {
    /// Must stay the first two fields in every ABI version.
    pub abi_version: u32,
    pub struct_size: u32,
    /// `size_of::<AbiValue>()` and `size_of::<AbiCall>()` on the plugin side.
    pub value_size: u32,
    pub call_size: u32,
    pub compat: AbiStr,
    pub plugin_name: AbiStr,
    /// JSON array of node schemas, in node index order.
    pub schema_json: AbiStr,
    pub run: unsafe extern "C" fn(node: u32, call: *const AbiCall) -> AbiStatus,
}

/// The entry function's type.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compat_string_is_built_from_the_versions() {
        let prefix = format!("diffgraph-abi={ABI_VERSION};tch={TCH_VERSION};libtorch=");
        assert!(compat_string().starts_with(&prefix), "{}", compat_string());
        assert!(compat_string().starts_with("diffgraph-abi=2;tch=0.24.0;libtorch="));
    }

    #[test]
    fn tch_version_matches_the_workspace_pin() {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
        let text = std::fs::read_to_string(manifest).expect("workspace Cargo.toml");
        for krate in ["tch", "torch-sys"] {
            let pin = format!("{krate} = \"={TCH_VERSION}\"");
            assert!(text.contains(&pin), "the workspace must pin `{pin}`");
        }
    }
}
