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
    /// Load a new generation of the plugin library at `path` (hot reload),
    /// between jobs: after the job before it, before the job after it.
    /// The registry is replaced whole, or kept if the library is refused.
    Reload { path: String },
}

/// Worker to parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Plugins loaded; the worker takes jobs. `device`: its device and
    /// memory (`device::stats_json`; absent from older workers).
    Ready {
        node_types: usize,
        #[serde(default)]
        device: Json,
    },
    /// A progress event of job `job` (`report::event_json`). A `node_start`
    /// event is flushed before the node runs.
    Event { job: String, event: Json },
    /// A live preview of job `job`'s loop `node` after a step: an encoded
    /// image (`format`: ComfyUI's code, 1 JPEG, 2 PNG) as hex. Hex keeps the
    /// protocol one JSON line with no extra dependency; previews are a few KB.
    Preview {
        job: String,
        node: String,
        format: u32,
        image: String,
    },
    /// The answer to a [`Request::Reload`]: the plugin's name and new
    /// generation, or why the library was refused (the old one serves on).
    Reloaded {
        path: String,
        result: Result<(String, u64), String>,
    },
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

/// Bytes as lowercase hex (a preview's `image`).
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hex back to bytes; None if it is not hex.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips_and_refuses_non_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::from_hex(&super::to_hex(&bytes)), Some(bytes));
        assert_eq!(super::from_hex("0g"), None);
        assert_eq!(super::from_hex("abc"), None);
    }
}
