//! Fixture plugin: the `clash` fixture (nodes/testing-clash) "rebuilt" with
//! a fatal bug: the same plugin name and node type, but `AddInt` aborts the
//! process. `diffgraph watch --isolate` must survive this new generation and
//! fall back to the previous one (host/tests/isolate.rs).
#![deny(unsafe_code)]
use diffgraph_sdk::prelude::*;

struct AddInt;
impl Node for AddInt {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("AddInt", "testing")
            .description("aborts its process (a crashing rebuild of `clash`)")
            .input(InputSpec::int("a"))
            .input(InputSpec::int("b").default(1))
            .output(OutputSpec::new("sum", PortType::Int))
    }
    fn run(&self, _: &Context, _: &Inputs) -> Result<Vec<Value>, NodeError> {
        std::process::abort()
    }
}

export_plugin!("clash", [AddInt]);
