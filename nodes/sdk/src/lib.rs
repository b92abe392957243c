//! # diffgraph node SDK
//!
//! Shared by the diffgraph host and its node plugins. A plugin is a `cdylib`
//! crate that implements [`Node`] for each node type, in safe Rust, and
//! exports them with [`export_plugin!`]:
//!
//! ```ignore
//! use diffgraph_sdk::prelude::*;
//!
//! struct AddConstant;
//! impl Node for AddConstant {
//!     fn schema(&self) -> NodeSchema {
//!         NodeSchema::new("AddConstant", "math")
//!             .description("x + value")
//!             .input(InputSpec::tensor("x"))
//!             .input(InputSpec::float("value").default(1.0))
//!             .output(OutputSpec::new("y", PortType::Tensor))
//!     }
//!     fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
//!         let y = inputs.tensor("x")?.f_add_scalar(inputs.float("value")?)?;
//!         Ok(vec![y.into()])
//!     }
//! }
//! export_plugin!("my-nodes", [AddConstant]);
//! ```
//!
//! The C ABI between host and plugins is in [`abi`]; the unsafe glue that
//! implements it on the plugin side is in `export.rs`.
pub mod abi;
#[doc(hidden)]
pub mod export;
pub mod interrupt;
mod node;
pub mod owned_floats;
pub mod rng;
mod schema;
mod value;

pub use node::{Context, Inputs, Node, NodeError};
pub use owned_floats::OwnedFloats;
pub use schema::{InputSpec, NodeSchema, OutputSpec, PortType};
pub use tch;
pub use value::{InputValue, Object, ObjectRef, Value};

/// Everything a node author needs.
pub mod prelude {
    pub use crate::{
        export_plugin, Context, InputSpec, InputValue, Inputs, Node, NodeError, NodeSchema, Object,
        OutputSpec, PortType, Value,
    };
    pub use tch::{self, Device, Kind, Tensor};
}
