//! An input once validation has resolved it: what the cycle check, the loop
//! checks and the planner read. Its own module so that those can use it
//! without importing the validator (and the validator them).
use crate::value::Value;

/// An input after validation.
#[derive(Clone, Debug)]
pub enum Resolved {
    Link {
        node: usize,
        output: usize,
    },
    Const(Value),
    /// An optional input that was not given and has no default.
    Absent,
}
