//! The node listing (`diffgraph nodes`): every node type with its inputs
//! and outputs, as JSON (schemas plus the providing plugin) or as text.
use crate::graph::model::LOOP_TYPE;
use crate::plugin::Registry;
use diffgraph_sdk::InputSpec;
use serde_json::{Map, Value as Json};
use std::fmt::Write;

/// `{type name: schema + "plugin"}`.
pub fn nodes_json(registry: &Registry) -> Json {
    let map: Map<String, Json> = registry
        .types()
        .map(|t| {
            let mut v = serde_json::to_value(&t.schema).expect("schemas serialise");
            v["plugin"] = t.library.name.clone().into();
            (t.schema.type_name.clone(), v)
        })
        .collect();
    Json::Object(map)
}

/// The listing for people: the built-in loop, then each type with its
/// category, plugin, description, inputs (defaults, ranges, choices) and outputs.
pub fn nodes_text(registry: &Registry) -> String {
    let mut out = format!("{LOOP_TYPE}  [built-in]  iterate a body sub-graph over `over` (a list or a count), carrying values via `next`\n");
    for t in registry.types() {
        let s = &t.schema;
        let output = if s.output_node { "  (output)" } else { "" };
        let _ = writeln!(
            out,
            "\n{}  [{} · plugin {}]{output}",
            s.type_name, s.category, t.library.name
        );
        if !s.description.is_empty() {
            let _ = writeln!(out, "  {}", s.description);
        }
        for i in &s.inputs {
            let _ = writeln!(out, "  in  {}: {}{}", i.name, i.ty, input_notes(i));
        }
        for o in &s.outputs {
            let _ = writeln!(out, "  out {}: {}", o.name, o.ty);
        }
    }
    out
}

/// ` (default 1, min 0, one of a|b)`, or nothing.
fn input_notes(i: &InputSpec) -> String {
    let mut extra = Vec::new();
    if let Some(d) = &i.default {
        extra.push(format!("default {d}"));
    } else if !i.required {
        extra.push("optional".into());
    }
    if let Some(m) = i.min {
        extra.push(format!("min {m}"));
    }
    if let Some(m) = i.max {
        extra.push(format!("max {m}"));
    }
    if let Some(c) = &i.choices {
        extra.push(format!("one of {}", c.join("|")));
    }
    if extra.is_empty() {
        String::new()
    } else {
        format!(" ({})", extra.join(", "))
    }
}
