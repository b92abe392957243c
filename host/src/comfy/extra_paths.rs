//! ComfyUI's `extra_model_paths.yaml` (its `extra_model_paths.yaml.example`,
//! read by `utils/extra_config.py` `load_extra_path_config`): sections of
//! `kind: folder` entries, a `|` block holding several folders one a line,
//! an optional `base_path` that the folders are relative to (itself relative
//! to the file's folder, `~` expanded), `is_default` ignored. Only this
//! subset of YAML is read: it is what the format uses.
use std::path::{Path, PathBuf};

/// (kind, folder) pairs in file order.
pub fn parse(text: &str, yaml_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    // The current section's base_path and its (kind, folder text) entries.
    let mut base: Option<PathBuf> = None;
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut block: Option<(usize, String)> = None;
    let flush = |base: &Option<PathBuf>, entries: &mut Vec<(String, String)>, out: &mut Vec<_>| {
        for (kind, folder) in entries.drain(..) {
            let p = PathBuf::from(expand_home(&folder));
            let full = match base {
                Some(b) => b.join(p),
                None if p.is_absolute() => p,
                None => yaml_dir.join(p),
            };
            out.push((kind, full));
        }
    };
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let content = line.trim();
        if let Some((block_indent, kind)) = &block {
            if content.is_empty() {
                continue;
            }
            if indent > *block_indent {
                entries.push((kind.clone(), content.to_string()));
                continue;
            }
            block = None;
        }
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let Some((key, value)) = content.split_once(':') else {
            continue;
        };
        let value = unquote(value.split(" #").next().unwrap_or("").trim());
        if indent == 0 {
            flush(&base, &mut entries, &mut out);
            base = None;
            continue;
        }
        match key.trim() {
            "base_path" => {
                let b = PathBuf::from(expand_home(value));
                base = Some(if b.is_absolute() { b } else { yaml_dir.join(b) });
            }
            "is_default" => {}
            kind if value == "|" || value == "|-" => block = Some((indent, kind.to_string())),
            kind if !value.is_empty() => entries.push((kind.to_string(), value.to_string())),
            _ => {}
        }
    }
    flush(&base, &mut entries, &mut out);
    out
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v)
}

fn expand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => p.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_comfyuis_example_layout() {
        let text = "\
# a comment
comfyui:
    base_path: ../ComfyUI/
    is_default: true
    checkpoints: models/checkpoints/
    loras: |
        models/loras/
        models/lora/

a111:
    checkpoints: \"/abs/sd\"  # absolute
    vae: vae
";
        let got = parse(text, Path::new("/home/u"));
        let want: Vec<(String, PathBuf)> = [
            ("checkpoints", "/home/u/../ComfyUI/models/checkpoints/"),
            ("loras", "/home/u/../ComfyUI/models/loras/"),
            ("loras", "/home/u/../ComfyUI/models/lora/"),
            ("checkpoints", "/abs/sd"),
            ("vae", "/home/u/vae"),
        ]
        .iter()
        .map(|(k, p)| (k.to_string(), PathBuf::from(p)))
        .collect();
        assert_eq!(got, want);
    }
}
