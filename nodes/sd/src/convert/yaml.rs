//! Typed look-ups in a parsed YAML mapping (CompVis' model configs), with
//! messages that name the path of the field (`unet_config.params.num_heads`).
use serde_json::{Map, Value};

/// `m[k]`, absent when missing or null.
pub fn get<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.get(k).filter(|v| !v.is_null())
}

pub fn int(m: &Map<String, Value>, k: &str, default: Option<i64>, at: &str) -> Result<i64, String> {
    match get(m, k) {
        Some(v) => v
            .as_i64()
            .ok_or_else(|| format!("{at}.{k}: expected an integer, found {v}")),
        None => default.ok_or_else(|| format!("{at}.{k} is missing")),
    }
}

pub fn float(m: &Map<String, Value>, k: &str, default: f64, at: &str) -> Result<f64, String> {
    match get(m, k) {
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("{at}.{k}: expected a number, found {v}")),
        None => Ok(default),
    }
}

pub fn boolean(m: &Map<String, Value>, k: &str, default: bool, at: &str) -> Result<bool, String> {
    match get(m, k) {
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("{at}.{k}: expected true or false, found {v}")),
        None => Ok(default),
    }
}

pub fn ints(
    m: &Map<String, Value>,
    k: &str,
    default: &[i64],
    at: &str,
) -> Result<Vec<i64>, String> {
    match get(m, k) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| format!("{at}.{k}: {v} is not an integer"))
            })
            .collect(),
        Some(v) => Err(format!("{at}.{k}: expected a list of integers, found {v}")),
        None => Ok(default.to_vec()),
    }
}

pub fn object<'a>(
    m: &'a Map<String, Value>,
    k: &str,
    at: &str,
) -> Result<&'a Map<String, Value>, String> {
    get(m, k)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{at}.{k} is missing or not a mapping"))
}

/// The `target` and `params` of a `{target, params}` section.
pub fn target<'a>(
    m: &'a Map<String, Value>,
    at: &str,
) -> Result<(&'a str, Map<String, Value>), String> {
    let t = get(m, "target")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.target is missing"))?;
    let p = get(m, "params")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Ok((t, p))
}
