//! `torch.save` zip archives: `<name>/data.pkl` (the pickle, read by
//! [`crate::pickle`]) and `<name>/data/<key>` (one raw little-endian storage
//! per key). Layout: torch/serialization.py `_save` / `_load`.
//!
//! The pickle is read with stand-ins for unknown globals
//! ([`crate::pickle::unpickle_skipping`]), then the state dict is picked: the
//! top-level dict, or its `state_dict` entry (a PyTorch Lightning
//! checkpoint, whose other entries (`callbacks`, `optimizer_states`,
//! `lr_schedulers`, `hyper_parameters`, ...) are never built and their
//! tensors never loaded). Every value of the state dict must be a tensor; a
//! stand-in there refuses the file naming its global, as a strict read would.
use crate::pickle::{refusal, unpickle_skipping, StorageRef, TensorRef, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

/// Every tensor of the state dict in a torch.save archive. The pickle must
/// be a dict of name → tensor, or hold one under `state_dict` (Lightning
/// checkpoints; its other entries are skipped unbuilt).
pub fn read_pt(path: &Path) -> Result<BTreeMap<String, Tensor>, String> {
    let at = |e: String| format!("{}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| at(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| at(format!("not a zip archive: {e}")))?;
    let pkl = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .map(str::to_string)
        .ok_or_else(|| at("no data.pkl: not a torch.save archive".into()))?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        f.read_to_string(&mut s).map_err(|e| at(e.to_string()))?;
        if s.trim() != "little" {
            return Err(at(format!("byte order `{}` is not supported", s.trim())));
        }
    }
    let data = read_entry(&mut zip, &pkl).map_err(at)?;
    let value = unpickle_skipping(&data).map_err(at)?;
    let entries = state_dict_entries(value).map_err(at)?;
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = BTreeMap::new();
    for (name, t) in entries {
        if !storages.contains_key(&t.storage.key) {
            let s = load_storage(&mut zip, &prefix, &t.storage).map_err(at)?;
            storages.insert(t.storage.key.clone(), s);
        }
        let tensor = view(&storages[&t.storage.key], &t).map_err(|e| at(format!("{name}: {e}")))?;
        out.insert(name, tensor);
    }
    Ok(out)
}

fn read_entry(zip: &mut zip::ZipArchive<std::fs::File>, name: &str) -> Result<Vec<u8>, String> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| format!("archive entry {name}: {e}"))?;
    let mut v = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut v)
        .map_err(|e| format!("archive entry {name}: {e}"))?;
    Ok(v)
}

/// The (name, tensor) pairs of the top-level dict or of its `state_dict`.
fn state_dict_entries(value: Value) -> Result<Vec<(String, TensorRef)>, String> {
    let items = match value {
        Value::Dict(items) => items,
        Value::Foreign(name) => return Err(refuse(&name)),
        _ => return Err("the pickle is not a dict of tensors (a state dict)".into()),
    };
    let nested = items.iter().find_map(|(k, v)| match k {
        Value::Str(k) if k == "state_dict" => Some(v.clone()),
        _ => None,
    });
    let items = match nested {
        Some(Value::Dict(d)) => d,
        Some(Value::Foreign(name)) => return Err(refuse(&name)),
        Some(v) => return Err(format!("`state_dict` is a {v:?}, not a dict of tensors")),
        None => items,
    };
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Value::Str(name) = k else {
            return Err(format!("a state dict key is {k:?}, not a string"));
        };
        match v {
            Value::Tensor(t) => out.push((name, t)),
            Value::Foreign(global) => {
                return Err(format!("state dict entry `{name}`: {}", refuse(&global)))
            }
            other => {
                return Err(format!(
                    "state dict entry `{name}` is not a tensor ({other:?})"
                ))
            }
        }
    }
    Ok(out)
}

/// [`refusal`] of a stand-in's `module.name`.
fn refuse(global: &str) -> String {
    let (module, name) = global.rsplit_once('.').unwrap_or(("", global));
    refusal(module, name)
}

fn element_size(kind: Kind) -> usize {
    match kind {
        Kind::Double | Kind::Int64 => 8,
        Kind::Float | Kind::Int => 4,
        Kind::Half | Kind::BFloat16 | Kind::Int16 => 2,
        _ => 1,
    }
}

fn load_storage(
    zip: &mut zip::ZipArchive<std::fs::File>,
    prefix: &str,
    s: &StorageRef,
) -> Result<Tensor, String> {
    let bytes = read_entry(zip, &format!("{prefix}data/{}", s.key))?;
    let numel = usize::try_from(s.numel).map_err(|_| "negative storage size".to_string())?;
    let need = numel
        .checked_mul(element_size(s.kind))
        .ok_or("storage size overflows")?;
    if bytes.len() < need {
        return Err(format!(
            "storage {} holds {} bytes, {need} needed for {numel} elements of {:?}",
            s.key,
            bytes.len(),
            s.kind
        ));
    }
    Tensor::f_from_data_size(&bytes[..need], &[s.numel], s.kind)
        .map_err(|e| format!("storage {}: {e}", s.key))
}

/// The strided view `_rebuild_tensor_v2` describes, bounds-checked, copied
/// to its own contiguous memory.
fn view(storage: &Tensor, t: &TensorRef) -> Result<Tensor, String> {
    if t.size.iter().any(|&d| d < 0) || t.stride.iter().any(|&d| d < 0) || t.offset < 0 {
        return Err("negative size, stride or offset".into());
    }
    let numel: i64 = t.size.iter().product();
    if numel > 0 {
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (&n, &s)| {
                (n - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            })
            .ok_or("view extent overflows")?;
        if last >= t.storage.numel {
            return Err(format!(
                "view reaches element {last} of a storage of {}",
                t.storage.numel
            ));
        }
    }
    storage
        .f_as_strided(&t.size, &t.stride, Some(t.offset))
        .map(|v| v.contiguous())
        .map_err(|e| e.to_string())
}
