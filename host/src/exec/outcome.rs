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
    #[error("interrupted at node `{node}`")]
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

/// A plugin's error message as the user sees it, made in this one place for
/// every node: libtorch's C++ stack trace (`Exception raised from ...`,
/// `frame #N: ...`, 5-6 KB) cut, the rest on one line, an allocation size
/// also given in GiB, control characters escaped and the length bounded.
pub fn clean_node_message(raw: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for line in raw.lines() {
        let t = line.trim();
        if t.starts_with("Exception raised from") {
            break;
        }
        if t.is_empty() || t.starts_with("frame #") {
            continue;
        }
        kept.push(t);
    }
    let mut msg = kept.join(" ");
    if let Some(bytes) = allocation_size(&msg) {
        msg.push_str(&format!(
            " ({:.1} GiB asked for)",
            bytes as f64 / (1u64 << 30) as f64
        ));
    }
    crate::graph::errors::bounded(&msg, crate::graph::errors::MESSAGE_MAX)
}

/// The size in libtorch's "you tried to allocate N bytes" (CPU) or "Tried to
/// allocate 3.00 GiB" (CUDA, already readable: None).
fn allocation_size(msg: &str) -> Option<u64> {
    let rest = &msg[msg.find("tried to allocate ")? + "tried to allocate ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    rest[digits.len()..]
        .starts_with(" bytes")
        .then(|| digits.parse().ok())?
}

#[cfg(test)]
mod tests {
    #[test]
    fn torch_trace_cut_to_one_line() {
        let raw = "libtorch: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: \
                   you tried to allocate 4294967296000 bytes.\nException raised from allocate_cpu at \
                   ../c10/core/impl/alloc_cpu.cpp:117 (most recent call first):\nframe #0: c10::Error::Error() + 0x1\n\
                   frame #1: at::empty() + 0x2\n";
        let m = super::clean_node_message(raw);
        assert_eq!(
            m,
            "libtorch: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: \
             you tried to allocate 4294967296000 bytes. (4000.0 GiB asked for)"
        );
        assert_eq!(
            super::clean_node_message("a\n\u{1b}[31mb"),
            "a \\u{1b}[31mb"
        );
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
