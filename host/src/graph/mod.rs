//! Graph files: the format (`model`), and validation before anything runs.
pub mod comfy_api;
pub mod constants;
mod cycles;
pub mod errors;
mod fast_parse;
pub mod json_keys;
mod loop_checks;
pub mod model;
pub mod overrides;
pub mod relative;
pub mod resolved;
mod type_names;
pub mod validate;

pub use errors::{ErrorKind, GraphError, GraphErrors};
pub use model::{Graph, Input, Link, Node};
pub use resolved::Resolved;
pub use validate::{validate, CheckedGraph, Kind};
