//! Fixture plugin `twice`: lists node type `Same` twice, which the host
//! refuses as a whole (host/tests/plugin_clash.rs).
#![deny(unsafe_code)]
use diffgraph_sdk::prelude::*;

struct Same;
impl Node for Same {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Same", "testing").output(OutputSpec::new("n", PortType::Int))
    }
    fn run(&self, _: &Context, _: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![Value::Int(1)])
    }
}

export_plugin!("twice", [Same, Same]);
