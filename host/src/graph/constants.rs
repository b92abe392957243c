//! Checking constant inputs against their port types, ranges and choices.
use super::errors::{ErrorKind, GraphError};
use super::model::json_kind;
use diffgraph_sdk::{InputSpec, PortType};
use serde_json::Value as Json;

/// The port type a JSON constant has on its own (for loop variables and
/// error messages). Lists take their first element's type.
pub fn const_type(v: &Json) -> PortType {
    match v {
        Json::Bool(_) => PortType::Bool,
        Json::Number(n) if n.is_i64() || n.is_u64() => PortType::Int,
        Json::Number(_) => PortType::Float,
        Json::String(_) => PortType::String,
        Json::Array(items) => {
            PortType::list(items.first().map(const_type).unwrap_or(PortType::Any))
        }
        Json::Null | Json::Object(_) => PortType::Any,
    }
}

/// Whether `v` can be a constant of type `ty` (without range checks).
fn fits(ty: &PortType, v: &Json) -> bool {
    match ty {
        PortType::Any => !v.is_object(),
        PortType::Int => v.is_i64() || v.is_u64(),
        PortType::Float => v.is_number(),
        PortType::Bool => v.is_boolean(),
        PortType::String => v.is_string(),
        PortType::List(inner) => v
            .as_array()
            .is_some_and(|items| items.iter().all(|i| fits(inner, i))),
        _ => false,
    }
}

/// An integer in `v` (or in a list of ints) beyond i64 where `ty` wants ints:
/// JSON allows it and serde_json reads it as a u64, so `fits` alone would let
/// 2^64 - 1 through to fail inside the node as "a float".
fn beyond_i64(ty: &PortType, v: &Json) -> Option<String> {
    match (ty, v) {
        (PortType::Int, Json::Number(n)) if n.is_u64() && !n.is_i64() => Some(n.to_string()),
        (PortType::List(inner), Json::Array(items)) => {
            items.iter().find_map(|i| beyond_i64(inner, i))
        }
        _ => None,
    }
}

/// Checks one constant input; pushes every problem found.
pub fn check_constant(node: &str, spec: &InputSpec, v: &Json, errors: &mut Vec<GraphError>) {
    let err = |kind, msg: String| GraphError::new(kind, msg).node(node).input(&spec.name);
    if spec.ty.is_tensor() || matches!(spec.ty, PortType::Object(_)) {
        errors.push(
            err(
                ErrorKind::TypeMismatch,
                format!(
                    "a {} input cannot be a constant; link it to a node's output",
                    spec.ty
                ),
            )
            .expected(format!("a link [\"node\", \"output\"] of type {}", spec.ty))
            .received(format!("{} constant", json_kind(v))),
        );
        return;
    }
    if let Some(big) = beyond_i64(&spec.ty, v) {
        let declared = spec
            .max
            .map(|m| format!(" (declared maximum {m})"))
            .unwrap_or_default();
        errors.push(
            err(
                ErrorKind::ValueBiggerThanMax,
                format!("integer out of range: ints are 64-bit signed{declared}"),
            )
            .expected(format!(
                "an int in {}..={}",
                spec.min
                    .map(|m| m.to_string())
                    .unwrap_or(i64::MIN.to_string()),
                spec.max
                    .map(|m| m.to_string())
                    .unwrap_or(i64::MAX.to_string())
            ))
            .received(big),
        );
        return;
    }
    if !fits(&spec.ty, v) {
        errors.push(
            err(ErrorKind::TypeMismatch, "constant of the wrong type".into())
                .expected(spec.ty.to_string())
                .received(format!("{} ({})", json_kind(v), short(v))),
        );
        return;
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = spec.min.filter(|&m| x < m) {
            errors.push(
                err(
                    ErrorKind::ValueSmallerThanMin,
                    "value below the minimum".into(),
                )
                .expected(format!(">= {min}"))
                .received(short(v)),
            );
        }
        if let Some(max) = spec.max.filter(|&m| x > m) {
            errors.push(
                err(
                    ErrorKind::ValueBiggerThanMax,
                    "value above the maximum".into(),
                )
                .expected(format!("<= {max}"))
                .received(short(v)),
            );
        }
    }
    if let (Some(choices), Some(s)) = (&spec.choices, v.as_str()) {
        if !choices.iter().any(|c| c == s) {
            errors.push(
                err(
                    ErrorKind::ValueNotInList,
                    "value is not one of the choices".into(),
                )
                .expected(format!("one of {}", choices.join(", ")))
                .received(format!("{s:?}")),
            );
        }
    }
}

/// A short rendering of a JSON value for messages.
pub fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(57).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}
