//! The host side of the plugin ABI (`diffgraph_sdk::abi`): opening a library
//! and reading its descriptor, calling a node, and moving values across.
//! All of the host's unsafe code is in this file (the crate denies
//! `unsafe_code` everywhere else).
use crate::value::{HostObject, SharedTensor, TensorCell, Value};
use diffgraph_sdk::abi::*;
use std::ffi::c_void;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::Tensor;

// Thread safety of the value types (defined, safe, in `crate::value`).

// SAFETY: a `TensorCell` is only ever read: `SharedTensor` hands out `&Tensor`
// and nodes receive inputs as borrowed handles that the ABI forbids them to
// modify in place (`diffgraph_sdk::abi`, Ownership) - a rule the cache needs
// anyway, since a cached tensor is reused by later runs. libtorch's reference
// counts are atomic and concurrent read-only ops on one tensor are supported,
// so sharing the handle across threads is sound as long as plugins keep that
// rule. A plugin that broke it (an in-place op on an input) would corrupt
// cached results on one thread already; Rust cannot check C++ code for it.
unsafe impl Sync for TensorCell {}

// SAFETY: the SDK only lets plugins make objects from `Send + Sync` types
// (`diffgraph_sdk::Object::new`), and the host never dereferences `data`
// itself; `drop` is a plain function of a never-unloaded library.
unsafe impl Send for HostObject {}
unsafe impl Sync for HostObject {}

impl Drop for HostObject {
    fn drop(&mut self) {
        if let Some(drop_fn) = self.drop {
            // SAFETY: we own `data` and free it exactly once, with its maker's
            // function (which catches panics itself).
            unsafe { drop_fn(self.data) }
        }
    }
}

/// An opened plugin library and its descriptor. The library is leaked on
/// purpose: plugins are never unloaded (`diffgraph_sdk::abi`, Ownership).
pub struct OpenedLibrary {
    descriptor: &'static PluginDescriptor,
}

// SAFETY: the descriptor is immutable static data of a library that is never
// unloaded; its `run` function is callable from any thread.
unsafe impl Send for OpenedLibrary {}
unsafe impl Sync for OpenedLibrary {}

/// What a successful handshake yields.
pub struct Handshake {
    pub library: OpenedLibrary,
    pub plugin_name: String,
    pub schema_json: String,
}

/// Checks that `path` is a complete shared library before the dynamic loader
/// maps it: glibc maps a truncated file's segments past its end, and the
/// process then dies of SIGBUS when it touches them (a half-written or
/// half-copied library during hot reload).
fn check_complete_elf(path: &Path) -> Result<(), String> {
    use object::{Object, ObjectSegment};
    let data = std::fs::read(path).map_err(|e| format!("cannot open: {e}"))?;
    let file = object::File::parse(&*data)
        .map_err(|e| format!("not a complete shared library ({} bytes): {e}", data.len()))?;
    for segment in file.segments() {
        let (offset, size) = segment.file_range();
        if offset.saturating_add(size) > data.len() as u64 {
            return Err(format!(
                "truncated shared library: a segment ends at byte {} but the file has {} bytes",
                offset + size,
                data.len()
            ));
        }
    }
    Ok(())
}

/// Opens `path`, calls its entry symbol and checks the handshake.
pub fn open_library(path: &Path) -> Result<Handshake, String> {
    check_complete_elf(path)?;
    // SAFETY: loading a library runs its initialisers; plugins are trusted
    // code the user chose to load, exactly as with any native plugin host.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot open: {e}"))?;
    // SAFETY: the symbol's type is fixed by the ABI (`EntryFn`).
    let entry: EntryFn = unsafe { lib.get::<EntryFn>(ENTRY_SYMBOL) }
        .map(|sym| *sym)
        .map_err(|_| "not a diffgraph plugin: no `diffgraph_plugin_entry` symbol".to_string())?;
    std::mem::forget(lib); // never unload (see OpenedLibrary)
                           // SAFETY: calling the entry is the protocol; the SDK catches panics in it.
    let desc_ptr = unsafe { entry() };
    if desc_ptr.is_null() {
        return Err("the plugin failed to describe its nodes (its entry returned null)".into());
    }
    // SAFETY: the first two u32 fields have the same layout in every ABI
    // version, so they can be read before we know the rest matches.
    let (abi_version, struct_size) = unsafe {
        let head = desc_ptr as *const u32;
        (head.read(), head.add(1).read())
    };
    if abi_version != ABI_VERSION {
        return Err(format!(
            "plugin ABI version {abi_version} does not match the host's ABI version {ABI_VERSION}; \
             rebuild the plugin against this diffgraph SDK"
        ));
    }
    let host_size = std::mem::size_of::<PluginDescriptor>() as u32;
    if struct_size != host_size {
        return Err(format!(
            "plugin descriptor is {struct_size} bytes, the host expects {host_size} (same ABI version, \
             different layout); rebuild the plugin"
        ));
    }
    // SAFETY: version and size match, so the whole descriptor has our layout;
    // it lives as long as the (never unloaded) library.
    let descriptor: &'static PluginDescriptor = unsafe { &*desc_ptr };
    let (value_size, call_size) = (
        std::mem::size_of::<AbiValue>() as u32,
        std::mem::size_of::<AbiCall>() as u32,
    );
    if descriptor.value_size != value_size || descriptor.call_size != call_size {
        return Err(format!(
            "plugin value/call sizes {}/{} differ from the host's {value_size}/{call_size}",
            descriptor.value_size, descriptor.call_size
        ));
    }
    // SAFETY: descriptor strings are static data of the library.
    let compat = unsafe { descriptor.compat.to_string_lossy() };
    if compat != compat_string() {
        return Err(format!(
            "plugin was built for `{compat}` but the host runs `{}`; a tensor handle is only valid \
             between identical builds, so rebuild the plugin",
            compat_string()
        ));
    }
    // SAFETY: as above.
    let (plugin_name, schema_json) = unsafe {
        (
            descriptor.plugin_name.to_string_lossy(),
            descriptor.schema_json.to_string_lossy(),
        )
    };
    Ok(Handshake {
        library: OpenedLibrary { descriptor },
        plugin_name,
        schema_json,
    })
}

