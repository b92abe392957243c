//! Small helpers shared by the key converters: indexed-name parsing, shape
//! look-ups with messages naming the original key, JSON comparison.
use serde_json::Value;
use std::collections::BTreeMap;
use tch::Tensor;

/// `"{prefix}{n}.{rest}"` -> `(n, rest)`.
pub fn indexed<'a>(key: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let tail = key.strip_prefix(prefix)?;
    let (n, rest) = tail.split_once('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((n.parse().ok()?, rest))
}

/// The distinct indices n of keys `"{prefix}{n}.…"`, sorted.
pub fn indices<'a>(keys: impl Iterator<Item = &'a String>, prefix: &str) -> Vec<usize> {
    let mut v: Vec<usize> = keys
        .filter_map(|k| indexed(k, prefix).map(|(n, _)| n))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// True when `v` is exactly 0, 1, ..., len-1.
pub fn is_contiguous(v: &[usize]) -> bool {
    v.iter().enumerate().all(|(i, &n)| i == n)
}

/// Shapes of converted tensors, for inferring a config; a missing tensor
/// is reported by its name in the original checkpoint.
pub struct Shapes<'a> {
    pub tensors: &'a BTreeMap<String, Tensor>,
    /// Turns a converted (diffusers) name back into the original one.
    pub original: &'a dyn Fn(&str) -> String,
}

impl Shapes<'_> {
    pub fn get(&self, name: &str, rank: usize, what: &str) -> Result<Vec<i64>, String> {
        match self.tensors.get(name) {
            Some(t) if t.dim() == rank => Ok(t.size()),
            Some(t) => Err(format!(
                "{} has shape {:?}, expected rank {rank} (needed for {what})",
                (self.original)(name),
                t.size()
            )),
            None => Err(format!(
                "missing {} (needed for {what})",
                (self.original)(name)
            )),
        }
    }
}

/// JSON equality for config values: numbers by value (1 == 1.0), and a
/// scalar equals a list holding only that scalar (diffusers expands
/// `transformer_layers_per_block: 1` to one entry per block).
pub fn equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equivalent(p, q))
        }
        (Value::Array(x), s) | (s, Value::Array(x)) if !s.is_array() => {
            x.iter().all(|p| equivalent(p, s))
        }
        _ => a == b,
    }
}

/// A list for messages, at most 20 items.
pub fn list(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(20).map(String::as_str).collect();
    let more = if items.len() > 20 {
        format!(" ... and {} more", items.len() - 20)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}
