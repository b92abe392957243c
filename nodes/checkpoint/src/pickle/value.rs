//! The values the restricted unpickler builds, the allow-list of globals,
//! and what the allowed globals and torch's persistent ids turn into.
use tch::Kind;

/// The globals a state dict may name: the allow-list.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Global {
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `collections.OrderedDict` (the state dict itself, empty backward hooks).
    OrderedDict,
    /// `torch.FloatStorage` etc.: the element type of a storage.
    Storage(Kind),
}

const STORAGES: [(&str, Kind); 10] = [
    ("FloatStorage", Kind::Float),
    ("HalfStorage", Kind::Half),
    ("BFloat16Storage", Kind::BFloat16),
    ("DoubleStorage", Kind::Double),
    ("LongStorage", Kind::Int64),
    ("IntStorage", Kind::Int),
    ("ShortStorage", Kind::Int16),
    ("CharStorage", Kind::Int8),
    ("ByteStorage", Kind::Uint8),
    ("BoolStorage", Kind::Bool),
];

impl Global {
    /// The allowed global `module.name`, or a refusal naming it.
    pub fn resolve(module: &str, name: &str) -> Result<Global, String> {
        match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
            ("collections", "OrderedDict") => Ok(Global::OrderedDict),
            ("torch", n) => STORAGES
                .iter()
                .find(|(s, _)| *s == n)
                .map(|&(_, k)| Global::Storage(k))
                .ok_or_else(|| refusal(module, name)),
            _ => Err(refusal(module, name)),
        }
    }
}

/// The message refusing `module.name` (also for a stand-in found where a
/// state dict's tensors should be).
pub fn refusal(module: &str, name: &str) -> String {
    format!(
        "refused the global `{module}.{name}`: a state dict needs only torch._utils._rebuild_tensor_v2, \
         torch.<Type>Storage and collections.OrderedDict; anything else would run code in torch.load, \
         so this file is not read"
    )
}

/// A storage named by a persistent id: element type, archive key, length.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub kind: Kind,
    pub key: String,
    pub numel: i64,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

/// A value built by the unpickler.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// dict and OrderedDict, in insertion order.
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
    /// A stand-in for a global outside the allow-list (`module.name`), and
    /// for anything made from one (called, instantiated, its state set):
    /// never resolved, never called. Only [`super::unpickle_skipping`] makes
    /// them; a state dict holding one is refused with this name.
    Foreign(String),
}

impl Value {
    pub(super) fn kind_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Foreign(_) => "stand-in",
        }
    }

    fn as_int(&self, what: &str) -> Result<i64, String> {
        match self {
            Value::Int(i) => Ok(*i),
            v => Err(format!("{what}: expected an int, found {}", v.kind_name())),
        }
    }

    fn as_ints(&self, what: &str) -> Result<Vec<i64>, String> {
        match self {
            Value::Tuple(v) | Value::List(v) => v.iter().map(|x| x.as_int(what)).collect(),
            v => Err(format!(
                "{what}: expected a tuple of ints, found {}",
                v.kind_name()
            )),
        }
    }
}

/// torch.save's persistent id: `('storage', storage_type, key, location, numel)`.
pub(super) fn persistent_load(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!(
            "persistent id is a {}, not a tuple",
            pid.kind_name()
        ));
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(Global::Storage(kind)), Value::Str(key), Value::Str(_location), numel]
            if tag == "storage" =>
        {
            Ok(Value::Storage(StorageRef {
                kind: *kind,
                key: key.clone(),
                numel: numel.as_int("storage size")?,
            }))
        }
        _ => Err("persistent id is not ('storage', <Type>Storage, key, location, numel)".into()),
    }
}

/// Applies an allowed global symbolically.
pub(super) fn reduce(f: Value, args: Value) -> Result<Value, String> {
    let Value::Tuple(args) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match f {
        Value::Global(Global::OrderedDict) => match args.as_slice() {
            [] => Ok(Value::Dict(Vec::new())),
            [Value::List(items)] => items
                .iter()
                .map(|p| match p {
                    Value::Tuple(kv) if kv.len() == 2 => Ok((kv[0].clone(), kv[1].clone())),
                    _ => Err("OrderedDict items are not pairs".to_string()),
                })
                .collect::<Result<_, _>>()
                .map(Value::Dict),
            _ => Err("OrderedDict called with unexpected arguments".into()),
        },
        Value::Global(Global::RebuildTensorV2) => {
            // (storage, storage_offset, size, stride, requires_grad,
            // backward_hooks[, metadata]): torch/_utils.py
            if !(6..=7).contains(&args.len()) {
                return Err(format!(
                    "_rebuild_tensor_v2 with {} arguments (expected 6 or 7)",
                    args.len()
                ));
            }
            let Value::Storage(storage) = &args[0] else {
                return Err("_rebuild_tensor_v2's first argument is not a storage".into());
            };
            let size = args[2].as_ints("tensor size")?;
            let stride = args[3].as_ints("tensor stride")?;
            if size.len() != stride.len() {
                return Err("tensor size and stride differ in length".into());
            }
            Ok(Value::Tensor(TensorRef {
                storage: storage.clone(),
                offset: args[1].as_int("storage offset")?,
                size,
                stride,
            }))
        }
        Value::Global(Global::Storage(_)) => Err("a storage type called as a function".into()),
        v => Err(format!(
            "REDUCE of a {}, not an allowed global",
            v.kind_name()
        )),
    }
}
