//! The fast path of [`super::model::parse`]: well-formed graph text read
//! straight into a [`Graph`] with serde's streaming deserializer, without
//! building serde_json's `Value` tree for the document (only for each
//! input's constant) and without the separate duplicate-key scan. Anything
//! unusual (an unknown field, a wrong type, a duplicate key anywhere, an
//! empty type, a bad id) makes it give up, and the full parser
//! (`parse_document` + `from_json`) runs and reports every error with its
//! lines; so the errors are exactly the full parser's, and the graph built
//! here equals the one it builds (same node order: ids sorted per scope as
//! serde_json's map orders them; tested in tests/validation.rs).
use super::model::{input_of, Graph, Input, Node, LOOP_TYPE};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};
use std::fmt;

/// The graph, or None: not well-formed, use the full parser.
pub fn parse(text: &str) -> Option<Graph> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut de = serde_json::Deserializer::from_str(text);
    let (description, scope) = RootSeed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    let mut graph = Graph {
        description,
        ..Graph::default()
    };
    flatten(scope, None, &mut graph)?;
    Some(graph)
}

fn give_up<E: de::Error>() -> E {
    E::custom("not for the fast path")
}

/// A node as read, before ids become indices.
struct RawNode {
    type_name: String,
    inputs: Vec<(String, Input)>,
    body: Option<Vec<(String, RawNode)>>,
    next: Option<Vec<(String, Input)>>,
}

/// Appends a scope's nodes in `from_json`'s order (sorted ids, each loop's
/// body right after the loop); None on an id used twice.
fn flatten(
    nodes: Vec<(String, RawNode)>,
    scope: Option<usize>,
    g: &mut Graph,
) -> Option<Vec<usize>> {
    let mut members = Vec::with_capacity(nodes.len());
    for (id, raw) in nodes {
        let index = g.nodes.len();
        if g.by_id.insert(id.clone(), index).is_some() {
            return None;
        }
        let is_loop = raw.type_name == LOOP_TYPE;
        if !is_loop && raw.next.is_some() {
            return None;
        }
        g.nodes.push(Node {
            id,
            type_name: raw.type_name,
            inputs: raw.inputs,
            scope,
            body: Vec::new(),
            next: if is_loop {
                raw.next.unwrap_or_default()
            } else {
                Vec::new()
            },
        });
        match (is_loop, raw.body) {
            (true, Some(body)) => g.nodes[index].body = flatten(body, Some(index), g)?,
            (false, None) => {}
            _ => return None, // a Loop without a body, a body elsewhere
        }
        members.push(index);
    }
    Some(members)
}

/// Sorts entries by key as serde_json's map would; None on a repeated key.
fn sorted<T>(mut entries: Vec<(String, T)>) -> Option<Vec<(String, T)>> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let repeated = entries.windows(2).any(|w| w[0].0 == w[1].0);
    (!repeated).then_some(entries)
}

struct RootSeed;
impl<'de> DeserializeSeed<'de> for RootSeed {
    type Value = (Option<String>, Vec<(String, RawNode)>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}
impl<'de> Visitor<'de> for RootSeed {
    type Value = (Option<String>, Vec<(String, RawNode)>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a graph object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut description, mut nodes, mut seen) = (None, None, Vec::new());
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(give_up());
            }
            match key.as_str() {
                "nodes" => nodes = Some(map.next_value_seed(ScopeSeed)?),
                "description" => {
                    description = match map.next_value_seed(Strict)? {
                        Json::String(s) => Some(s),
                        _ => None,
                    }
                }
                "version" => drop(map.next_value_seed(Strict)?),
                _ => return Err(give_up()),
            }
            seen.push(key);
        }
        Ok((description, nodes.ok_or_else(give_up)?))
    }
}

/// An object of id: node.
struct ScopeSeed;
impl<'de> DeserializeSeed<'de> for ScopeSeed {
    type Value = Vec<(String, RawNode)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}
impl<'de> Visitor<'de> for ScopeSeed {
    type Value = Vec<(String, RawNode)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of nodes")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut nodes = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(id) = map.next_key::<String>()? {
            if id.is_empty() || id.contains('.') || id.chars().any(char::is_whitespace) {
                return Err(give_up());
            }
            nodes.push((id, map.next_value_seed(NodeSeed)?));
        }
        sorted(nodes).ok_or_else(give_up)
    }
}

struct NodeSeed;
impl<'de> DeserializeSeed<'de> for NodeSeed {
    type Value = RawNode;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawNode, D::Error> {
        d.deserialize_map(self)
    }
}
impl<'de> Visitor<'de> for NodeSeed {
    type Value = RawNode;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a node object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawNode, A::Error> {
        let (mut ty, mut class_type, mut inputs, mut body, mut next) =
            (None, None, None, None, None);
        let mut seen: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(give_up());
            }
            match key.as_str() {
                "type" => ty = Some(map.next_value::<String>()?),
                "class_type" => class_type = Some(map.next_value::<String>()?),
                "inputs" => inputs = Some(map.next_value_seed(InputsSeed)?),
                "body" => body = Some(map.next_value_seed(ScopeSeed)?),
                "next" => next = Some(map.next_value_seed(InputsSeed)?),
                "title" | "comment" => drop(map.next_value_seed(Strict)?),
                _ => return Err(give_up()),
            }
            seen.push(key);
        }
        let type_name = ty.or(class_type).ok_or_else(give_up)?;
        if type_name.trim().is_empty() {
            return Err(give_up());
        }
        Ok(RawNode {
            type_name,
            inputs: inputs.unwrap_or_default(),
            body,
            next,
        })
    }
}

/// `inputs` / `next`: null or an object of name: value.
struct InputsSeed;
impl<'de> DeserializeSeed<'de> for InputsSeed {
    type Value = Vec<(String, Input)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}
impl<'de> Visitor<'de> for InputsSeed {
    type Value = Vec<(String, Input)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of inputs")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut inputs = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(Strict)?;
            inputs.push((name, input_of(value)));
        }
        sorted(inputs).ok_or_else(give_up)
    }
}

/// Any JSON value, as serde_json's `Value` would read it, except that a key
/// repeated in an object gives up (the full parser reports it with lines).
struct Strict;
impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Json;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}
impl<'de> Visitor<'de> for Strict {
    type Value = Json;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Strict)?;
            if out.insert(key, value).is_some() {
                return Err(give_up());
            }
        }
        Ok(Json::Object(out))
    }
}
