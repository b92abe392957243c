//! The plugin side of the ABI: the entry point that [`crate::export_plugin!`]
//! generates and the `run` function it hands to the host. All of the plugin
//! side's unsafe code is in this file; node authors never see it.
use crate::abi::*;
use crate::node::{Context, Inputs, Node, NodeError};
use crate::value::{InputValue, Object, ObjectRef, Value};
use std::any::Any;
use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;
use tch::{Device, Tensor};
use torch_sys::C_tensor;

/// A static whose address is unique to this copy of the SDK, i.e. to the
/// plugin library (and generation) it is linked into. Objects carry it so
/// that only their maker casts them back to Rust types.
static PRODUCER: u8 = 0;

fn producer_token() -> *const c_void {
    &PRODUCER as *const u8 as *const c_void
}

/// The object payload behind `AbiValue::ptr`: a boxed trait object, boxed
/// again so that a thin pointer crosses the boundary.
type ObjectBox = Box<dyn Any + Send + Sync>;

struct Plugin {
    nodes: Vec<Box<dyn Node>>,
    input_names: Vec<Vec<String>>,
    output_counts: Vec<usize>,
    _schema_json: String,
    descriptor: PluginDescriptor,
}

// SAFETY: the descriptor's raw pointers point into this same immutable static
// (`_schema_json`) or to 'static strings; nothing is mutated after init.
unsafe impl Sync for Plugin {}
unsafe impl Send for Plugin {}

static PLUGIN: OnceLock<Option<Plugin>> = OnceLock::new();

/// Implements the entry symbol: builds the plugin once and returns its
/// descriptor, or null when building it panicked (the host reports that).
pub fn entry(
    name: &'static str,
    make_nodes: fn() -> Vec<Box<dyn Node>>,
) -> *const PluginDescriptor {
    let plugin = PLUGIN.get_or_init(|| catch_unwind(|| build(name, make_nodes)).ok());
    match plugin {
        Some(p) => &p.descriptor,
        None => std::ptr::null(),
    }
}

fn build(name: &'static str, make_nodes: fn() -> Vec<Box<dyn Node>>) -> Plugin {
    let nodes = make_nodes();
    let schemas: Vec<_> = nodes.iter().map(|n| n.schema()).collect();
    let schema_json = serde_json::to_string(&schemas).expect("node schemas serialise");
    let descriptor = PluginDescriptor {
        abi_version: ABI_VERSION,
        struct_size: std::mem::size_of::<PluginDescriptor>() as u32,
        value_size: std::mem::size_of::<AbiValue>() as u32,
        call_size: std::mem::size_of::<AbiCall>() as u32,
        compat: AbiStr::of(compat_string()),
        plugin_name: AbiStr::of(name),
        schema_json: AbiStr::of(&schema_json),
        run: run_node,
    };
    Plugin {
        input_names: schemas
            .iter()
            .map(|s| s.inputs.iter().map(|i| i.name.clone()).collect())
            .collect(),
        output_counts: schemas.iter().map(|s| s.outputs.len()).collect(),
        nodes,
        _schema_json: schema_json,
        descriptor,
    }
}

type InterruptFn = unsafe extern "C" fn(host: *mut c_void) -> bool;
type GlobalRngFn = unsafe extern "C" fn(host: *mut c_void, acquire: bool);

/// The host callbacks of the call running on this thread.
#[derive(Clone, Copy)]
struct CurrentCall {
    host: *mut c_void,
    interrupted: InterruptFn,
    global_rng: GlobalRngFn,
}

thread_local! {
    /// The running call's host callbacks, on the thread running the node
    /// (for [`crate::interrupt`] and [`crate::rng`]); None between calls.
    static CURRENT_CALL: std::cell::Cell<Option<CurrentCall>> =
        const { std::cell::Cell::new(None) };
}

/// Whether the host asked the node running on this thread to stop; false
/// outside a node call.
pub(crate) fn current_call_interrupted() -> bool {
    match CURRENT_CALL.with(|c| c.get()) {
        // SAFETY: set only while `run_node` runs on this thread, during which
        // the host's callback and pointer are valid.
        Some(call) => unsafe { (call.interrupted)(call.host) },
        None => false,
    }
}

/// Takes or gives back the host's global-generator lock for the node
/// running on this thread; false (nothing done) outside a node call.
pub(crate) fn current_call_global_rng(acquire: bool) -> bool {
    match CURRENT_CALL.with(|c| c.get()) {
        // SAFETY: as in `current_call_interrupted`; the host's lock callback
        // neither unwinds nor keeps the pointer.
        Some(call) => {
            unsafe { (call.global_rng)(call.host, acquire) };
            true
        }
        None => false,
    }
}

