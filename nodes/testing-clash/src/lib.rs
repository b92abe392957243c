//! Fixture plugin `clash`: provides `AddInt` as the `testing` fixture does
//! (but adds 100, so a test sees which one ran), for the registry's
//! type-name clash rules (host/tests/plugin_clash.rs).
#![deny(unsafe_code)]
use diffgraph_sdk::prelude::*;

struct AddInt;
impl Node for AddInt {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("AddInt", "testing")
            .description("a + b + 100")
            .input(InputSpec::int("a"))
            .input(InputSpec::int("b").default(1))
            .output(OutputSpec::new("sum", PortType::Int))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![Value::Int(inputs.int("a")? + inputs.int("b")? + 100)])
    }
}

export_plugin!("clash", [AddInt]);
