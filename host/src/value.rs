//! Runtime values flowing along the graph's edges, on the host side. Cheap to
//! clone: tensors and objects are shared, never copied.
//!
//! These are safe types; what makes them cross the plugin boundary (and the
//! `unsafe impl`s that let them cross threads) lives in `plugin::ffi`, the
//! host's only unsafe module, so nothing here reaches the ABI layer.
use diffgraph_sdk::PortType;
use std::ffi::c_void;
use std::fmt;
use std::sync::Arc;
use tch::Tensor;

/// A libtorch tensor shared between graph values (and threads). tch's
/// `Tensor` is `Send` but not `Sync`; `plugin::ffi` declares the cell `Sync`
/// and explains why that is sound.
#[derive(Clone)]
pub struct SharedTensor(Arc<TensorCell>);

pub(crate) struct TensorCell(pub(crate) Tensor);

impl SharedTensor {
    pub fn new(t: Tensor) -> SharedTensor {
        SharedTensor(Arc::new(TensorCell(t)))
    }

    /// Read-only access: nodes never modify a value in place (the cache and
    /// other threads may hold it too).
    pub fn tensor(&self) -> &Tensor {
        &self.0 .0
    }
}

/// An object made by a plugin: opaque to the host, freed by the plugin's own
/// `drop` function when the last reference goes (the `Drop` impl is in
/// `plugin::ffi`). Libraries are never unloaded, so that function stays
/// callable.
pub struct HostObject {
    pub(crate) type_name: String,
    pub(crate) producer: *const c_void,
    pub(crate) data: *mut c_void,
    pub(crate) drop: Option<unsafe extern "C" fn(*mut c_void)>,
}

impl HostObject {
    pub fn type_name(&self) -> &str {
        &self.type_name
    }
}

#[derive(Clone)]
pub enum Value {
    None,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Arc<str>),
    Tensor(SharedTensor),
    Object(Arc<HostObject>),
    List(Arc<[Value]>),
}

impl Value {
    /// Converts a JSON constant from a graph file. Objects (other than the
    /// `{"value": ...}` wrapper, removed by the parser) are not values.
    pub fn from_json(v: &serde_json::Value) -> Option<Value> {
        Some(match v {
            serde_json::Value::Null => Value::None,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64()?),
            },
            serde_json::Value::String(s) => Value::Str(s.as_str().into()),
            serde_json::Value::Array(items) => Value::List(
                items
                    .iter()
                    .map(Value::from_json)
                    .collect::<Option<Vec<_>>>()?
                    .into(),
            ),
            serde_json::Value::Object(_) => return None,
        })
    }

    /// Whether this runtime value can travel on a port of type `ty`.
    pub fn fits(&self, ty: &PortType) -> bool {
        match (ty, self) {
            (PortType::Any, _) => true,
            (PortType::Int, Value::Int(_)) => true,
            (PortType::Float, Value::Float(_) | Value::Int(_)) => true,
            (PortType::Bool, Value::Bool(_)) => true,
            (PortType::String, Value::Str(_)) => true,
            (t, Value::Tensor(_)) => t.is_tensor(),
            (PortType::Object(name), Value::Object(o)) => o.type_name() == name,
            (PortType::List(t), Value::List(items)) => items.iter().all(|v| v.fits(t)),
            _ => false,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::None => "nothing",
            Value::Int(_) => "INT",
            Value::Float(_) => "FLOAT",
            Value::Bool(_) => "BOOL",
            Value::Str(_) => "STRING",
            Value::Tensor(_) => "TENSOR",
            Value::Object(_) => "object",
            Value::List(_) => "LIST",
        }
    }

    pub fn as_tensor(&self) -> Option<&tch::Tensor> {
        match self {
            Value::Tensor(t) => Some(t.tensor()),
            _ => None,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Tensor(t) => write!(f, "Tensor{:?}", t.tensor().size()),
            Value::Object(o) => write!(f, "<{}>", o.type_name()),
            Value::List(items) => f.debug_list().entries(items.iter()).finish(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            other => write!(f, "{other:?}"),
        }
    }
}
