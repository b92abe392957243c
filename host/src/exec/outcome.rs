//! What a run yields: its outcome, or why it stopped.
use crate::value::Value;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("node `{node}` ({type_name}) failed: {message}")]
    Node {
        node: String,
        type_name: String,
        message: String,
    },
    #[error("node `{node}` ({type_name}) panicked; the host caught it: {message}")]
    Panic {
        node: String,
        type_name: String,
        message: String,
    },
    #[error("interrupted before node `{node}`")]
    Interrupted { node: String },
    #[error("cannot plan the graph: {0}")]
    Plan(String),
}

impl RunError {
    /// The id of the node the error is about, if any.
    pub fn node(&self) -> Option<&str> {
        match self {
            RunError::Node { node, .. }
            | RunError::Panic { node, .. }
            | RunError::Interrupted { node } => Some(node),
            RunError::Plan(_) => None,
        }
    }
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// For each target (output node, or requested id): its outputs by name.
    pub outputs: Vec<(String, Vec<(String, Value)>)>,
    /// Nodes that ran (loop bodies: counted once per loop run).
    pub executed: Vec<String>,
    /// Nodes served from the cache.
    pub cached: Vec<String>,
    pub seconds: f64,
}

impl RunOutcome {
    /// Output `name` of target `node`.
    pub fn output(&self, node: &str, name: &str) -> Option<&Value> {
        self.outputs
            .iter()
            .find(|(id, _)| id == node)?
            .1
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}
