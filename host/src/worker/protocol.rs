//! The worker's line protocol: one JSON object per line. Requests go to the
//! worker's stdin, replies come from its stdout. Lines on stdout that are not
//! replies (a plugin printing) are passed on to the parent's stderr.
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Parent to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Validate and run `graph` (native graph JSON text) as job `job`.
    Run { job: String, graph: String },
    /// Stop job `job` before its next node or loop iteration; if it has
    /// not started yet, as soon as it starts. An interrupt for a job that
    /// already ended is forgotten when the next job starts.
    Interrupt { job: String },
}

/// Worker to parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Plugins loaded; the worker takes jobs.
    Ready { node_types: usize },
    /// A progress event of job `job` (`report::event_json`). A `node_start`
    /// event is flushed before the node runs.
    Event { job: String, event: Json },
    /// The job finished: `report::outcome_json`, plus `files`: for each
    /// target node, the files it reported writing.
    Done {
        job: String,
        outcome: Json,
        files: Json,
    },
    /// The job failed inside the worker (validation, a node error, a caught
    /// panic, an interrupt): `report::run_error_fields` or graph errors.
    Failed {
        job: String,
        node: Option<String>,
        error: String,
        interrupted: bool,
    },
}

impl Reply {
    /// One line of the protocol.
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("replies serialise");
        s.push('\n');
        s
    }
}