/// The descriptor's `run`: catches every panic so that none unwinds into the
/// host (which would abort the process), and reports it as the node's error.
/// An unwind from [`crate::interrupt::check`] is reported as an interruption.
unsafe extern "C" fn run_node(node: u32, call: *const AbiCall) -> AbiStatus {
    // SAFETY: the host passes a valid AbiCall for the duration of this call.
    let call = unsafe { &*call };
    let current = CurrentCall {
        host: call.host,
        interrupted: call.interrupted,
        global_rng: call.global_rng,
    };
    let previous = CURRENT_CALL.with(|c| c.replace(Some(current)));
    let outcome = catch_unwind(AssertUnwindSafe(|| run_checked(node as usize, call)));
    CURRENT_CALL.with(|c| c.set(previous));
    let (status, message) = match outcome {
        Ok(Ok(())) => return AbiStatus::Ok,
        Ok(Err(e)) => (AbiStatus::Error, e.0),
        Err(payload) if payload.is::<crate::interrupt::Interrupted>() => {
            (AbiStatus::Error, crate::interrupt::MESSAGE.to_string())
        }
        Err(payload) => (
            AbiStatus::Panic,
            format!("node panicked: {}", panic_message(&*payload)),
        ),
    };
    // SAFETY: `fail` is the host's callback and copies the message.
    unsafe { (call.fail)(call.host, AbiStr::of(&message)) };
    status
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

fn run_checked(index: usize, call: &AbiCall) -> Result<(), NodeError> {
    let plugin = PLUGIN
        .get()
        .and_then(|p| p.as_ref())
        .ok_or("plugin not initialised")?;
    let node = plugin
        .nodes
        .get(index)
        .ok_or_else(|| format!("no node #{index} in this plugin"))?;
    let names = &plugin.input_names[index];

    // SAFETY: the host guarantees `inputs[..n_inputs]` are valid AbiValues
    // whose handles stay alive until this call returns.
    let raw = unsafe { slice_or_empty(call.inputs, call.n_inputs) };
    if raw.len() != names.len() {
        return Err(format!(
            "host passed {} inputs, schema declares {}",
            raw.len(),
            names.len()
        )
        .into());
    }
    let mut handles = Vec::new();
    collect_tensor_handles(raw, &mut handles);
    // Borrowed tensors: wrapped without taking ownership (never dropped here).
    // SAFETY: each handle is a live `torch::Tensor*` owned by the host.
    let arena: Vec<ManuallyDrop<Tensor>> = handles
        .iter()
        .map(|&h| ManuallyDrop::new(unsafe { Tensor::from_ptr(h) }))
        .collect();
    let mut cursor = 0;
    let values = raw
        .iter()
        .map(|v| lift(v, &arena, &mut cursor))
        .collect::<Result<_, _>>()?;
    let inputs = Inputs { names, values };

    // SAFETY (closures): the callbacks and `host` are valid during the call.
    let progress = |done, total| unsafe { (call.progress)(call.host, done, total) };
    let interrupted = || unsafe { (call.interrupted)(call.host) };
    // SAFETY: output_dir is a valid string for the call.
    let dir_bytes = unsafe { call.output_dir.as_bytes() };
    let dir = std::str::from_utf8(dir_bytes).map_err(|_| "output folder is not UTF-8")?;
    let ctx = Context {
        device: if call.device < 0 {
            Device::Cpu
        } else {
            Device::Cuda(call.device as usize)
        },
        output_dir: Path::new(dir),
        progress: &progress,
        interrupted: &interrupted,
    };

    let outputs = node.run(&ctx, &inputs)?;
    drop(inputs);
    if outputs.len() != plugin.output_counts[index] {
        return Err(format!(
            "the node returned {} outputs, its schema declares {}",
            outputs.len(),
            plugin.output_counts[index]
        )
        .into());
    }
    for value in outputs {
        let mut keep = Keep::default();
        let abi = lower(value, &mut keep);
        // SAFETY: `abi` and the buffers in `keep` are valid until `emit`
        // returns; the host takes the tensors and objects inside it.
        unsafe { (call.emit)(call.host, &abi) };
    }
    Ok(())
}

/// # Safety
/// `ptr` must point to `len` valid values (or `len` be 0).
unsafe fn slice_or_empty<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

fn collect_tensor_handles(values: &[AbiValue], out: &mut Vec<*mut C_tensor>) {
    for v in values {
        match AbiKind::from_u32(v.kind) {
            Some(AbiKind::Tensor) => out.push(v.ptr as *mut C_tensor),
            // SAFETY: list arrays are valid for the call (host's guarantee).
            Some(AbiKind::List) => collect_tensor_handles(
                unsafe { slice_or_empty(v.ptr as *const AbiValue, v.len) },
                out,
            ),
            _ => {}
        }
    }
}

/// Turns a borrowed ABI value into an [`InputValue`], in the same traversal
/// order as [`collect_tensor_handles`] so that tensors line up with `arena`.
fn lift<'a>(
    v: &'a AbiValue,
    arena: &'a [ManuallyDrop<Tensor>],
    cursor: &mut usize,
) -> Result<InputValue<'a>, NodeError> {
    Ok(match AbiKind::from_u32(v.kind) {
        Some(AbiKind::None) => InputValue::None,
        Some(AbiKind::Int) => InputValue::Int(v.int),
        Some(AbiKind::Float) => InputValue::Float(v.float),
        Some(AbiKind::Bool) => InputValue::Bool(v.int != 0),
        Some(AbiKind::Str) => {
            // SAFETY: host strings are valid for the call.
            let bytes = unsafe {
                AbiStr {
                    ptr: v.ptr as *const u8,
                    len: v.len,
                }
                .as_bytes()
            };
            InputValue::Str(
                std::str::from_utf8(bytes).map_err(|_| "host passed a string that is not UTF-8")?,
            )
        }
        Some(AbiKind::Tensor) => {
            let t: &Tensor = &arena[*cursor];
            *cursor += 1;
            InputValue::Tensor(t)
        }
        Some(AbiKind::Object) => {
            // SAFETY: the type name is valid for the call.
            let type_bytes = unsafe { v.object.type_name.as_bytes() };
            let type_name = std::str::from_utf8(type_bytes).unwrap_or("?");
            let inner = if v.object.producer == producer_token() {
                // SAFETY: this library made the object, so `ptr` is one of
                // our `*mut ObjectBox` and is alive while the host holds it.
                Some(unsafe { &**(v.ptr as *const ObjectBox) })
            } else {
                None
            };
            InputValue::Object(ObjectRef { type_name, inner })
        }
        Some(AbiKind::List) => {
            // SAFETY: list arrays are valid for the call.
            let items = unsafe { slice_or_empty(v.ptr as *const AbiValue, v.len) };
            InputValue::List(
                items
                    .iter()
                    .map(|i| lift(i, arena, cursor))
                    .collect::<Result<_, _>>()?,
            )
        }
        None => return Err(format!("host passed a value of unknown kind {}", v.kind).into()),
    })
}