/// Per-call host state that the plugin's callbacks write into.
struct CallState<'a> {
    outputs: Vec<Value>,
    error: Option<String>,
    progress: &'a dyn Fn(u64, u64),
    interrupt: &'a AtomicBool,
}

/// The environment of one node call.
pub struct CallEnv<'a> {
    pub device: i64,
    pub output_dir: &'a str,
    pub progress: &'a dyn Fn(u64, u64),
    pub interrupt: &'a AtomicBool,
}

/// How a node call failed.
pub enum CallFailure {
    Error(String),
    Panic(String),
}

impl OpenedLibrary {
    /// Runs node `index` of this library on `inputs` (borrowed for the call).
    pub fn call(
        &self,
        index: u32,
        inputs: &[&Value],
        env: &CallEnv,
    ) -> Result<Vec<Value>, CallFailure> {
        let mut lists = Vec::new();
        let abi_inputs: Vec<AbiValue> = inputs.iter().map(|v| lower(v, &mut lists)).collect();
        let mut state = CallState {
            outputs: Vec::with_capacity(4),
            error: None,
            progress: env.progress,
            interrupt: env.interrupt,
        };
        let call = AbiCall {
            inputs: abi_inputs.as_ptr(),
            n_inputs: abi_inputs.len(),
            device: env.device,
            output_dir: AbiStr::of(env.output_dir),
            host: &mut state as *mut CallState as *mut c_void,
            emit: emit_cb,
            fail: fail_cb,
            progress: progress_cb,
            interrupted: interrupted_cb,
            global_rng: global_rng_cb,
        };
        // SAFETY: `call` and everything it points to (inputs, list arrays in
        // `lists`, the values they borrow, `state`) outlive this call.
        let status = unsafe { (self.descriptor.run)(index, &call) };
        drop(lists);
        match status {
            AbiStatus::Ok => Ok(state.outputs),
            AbiStatus::Panic => Err(CallFailure::Panic(state.error.unwrap_or_default())),
            _ => Err(CallFailure::Error(
                state
                    .error
                    .unwrap_or_else(|| "failed without a message".into()),
            )),
        }
    }
}

/// Borrows a host value as an ABI value; list arrays are kept in `lists`.
fn lower(v: &Value, lists: &mut Vec<Vec<AbiValue>>) -> AbiValue {
    let mut out = AbiValue::NONE;
    match v {
        Value::None => {}
        Value::Int(i) => {
            out.kind = AbiKind::Int as u32;
            out.int = *i;
        }
        Value::Float(f) => {
            out.kind = AbiKind::Float as u32;
            out.float = *f;
        }
        Value::Bool(b) => {
            out.kind = AbiKind::Bool as u32;
            out.int = *b as i64;
        }
        Value::Str(s) => {
            out.kind = AbiKind::Str as u32;
            out.ptr = s.as_ptr() as *mut c_void;
            out.len = s.len();
        }
        Value::Tensor(t) => {
            out.kind = AbiKind::Tensor as u32;
            out.ptr = t.tensor().as_ptr() as *mut c_void;
        }
        Value::Object(o) => {
            out.kind = AbiKind::Object as u32;
            out.ptr = o.data;
            out.object = AbiObject {
                type_name: AbiStr::of(&o.type_name),
                producer: o.producer,
                drop: None, // borrowed: the plugin must not free it
            };
        }
        Value::List(items) => {
            let arr: Vec<AbiValue> = items.iter().map(|i| lower(i, lists)).collect();
            out.kind = AbiKind::List as u32;
            out.ptr = arr.as_ptr() as *mut c_void;
            out.len = arr.len();
            lists.push(arr);
        }
    }
    out
}

