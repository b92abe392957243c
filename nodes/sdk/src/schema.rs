//! Node metadata: what a node type is called, what it takes and what it gives.
//! Plugins describe their nodes with these builders; the host reads them (as
//! JSON through the ABI) to validate graphs and to answer `diffgraph nodes`.
use serde::{Deserialize, Serialize};
use std::fmt;

/// The type of a port. Tensors carry a semantic tag (latent, conditioning,
/// image) so that graphs cannot wire an image where a latent belongs; plain
/// `TENSOR` ports accept and feed every tensor kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortType {
    Int,
    Float,
    Bool,
    String,
    Tensor,
    Latent,
    Conditioning,
    Image,
    List(Box<PortType>),
    /// A plugin-made object (a loaded model, a scheduler state), by type name.
    Object(std::string::String),
    /// Accepts anything (generic nodes such as pass-through).
    Any,
}

impl PortType {
    pub fn list(of: PortType) -> PortType {
        PortType::List(Box::new(of))
    }

    pub fn object(name: &str) -> PortType {
        PortType::Object(name.to_string())
    }

    pub fn is_tensor(&self) -> bool {
        matches!(
            self,
            PortType::Tensor | PortType::Latent | PortType::Conditioning | PortType::Image
        )
    }

    /// Whether an input of type `self` accepts a value of type `given`.
    pub fn accepts(&self, given: &PortType) -> bool {
        match (self, given) {
            (PortType::Any, _) | (_, PortType::Any) => true,
            (a, b) if a == b => true,
            (PortType::Float, PortType::Int) => true,
            (PortType::Tensor, b) if b.is_tensor() => true,
            (a, PortType::Tensor) if a.is_tensor() => true,
            (PortType::List(a), PortType::List(b)) => a.accepts(b),
            _ => false,
        }
    }

    /// Parses the names printed by `Display`: `INT`, `LIST<FLOAT>`, `SD_MODEL`, `*`.
    pub fn parse(s: &str) -> Result<PortType, std::string::String> {
        let s = s.trim();
        Ok(match s {
            "INT" => PortType::Int,
            "FLOAT" => PortType::Float,
            "BOOL" | "BOOLEAN" => PortType::Bool,
            "STRING" => PortType::String,
            "TENSOR" => PortType::Tensor,
            "LATENT" => PortType::Latent,
            "CONDITIONING" => PortType::Conditioning,
            "IMAGE" => PortType::Image,
            "*" | "ANY" => PortType::Any,
            _ => {
                if let Some(inner) = s.strip_prefix("LIST<").and_then(|r| r.strip_suffix('>')) {
                    PortType::list(PortType::parse(inner)?)
                } else if !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    PortType::Object(s.to_string())
                } else {
                    return Err(format!(
                        "`{s}` is not a port type (INT, FLOAT, LIST<INT>, MY_OBJECT, ...)"
                    ));
                }
            }
        })
    }
}

impl fmt::Display for PortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortType::Int => f.write_str("INT"),
            PortType::Float => f.write_str("FLOAT"),
            PortType::Bool => f.write_str("BOOL"),
            PortType::String => f.write_str("STRING"),
            PortType::Tensor => f.write_str("TENSOR"),
            PortType::Latent => f.write_str("LATENT"),
            PortType::Conditioning => f.write_str("CONDITIONING"),
            PortType::Image => f.write_str("IMAGE"),
            PortType::List(t) => write!(f, "LIST<{t}>"),
            PortType::Object(name) => f.write_str(name),
            PortType::Any => f.write_str("*"),
        }
    }
}

impl Serialize for PortType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::string::String::deserialize(d)?;
        PortType::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One input of a node type.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InputSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: PortType,
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// The string is a file path whose size and modification time go into the
    /// cache key, so that editing the file re-runs the node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub file: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl InputSpec {
    pub fn new(name: &str, ty: PortType) -> InputSpec {
        InputSpec {
            name: name.to_string(),
            ty,
            required: true,
            default: None,
            min: None,
            max: None,
            choices: None,
            file: false,
            description: String::new(),
        }
    }
    pub fn int(name: &str) -> InputSpec {
        InputSpec::new(name, PortType::Int)
    }
    pub fn float(name: &str) -> InputSpec {
        InputSpec::new(name, PortType::Float)
    }
    pub fn bool(name: &str) -> InputSpec {
        InputSpec::new(name, PortType::Bool)
    }
    pub fn string(name: &str) -> InputSpec {
        InputSpec::new(name, PortType::String)
    }
    pub fn tensor(name: &str) -> InputSpec {
        InputSpec::new(name, PortType::Tensor)
    }
    /// Not required; the node sees `None` when it is not given.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }
    /// Not required; the host fills in `value` when it is not given.
    pub fn default(mut self, value: impl Into<serde_json::Value>) -> Self {
        self.required = false;
        self.default = Some(value.into());
        self
    }
    pub fn min(mut self, min: f64) -> Self {
        self.min = Some(min);
        self
    }
    pub fn max(mut self, max: f64) -> Self {
        self.max = Some(max);
        self
    }
    pub fn range(self, min: f64, max: f64) -> Self {
        self.min(min).max(max)
    }
    pub fn choices(mut self, choices: &[&str]) -> Self {
        self.choices = Some(choices.iter().map(|c| c.to_string()).collect());
        self
    }
    /// Marks a string input as a file path (see [`InputSpec::file`]).
    pub fn file(mut self) -> Self {
        self.file = true;
        self
    }
    pub fn doc(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }
}

/// One output of a node type.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutputSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: PortType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl OutputSpec {
    pub fn new(name: &str, ty: PortType) -> OutputSpec {
        OutputSpec {
            name: name.to_string(),
            ty,
            description: String::new(),
        }
    }
    pub fn doc(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }
}

/// Everything the host knows about a node type.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeSchema {
    #[serde(rename = "type")]
    pub type_name: String,
    pub category: String,
    #[serde(default)]
    pub description: String,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    /// Writes results outside the graph (files): the graph runs for these
    /// nodes, and they run every time (never served from the cache).
    #[serde(default)]
    pub output_node: bool,
}

impl NodeSchema {
    pub fn new(type_name: &str, category: &str) -> NodeSchema {
        NodeSchema {
            type_name: type_name.to_string(),
            category: category.to_string(),
            description: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            output_node: false,
        }
    }
    pub fn description(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }
    pub fn input(mut self, input: InputSpec) -> Self {
        self.inputs.push(input);
        self
    }
    pub fn output(mut self, output: OutputSpec) -> Self {
        self.outputs.push(output);
        self
    }
    pub fn output_node(mut self) -> Self {
        self.output_node = true;
        self
    }
    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|i| i.name == name)
    }
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|o| o.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_types_round_trip_and_accept() {
        for s in ["INT", "LIST<LIST<FLOAT>>", "SD_MODEL", "*", "LATENT"] {
            assert_eq!(PortType::parse(s).unwrap().to_string(), s);
        }
        assert!(PortType::parse("lowercase").is_err());
        assert!(PortType::Float.accepts(&PortType::Int));
        assert!(!PortType::Int.accepts(&PortType::Float));
        assert!(PortType::Tensor.accepts(&PortType::Image));
        assert!(!PortType::Latent.accepts(&PortType::Image));
        assert!(!PortType::object("A").accepts(&PortType::object("B")));
    }
}
