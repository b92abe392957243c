//! Values as a node author sees them: owned [`Value`]s for outputs, borrowed
//! [`InputValue`]s for inputs. Conversion to and from the ABI lives in
//! `export.rs`; nothing here is unsafe.
use std::any::Any;
use std::fmt;
use tch::Tensor;

/// A value a node returns.
pub enum Value {
    None,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Tensor(Tensor),
    Object(Object),
    List(Vec<Value>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<Tensor> for Value {
    fn from(v: Tensor) -> Self {
        Value::Tensor(v)
    }
}
impl From<Object> for Value {
    fn from(v: Object) -> Self {
        Value::Object(v)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

/// A plugin-made object (a loaded model, a scheduler state) passed between
/// nodes of the same plugin library as an opaque handle. `type_name` is the
/// port type that inputs must declare to accept it.
pub struct Object {
    pub(crate) type_name: &'static str,
    pub(crate) inner: Box<dyn Any + Send + Sync>,
}

impl Object {
    pub fn new<T: Any + Send + Sync>(type_name: &'static str, value: T) -> Object {
        Object {
            type_name,
            inner: Box::new(value),
        }
    }
}

/// A borrowed object input: only the library that made it may look inside.
#[derive(Clone, Copy)]
pub struct ObjectRef<'a> {
    pub(crate) type_name: &'a str,
    /// `None` when the object was made by another library or generation.
    pub(crate) inner: Option<&'a (dyn Any + Send + Sync)>,
}

impl<'a> ObjectRef<'a> {
    pub fn type_name(&self) -> &'a str {
        self.type_name
    }
}

/// An input value, borrowed from the host for the duration of one node call.
pub enum InputValue<'a> {
    None,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'a str),
    /// A borrowed tensor handle; `shallow_clone` it to keep it.
    Tensor(&'a Tensor),
    Object(ObjectRef<'a>),
    List(Vec<InputValue<'a>>),
}

impl InputValue<'_> {
    pub fn kind_name(&self) -> &'static str {
        match self {
            InputValue::None => "nothing",
            InputValue::Int(_) => "an int",
            InputValue::Float(_) => "a float",
            InputValue::Bool(_) => "a bool",
            InputValue::Str(_) => "a string",
            InputValue::Tensor(_) => "a tensor",
            InputValue::Object(_) => "an object",
            InputValue::List(_) => "a list",
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            InputValue::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// Ints are accepted where floats are expected.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            InputValue::Float(v) => Some(*v),
            InputValue::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// Deep-copies the value into an owned [`Value`] (tensors shallowly).
    /// Objects cannot be copied and become an error.
    pub fn to_owned_value(&self) -> Result<Value, crate::NodeError> {
        Ok(match self {
            InputValue::None => Value::None,
            InputValue::Int(v) => Value::Int(*v),
            InputValue::Float(v) => Value::Float(*v),
            InputValue::Bool(v) => Value::Bool(*v),
            InputValue::Str(s) => Value::Str(s.to_string()),
            InputValue::Tensor(t) => Value::Tensor(t.shallow_clone()),
            InputValue::Object(o) => {
                return Err(crate::NodeError::new(format!(
                    "an object of type {} cannot be copied",
                    o.type_name
                )))
            }
            InputValue::List(items) => Value::List(
                items
                    .iter()
                    .map(|v| v.to_owned_value())
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

impl fmt::Debug for InputValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputValue::None => f.write_str("None"),
            InputValue::Int(v) => write!(f, "{v}"),
            InputValue::Float(v) => write!(f, "{v}"),
            InputValue::Bool(v) => write!(f, "{v}"),
            InputValue::Str(s) => write!(f, "{s:?}"),
            InputValue::Tensor(t) => write!(f, "Tensor{:?}", t.size()),
            InputValue::Object(o) => write!(f, "<{}>", o.type_name),
            InputValue::List(items) => f.debug_list().entries(items).finish(),
        }
    }
}
