//! `--set NODE.INPUT=VALUE`: changes a node's input in the graph's JSON before
//! validation. VALUE is read as JSON when it parses (`7`, `true`, `[1,2]`,
//! `["other", "out"]` for a link) and as a plain string otherwise.
use serde_json::{Map, Value as Json};

/// One parsed `--set` argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub node: String,
    pub input: String,
    pub value: Json,
}

impl std::str::FromStr for Override {
    type Err = String;
    fn from_str(arg: &str) -> Result<Override, String> {
        let (target, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("`{arg}`: expected NODE.INPUT=VALUE"))?;
        let (node, input) = target
            .split_once('.')
            .ok_or_else(|| format!("`{target}`: expected NODE.INPUT"))?;
        if node.is_empty() || input.is_empty() {
            return Err(format!("`{target}`: expected NODE.INPUT"));
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_string()));
        Ok(Override {
            node: node.into(),
            input: input.into(),
            value,
        })
    }
}

/// Applies overrides to a graph document, looking for node ids in loop bodies too.
pub fn apply(doc: &mut Json, overrides: &[Override]) -> Result<(), String> {
    for o in overrides {
        let nodes = doc
            .get_mut("nodes")
            .and_then(Json::as_object_mut)
            .ok_or("the graph has no `nodes` object")?;
        let node = find(nodes, &o.node).ok_or_else(|| {
            format!(
                "--set {}.{}: no node `{}` in the graph",
                o.node, o.input, o.node
            )
        })?;
        let obj = node
            .as_object_mut()
            .ok_or_else(|| format!("node `{}` is not an object", o.node))?;
        let inputs = obj
            .entry("inputs")
            .or_insert_with(|| Json::Object(Map::new()));
        let inputs = inputs
            .as_object_mut()
            .ok_or_else(|| format!("node `{}`: `inputs` is not an object", o.node))?;
        inputs.insert(o.input.clone(), o.value.clone());
    }
    Ok(())
}

fn find<'a>(nodes: &'a mut Map<String, Json>, id: &str) -> Option<&'a mut Json> {
    if nodes.contains_key(id) {
        return nodes.get_mut(id);
    }
    nodes.values_mut().find_map(|n| {
        n.get_mut("body")
            .and_then(Json::as_object_mut)
            .and_then(|b| find(b, id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_applies_into_loop_bodies() {
        let o: Override = "step.eta=0.5".parse().unwrap();
        assert_eq!(o.value, serde_json::json!(0.5));
        let s: Override = "save.prefix=cat pic".parse().unwrap();
        assert_eq!(s.value, serde_json::json!("cat pic"));
        let mut doc =
            serde_json::json!({"nodes": {"l": {"type": "Loop", "body": {"step": {"type": "X"}}}}});
        apply(&mut doc, &[o]).unwrap();
        assert_eq!(
            doc["nodes"]["l"]["body"]["step"]["inputs"]["eta"],
            serde_json::json!(0.5)
        );
        assert!(apply(&mut doc, &["nope.x=1".parse().unwrap()]).is_err());
        assert!("noequals".parse::<Override>().is_err());
    }
}