/// Takes an emitted ABI value: owns its tensors and objects, copies the rest.
///
/// # Safety
/// `v` must follow the ownership rules of `diffgraph_sdk::abi`.
unsafe fn lift(v: &AbiValue) -> Value {
    match AbiKind::from_u32(v.kind) {
        Some(AbiKind::Int) => Value::Int(v.int),
        Some(AbiKind::Float) => Value::Float(v.float),
        Some(AbiKind::Bool) => Value::Bool(v.int != 0),
        Some(AbiKind::Str) => {
            // SAFETY: the bytes are valid during emit (caller's contract).
            let s = unsafe {
                AbiStr {
                    ptr: v.ptr as *const u8,
                    len: v.len,
                }
                .to_string_lossy()
            };
            Value::Str(s.into())
        }
        // SAFETY: the plugin handed us this `torch::Tensor*`; we now own it.
        Some(AbiKind::Tensor) => Value::Tensor(SharedTensor::new(unsafe {
            Tensor::from_ptr(v.ptr as *mut torch_sys::C_tensor)
        })),
        Some(AbiKind::Object) => Value::Object(Arc::new(HostObject {
            // SAFETY: valid during emit.
            type_name: unsafe { v.object.type_name.to_string_lossy() },
            producer: v.object.producer,
            data: v.ptr,
            drop: v.object.drop,
        })),
        Some(AbiKind::List) => {
            let items = if v.ptr.is_null() || v.len == 0 {
                &[][..]
            } else {
                // SAFETY: the array is valid during emit.
                unsafe { std::slice::from_raw_parts(v.ptr as *const AbiValue, v.len) }
            };
            // SAFETY: same contract for each element.
            Value::List(
                items
                    .iter()
                    .map(|i| unsafe { lift(i) })
                    .collect::<Vec<_>>()
                    .into(),
            )
        }
        Some(AbiKind::None) | None => Value::None,
    }
}

// The callbacks below are called by plugins with the `host` pointer we set in
// `OpenedLibrary::call`; none of them may unwind into the plugin.

unsafe extern "C" fn emit_cb(host: *mut c_void, value: *const AbiValue) {
    // SAFETY: `host` is our CallState for the duration of the call.
    let state = unsafe { &mut *(host as *mut CallState) };
    // SAFETY: the plugin passes a valid value it hands over to us.
    let v = unsafe { lift(&*value) };
    state.outputs.push(v);
}

unsafe extern "C" fn fail_cb(host: *mut c_void, message: AbiStr) {
    // SAFETY: as in emit_cb; the message is valid during the callback.
    let state = unsafe { &mut *(host as *mut CallState) };
    state.error = Some(unsafe { message.to_string_lossy() });
}

unsafe extern "C" fn progress_cb(host: *mut c_void, done: u64, total: u64) {
    // SAFETY: as in emit_cb.
    let state = unsafe { &*(host as *const CallState) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (state.progress)(done, total)
    }));
}

unsafe extern "C" fn interrupted_cb(host: *mut c_void) -> bool {
    // SAFETY: as in emit_cb.
    let state = unsafe { &*(host as *const CallState) };
    state.interrupt.load(Ordering::Relaxed)
}

unsafe extern "C" fn global_rng_cb(_host: *mut c_void, acquire: bool) {
    // Poisoning is ignored inside, so nothing here panics; a plugin that
    // acquires gives back from the same call (`diffgraph_sdk::rng`).
    if acquire {
        super::global_rng::acquire();
    } else {
        super::global_rng::release();
    }
}

/// Opens a native library with RTLD_GLOBAL and keeps it loaded forever (used
/// for libtorch's CUDA library, whose static initialisers register CUDA with
/// libtorch when it is loaded).
pub fn load_global_library(name_or_path: &str) -> Result<(), String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading libtorch's own CUDA library runs its initialisers, which
    // is exactly what we want; it is never unloaded.
    let lib = unsafe { Library::open(Some(name_or_path), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| e.to_string())?;
    std::mem::forget(lib);
    Ok(())
}

