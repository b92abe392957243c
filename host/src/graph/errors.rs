//! Validation errors: each names the node, the input, and what was expected
//! versus received, so that a user can fix every problem in one pass.
use serde::Serialize;
use std::fmt;

/// The kinds of graph problems (names follow ComfyUI's where they overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not JSON at all (line and column given).
    MalformedJson,
    /// JSON, but not shaped like a graph (missing `nodes`, a node without `type`, ...).
    InvalidGraph,
    DuplicateNodeId,
    /// A key given twice in one JSON object (both lines named).
    DuplicateKey,
    UnknownNodeType,
    /// A plain type name several plugins provide (write `plugin/Type`).
    AmbiguousNodeType,
    RequiredInputMissing,
    UnknownInput,
    /// A link to a node id that does not exist (or is not visible from here).
    LinkToMissingNode,
    /// A link to an output the source node does not have.
    LinkToMissingOutput,
    TypeMismatch,
    ValueSmallerThanMin,
    ValueBiggerThanMax,
    ValueNotInList,
    Cycle,
    /// A file input (a checkpoint, an image) names a path that does not exist.
    FileNotFound,
    MalformedLoop,
    NoOutputs,
}

/// One problem in a graph.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GraphError {
    pub kind: ErrorKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// The most characters of a user's string that an error quotes (node ids,
/// input names, received values).
pub const QUOTE_MAX: usize = 120;
/// The most characters of a whole message (which may embed several quotes).
pub const MESSAGE_MAX: usize = 1000;

/// A user's string made safe to print: control characters (newlines, ANSI
/// escape sequences' ESC, NUL, ...) escaped as `\u{1b}` etc., and anything
/// past `max` characters cut, saying how much was left out. Every field of a
/// [`GraphError`] goes through it, so a 50 MB string or a terminal escape in
/// a node id never reaches the terminal whole or raw.
pub fn bounded(s: &str, max: usize) -> String {
    let clean =
        |c: char| c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}');
    if s.len() <= max && !s.chars().any(clean) {
        return s.to_string();
    }
    let mut out = String::new();
    for (shown, (at, c)) in s.char_indices().enumerate() {
        if shown >= max {
            out.push_str(&format!("... ({} more bytes)", s.len() - at));
            break;
        }
        if clean(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl GraphError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> GraphError {
        GraphError {
            kind,
            node: None,
            input: None,
            message: bounded(&message.into(), MESSAGE_MAX),
            expected: None,
            received: None,
            line: None,
            column: None,
        }
    }
    pub fn node(mut self, id: &str) -> Self {
        self.node = Some(bounded(id, QUOTE_MAX));
        self
    }
    pub fn input(mut self, name: &str) -> Self {
        self.input = Some(bounded(name, QUOTE_MAX));
        self
    }
    pub fn expected(mut self, what: impl Into<String>) -> Self {
        self.expected = Some(bounded(&what.into(), MESSAGE_MAX));
        self
    }
    pub fn received(mut self, what: impl Into<String>) -> Self {
        self.received = Some(bounded(&what.into(), QUOTE_MAX));
        self
    }
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "line {l}, column {c}: ")?;
        }
        match (&self.node, &self.input) {
            (Some(n), Some(i)) => write!(f, "node `{n}`, input `{i}`: ")?,
            (Some(n), None) => write!(f, "node `{n}`: ")?,
            _ => {}
        }
        f.write_str(&self.message)?;
        match (&self.expected, &self.received) {
            (Some(e), Some(r)) => write!(f, " (expected {e}, received {r})"),
            (Some(e), None) => write!(f, " (expected {e})"),
            (None, Some(r)) => write!(f, " (received {r})"),
            _ => Ok(()),
        }
    }
}

/// All the problems found in one graph.
#[derive(Debug, Clone, Serialize)]
pub struct GraphErrors(pub Vec<GraphError>);

impl fmt::Display for GraphErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "the graph has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GraphErrors {}

impl GraphErrors {
    pub fn kinds(&self) -> Vec<ErrorKind> {
        self.0.iter().map(|e| e.kind).collect()
    }
}
