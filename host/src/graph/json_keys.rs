//! Duplicate object keys, with the line of each occurrence.
//!
//! serde_json keeps the last of two equal keys and cannot say where either
//! was, so a graph with two nodes of the same id (the first silently dropped)
//! or an input given twice (the last silently winning) would pass. This is a
//! second, position-aware pass over text serde_json has already accepted: an
//! iterative scanner (no recursion, so nesting depth costs no stack) that
//! tracks the keys of every open object.
use super::errors::{ErrorKind, GraphError};
use std::borrow::Cow;

/// One key seen twice in the same object.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateKey {
    /// The path of the object holding the key (`nodes`, `nodes.loop.body`, ...).
    pub path: String,
    pub key: String,
    pub first_line: usize,
    pub second_line: usize,
}

impl DuplicateKey {
    pub fn to_error(&self) -> GraphError {
        let what = match self.path.rsplit('.').next() {
            Some("nodes") | Some("body") => "node id",
            Some("inputs") => "input",
            Some("next") => "`next` variable",
            _ => "key",
        };
        let place = if self.path.is_empty() {
            "the top level".to_string()
        } else {
            format!("`{}`", self.path)
        };
        let kind = match what {
            "node id" => ErrorKind::DuplicateNodeId,
            _ => ErrorKind::DuplicateKey,
        };
        let mut e = GraphError::new(
            kind,
            format!(
                "{what} `{}` appears twice in {place}: on line {} and on line {} \
                 (JSON keeps only one of them; rename or remove one)",
                self.key, self.first_line, self.second_line
            ),
        );
        e.line = Some(self.second_line);
        if kind == ErrorKind::DuplicateNodeId {
            e = e.node(&self.key);
        } else if let Some(node) = node_of_path(&self.path) {
            e = e.node(node);
        }
        if what == "input" {
            e = e.input(&self.key);
        }
        e
    }
}

/// The node an object path belongs to (`nodes.a.inputs` -> `a`).
fn node_of_path(path: &str) -> Option<&str> {
    let mut parts = path.split('.');
    let mut last_node = None;
    while let Some(p) = parts.next() {
        if p == "nodes" || p == "body" {
            last_node = parts.next().or(last_node);
        }
    }
    last_node
}

/// An object being scanned: its path and the keys seen so far with their
/// line (checked for repeats when the object closes: a sort, no hashing).
struct Frame<'t> {
    path: String,
    keys: Vec<(Cow<'t, str>, usize)>,
}

/// Finds every duplicate key in `text`, which must already be valid JSON.
pub fn duplicate_keys(text: &str) -> Vec<DuplicateKey> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    // Open containers: Some(frame) for objects, None for arrays.
    let mut stack: Vec<Option<Frame>> = Vec::new();
    let (mut i, mut line) = (0usize, 1usize);
    // After `{` or `,` inside an object, the next string is a key.
    let mut expect_key = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line += 1,
            b'{' => {
                let path = child_path(&stack);
                stack.push(Some(Frame {
                    path,
                    keys: Vec::new(),
                }));
                expect_key = true;
            }
            b'[' => {
                stack.push(None);
                expect_key = false;
            }
            b'}' | b']' => {
                if let Some(Some(frame)) = stack.pop() {
                    report_repeats(frame, &mut out);
                }
                expect_key = false;
            }
            b',' => expect_key = matches!(stack.last(), Some(Some(_))),
            b'"' => {
                let start = i;
                let mut escaped = false;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        escaped = true;
                        i += 1;
                    }
                    i += 1;
                }
                if expect_key {
                    let end = i.min(bytes.len());
                    let key: Cow<str> = if escaped {
                        let raw = &text[start..(end + 1).min(bytes.len())];
                        Cow::Owned(serde_json::from_str(raw).unwrap_or_else(|_| raw.into()))
                    } else {
                        Cow::Borrowed(&text[start + 1..end])
                    };
                    if let Some(Some(frame)) = stack.last_mut() {
                        frame.keys.push((key, line));
                    }
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out.sort_by_key(|d| d.second_line);
    out
}

/// Pushes each key of a closed object that appeared before in it.
fn report_repeats(mut frame: Frame, out: &mut Vec<DuplicateKey>) {
    if frame.keys.len() < 2 {
        return;
    }
    // Stable: equal keys stay in line order.
    frame.keys.sort_by(|a, b| a.0.cmp(&b.0));
    for pair in frame.keys.windows(2) {
        if pair[0].0 == pair[1].0 {
            let first = frame
                .keys
                .iter()
                .find(|k| k.0 == pair[0].0)
                .map_or(pair[0].1, |k| k.1);
            out.push(DuplicateKey {
                path: frame.path.clone(),
                key: pair[1].0.to_string(),
                first_line: first,
                second_line: pair[1].1,
            });
        }
    }
}

/// The path of a container opened now, from the key it is the value of.
fn child_path(stack: &[Option<Frame>]) -> String {
    match stack.last() {
        Some(Some(parent)) => match (parent.keys.last(), parent.path.is_empty()) {
            (Some((k, _)), true) => k.to_string(),
            (Some((k, _)), false) => format!("{}.{k}", parent.path),
            (None, _) => parent.path.clone(),
        },
        // Inside an array (or at the root): the array's own path is unknown
        // here; duplicate keys are still reported, under a generic name.
        Some(None) => "[list element]".into(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_duplicates_with_both_lines() {
        let text = "{\"nodes\": {\n \"a\": {\"type\": \"X\", \"inputs\": {\"v\": 1,\n \"v\": 2}},\n \"a\": {}}}";
        let d = duplicate_keys(text);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(
            (
                d[0].path.as_str(),
                d[0].key.as_str(),
                d[0].first_line,
                d[0].second_line
            ),
            ("nodes.a.inputs", "v", 2, 3)
        );
        assert_eq!(
            (d[1].path.as_str(), d[1].first_line, d[1].second_line),
            ("nodes", 2, 4)
        );
        let e = d[0].to_error();
        assert_eq!(
            (e.node.as_deref(), e.input.as_deref()),
            (Some("a"), Some("v"))
        );
    }

    #[test]
    fn escaped_keys_and_strings_with_braces() {
        let text = r#"{"a\"{": "}{,\"", "a\u0022{": 1, "b": ["{\"", {"c": 1, "c": 2}]}"#;
        let d = duplicate_keys(text);
        assert_eq!(d.len(), 2, "{d:?}");
        let mut keys: Vec<&str> = d.iter().map(|k| k.key.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["a\"{", "c"]);
        assert!(duplicate_keys(r#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#).is_empty());
    }
}