/// Free and total bytes of CUDA device `index` and its name, from the CUDA
/// runtime that libtorch's CUDA library brought in (`cudaMemGetInfo`,
/// `cudaGetDeviceProperties`); None without one. Device-wide figures, as
/// ComfyUI's `vram_free`/`vram_total` (`torch.cuda.mem_get_info`). The
/// calling thread's current device is restored afterwards.
pub fn cuda_memory(cuda_library: &Path, index: i32) -> Option<(u64, u64, String)> {
    use libloading::os::unix::{Library, Symbol, RTLD_NOW};
    type GetDevice = unsafe extern "C" fn(*mut i32) -> i32;
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    type Properties = unsafe extern "C" fn(*mut u8, i32) -> i32;
    // SAFETY: `cuda_library` is libtorch's CUDA library as this process
    // mapped it (`device::init`), so opening it again only takes a reference;
    // dlsym on its handle searches it and the CUDA runtime it depends on. The signatures are the CUDA runtime API's
    // (cuda_runtime_api.h); every call passes valid pointers. The property
    // struct's first field is `char name[256]` in every CUDA version; the
    // buffer is larger than the whole struct (about 1 KB in CUDA 12).
    unsafe {
        let lib = Library::open(Some(cuda_library), RTLD_NOW).ok()?;
        let get: Symbol<GetDevice> = lib.get(b"cudaGetDevice\0").ok()?;
        let set: Symbol<SetDevice> = lib.get(b"cudaSetDevice\0").ok()?;
        let info: Symbol<MemGetInfo> = lib.get(b"cudaMemGetInfo\0").ok()?;
        let mut previous = 0;
        if get(&mut previous) != 0 || set(index) != 0 {
            return None;
        }
        let (mut free, mut total) = (0usize, 0usize);
        let ok = info(&mut free, &mut total) == 0;
        let mut props = vec![0u8; 16 << 10];
        let name = lib
            .get::<Properties>(b"cudaGetDeviceProperties_v2\0")
            .or_else(|_| lib.get::<Properties>(b"cudaGetDeviceProperties\0"))
            .ok()
            .filter(|p| p(props.as_mut_ptr(), index) == 0)
            .map(|_| {
                let end = props[..256].iter().position(|&b| b == 0).unwrap_or(256);
                String::from_utf8_lossy(&props[..end]).into_owned()
            })
            .unwrap_or_default();
        set(previous);
        ok.then_some((free as u64, total as u64, name))
    }
}

/// Bytes the C allocator has handed out and not taken back: glibc's
/// `mallinfo2()` (`uordblks`, in-use heap chunks, plus `hblkhd`, in-use
/// mmapped chunks), or None without glibc 2.33+. libtorch's CPU tensors come
/// from malloc, so the growth of this figure while a node runs is what its
/// results hold (unlike resident memory, it does not miss freed memory that
/// is reused).
pub fn malloc_in_use() -> Option<u64> {
    use std::sync::OnceLock;
    #[repr(C)]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    type MallInfo2Fn = unsafe extern "C" fn() -> MallInfo2;
    static FUNCTION: OnceLock<Option<MallInfo2Fn>> = OnceLock::new();
    let f = FUNCTION.get_or_init(|| {
        // SAFETY: looks up glibc's `mallinfo2` in this process (absent from
        // other C libraries and older glibc: then None); the function type
        // is glibc's declaration (malloc.h), struct of ten size_t fields.
        unsafe {
            let this = libloading::os::unix::Library::this();
            let f = this.get::<MallInfo2Fn>(b"mallinfo2\0").ok().map(|s| *s);
            std::mem::forget(this);
            f
        }
    });
    // SAFETY: `mallinfo2` takes no arguments and only reads the allocator's
    // bookkeeping (under its locks).
    f.map(|f| {
        let m = unsafe { f() };
        (m.uordblks + m.hblkhd) as u64
    })
}

/// Gives the C allocator's free memory back to the system (glibc's
/// `malloc_trim(0)`; nothing elsewhere). Freed chunks otherwise stay in the
/// process: all of them under the engine's malloc settings
/// (`crate::engine_env`), those below the mmap threshold (up to 32 MiB)
/// under glibc's defaults; so a finished run, or a cache that evicted a
/// model, would not shrink the process.
pub fn release_free_memory() {
    use std::sync::OnceLock;
    type TrimFn = unsafe extern "C" fn(usize) -> i32;
    static FUNCTION: OnceLock<Option<TrimFn>> = OnceLock::new();
    let f = FUNCTION.get_or_init(|| {
        // SAFETY: looks up glibc's `malloc_trim` (malloc.h: `int
        // malloc_trim(size_t pad)`) in this process; None without glibc.
        unsafe {
            let this = libloading::os::unix::Library::this();
            let f = this.get::<TrimFn>(b"malloc_trim\0").ok().map(|s| *s);
            std::mem::forget(this);
            f
        }
    });
    if let Some(f) = f {
        // SAFETY: takes the allocator's locks itself; 0 keeps no padding.
        unsafe { f(0) };
    }
}