/// Buffers that must outlive one `emit` call (string bytes, list arrays).
#[derive(Default)]
struct Keep {
    strings: Vec<String>,
    lists: Vec<Vec<AbiValue>>,
}

unsafe extern "C" fn drop_object(data: *mut c_void) {
    // SAFETY: `data` came from `Box::into_raw` in `lower` and the host calls
    // this exactly once. A panicking Drop must not unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        drop(unsafe { Box::from_raw(data as *mut ObjectBox) })
    }));
}

/// Turns an owned value into its ABI form, handing ownership of tensors and
/// objects to the host (they are not dropped here).
fn lower(value: Value, keep: &mut Keep) -> AbiValue {
    let mut out = AbiValue::NONE;
    match value {
        Value::None => {}
        Value::Int(v) => {
            out.kind = AbiKind::Int as u32;
            out.int = v;
        }
        Value::Float(v) => {
            out.kind = AbiKind::Float as u32;
            out.float = v;
        }
        Value::Bool(v) => {
            out.kind = AbiKind::Bool as u32;
            out.int = v as i64;
        }
        Value::Str(s) => {
            out.kind = AbiKind::Str as u32;
            out.ptr = s.as_ptr() as *mut c_void;
            out.len = s.len();
            keep.strings.push(s);
        }
        Value::Tensor(t) => {
            out.kind = AbiKind::Tensor as u32;
            let mut t = ManuallyDrop::new(t);
            out.ptr = t.as_mut_ptr() as *mut c_void;
        }
        Value::Object(Object { type_name, inner }) => {
            out.kind = AbiKind::Object as u32;
            out.ptr = Box::into_raw(Box::new(inner)) as *mut c_void;
            out.object = AbiObject {
                type_name: AbiStr::of(type_name),
                producer: producer_token(),
                drop: Some(drop_object),
            };
        }
        Value::List(items) => {
            let lowered: Vec<AbiValue> = items.into_iter().map(|v| lower(v, keep)).collect();
            out.kind = AbiKind::List as u32;
            out.ptr = lowered.as_ptr() as *mut c_void;
            out.len = lowered.len();
            keep.lists.push(lowered);
        }
    }
    out
}

/// Exports a plugin: its name and its node types. Put this once in a plugin
/// crate (`crate-type = ["cdylib"]`):
///
/// ```ignore
/// diffgraph_sdk::export_plugin!("my-nodes", [AddConstant, Scale]);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($name:expr, [$($node:expr),* $(,)?]) => {
        /// The plugin's entry point (see `diffgraph_sdk::abi`).
        #[no_mangle]
        pub extern "C" fn diffgraph_plugin_entry() -> *const $crate::abi::PluginDescriptor {
            $crate::export::entry($name, || {
                ::std::vec![$(::std::boxed::Box::new($node) as ::std::boxed::Box<dyn $crate::Node>),*]
            })
        }
    };
}
