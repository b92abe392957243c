//! The safe interface a node author implements: [`Node`], with its call-time
//! [`Context`] and named [`Inputs`].
use crate::schema::NodeSchema;
use crate::value::{InputValue, Value};
use std::any::Any;
use std::fmt;
use std::path::Path;
use tch::{Device, Tensor};

/// A node type. One instance serves every node of this type in every graph,
/// so `run` takes `&self` and must not keep per-call state (return it instead).
pub trait Node: Send + Sync + 'static {
    /// The node's metadata; called once when the plugin is loaded.
    fn schema(&self) -> NodeSchema;

    /// Computes the outputs, in the order the schema declares them.
    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError>;
}

/// A node's error message, shown to the user with the node's id.
#[derive(Debug, Clone)]
pub struct NodeError(pub String);

impl NodeError {
    pub fn new(message: impl Into<String>) -> NodeError {
        NodeError(message.into())
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<tch::TchError> for NodeError {
    fn from(e: tch::TchError) -> Self {
        NodeError(format!("libtorch: {e}"))
    }
}

impl From<std::io::Error> for NodeError {
    fn from(e: std::io::Error) -> Self {
        NodeError(format!("i/o: {e}"))
    }
}

impl From<String> for NodeError {
    fn from(e: String) -> Self {
        NodeError(e)
    }
}

impl From<&str> for NodeError {
    fn from(e: &str) -> Self {
        NodeError(e.to_string())
    }
}

/// What the host tells a node about the call.
pub struct Context<'a> {
    pub(crate) device: Device,
    pub(crate) output_dir: &'a Path,
    pub(crate) progress: &'a dyn Fn(u64, u64),
    pub(crate) interrupted: &'a dyn Fn() -> bool,
}

impl Context<'_> {
    /// The device the run was asked to use (`--device`).
    pub fn device(&self) -> Device {
        self.device
    }
    /// Where output nodes write files (`--out`).
    pub fn output_dir(&self) -> &Path {
        self.output_dir
    }
    /// Reports progress inside a long-running node.
    pub fn progress(&self, done: u64, total: u64) {
        (self.progress)(done, total)
    }
    /// True once the user asked the run to stop.
    pub fn interrupted(&self) -> bool {
        (self.interrupted)()
    }
}

/// A node's inputs by name, in the schema's order. Optional inputs without a
/// default are [`InputValue::None`] when not given; defaults are filled in by
/// the host.
pub struct Inputs<'a> {
    pub(crate) names: &'a [String],
    pub(crate) values: Vec<InputValue<'a>>,
}

fn wrong(name: &str, expected: &str, got: &InputValue) -> NodeError {
    NodeError(format!(
        "input `{name}`: expected {expected}, got {}",
        got.kind_name()
    ))
}

impl<'a> Inputs<'a> {
    /// The input called `name`. Asking for a name the schema does not declare
    /// is a bug in the node and reported as its error.
    pub fn get(&self, name: &str) -> Result<&InputValue<'a>, NodeError> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.values[i])
            .ok_or_else(|| {
                NodeError(format!(
                    "the node asked for input `{name}`, which its schema does not declare"
                ))
            })
    }

    /// True when the input was given (or has a default).
    pub fn has(&self, name: &str) -> bool {
        matches!(self.get(name), Ok(v) if !matches!(v, InputValue::None))
    }

    pub fn int(&self, name: &str) -> Result<i64, NodeError> {
        let v = self.get(name)?;
        v.as_int().ok_or_else(|| wrong(name, "an int", v))
    }

    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        let v = self.get(name)?;
        v.as_float().ok_or_else(|| wrong(name, "a float", v))
    }

    pub fn bool(&self, name: &str) -> Result<bool, NodeError> {
        match self.get(name)? {
            InputValue::Bool(b) => Ok(*b),
            v => Err(wrong(name, "a bool", v)),
        }
    }

    pub fn str(&self, name: &str) -> Result<&'a str, NodeError> {
        match self.get(name)? {
            InputValue::Str(s) => Ok(s),
            v => Err(wrong(name, "a string", v)),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<&'a Tensor, NodeError> {
        match self.get(name)? {
            InputValue::Tensor(t) => Ok(t),
            v => Err(wrong(name, "a tensor", v)),
        }
    }

    pub fn opt_tensor(&self, name: &str) -> Result<Option<&'a Tensor>, NodeError> {
        match self.get(name)? {
            InputValue::None => Ok(None),
            InputValue::Tensor(t) => Ok(Some(t)),
            v => Err(wrong(name, "a tensor", v)),
        }
    }

    /// An optional int: `None` when the input was not given.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, NodeError> {
        match self.get(name)? {
            InputValue::None => Ok(None),
            v => v.as_int().map(Some).ok_or_else(|| wrong(name, "an int", v)),
        }
    }

    /// An optional float (an int is accepted): `None` when not given.
    pub fn opt_float(&self, name: &str) -> Result<Option<f64>, NodeError> {
        match self.get(name)? {
            InputValue::None => Ok(None),
            v => v
                .as_float()
                .map(Some)
                .ok_or_else(|| wrong(name, "a float", v)),
        }
    }

    /// An optional string: `None` when not given.
    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, NodeError> {
        match self.get(name)? {
            InputValue::None => Ok(None),
            InputValue::Str(s) => Ok(Some(s)),
            v => Err(wrong(name, "a string", v)),
        }
    }

    pub fn list(&self, name: &str) -> Result<&[InputValue<'a>], NodeError> {
        match self.get(name)? {
            InputValue::List(items) => Ok(items),
            v => Err(wrong(name, "a list", v)),
        }
    }

    /// A list of ints (e.g. a tensor shape).
    pub fn int_list(&self, name: &str) -> Result<Vec<i64>, NodeError> {
        self.list(name)?
            .iter()
            .map(|v| v.as_int().ok_or_else(|| wrong(name, "a list of ints", v)))
            .collect()
    }

    /// The object made by this plugin library for input `name`, as a `T`.
    pub fn object<T: Any>(&self, name: &str) -> Result<&'a T, NodeError> {
        match self.get(name)? {
            InputValue::Object(o) => {
                let inner = o.inner.ok_or_else(|| {
                    NodeError(format!(
                        "input `{name}`: this {} was made by another plugin library or an older \
                         generation of this one, and can only be used by the library that made it",
                        o.type_name
                    ))
                })?;
                inner.downcast_ref::<T>().ok_or_else(|| {
                    NodeError(format!(
                        "input `{name}`: object {} is not a {}",
                        o.type_name,
                        std::any::type_name::<T>()
                    ))
                })
            }
            v => Err(wrong(name, "an object", v)),
        }
    }
}
