//! Where output nodes may write: only below the run's output folder. Names
//! may contain subfolders ("runs/a") but never climb out of it.
use diffgraph_sdk::prelude::*;
use std::path::{Component, Path, PathBuf};

/// Joins the relative `name` (input `input`) onto `output_dir`, refusing
/// absolute paths and `..`, and creates the folders it needs.
pub fn output_path(output_dir: &Path, input: &str, name: &str) -> Result<PathBuf, NodeError> {
    let rel = Path::new(name);
    let mut clean = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("input `{input}`: expected a path inside the output folder, got {name:?} (contains `..`)").into())
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("input `{input}`: expected a path relative to the output folder, got the absolute path {name:?}").into())
            }
        }
    }
    if clean.as_os_str().is_empty() || name.ends_with('/') {
        return Err(format!("input `{input}`: expected a file name, got {name:?}").into());
    }
    let path = output_dir.join(clean);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create the folder {}: {e}", parent.display()))?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::output_path;

    #[test]
    fn refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(output_path(dir.path(), "f", "/etc/x").is_err());
        assert!(output_path(dir.path(), "f", "../x").is_err());
        assert!(output_path(dir.path(), "f", "a/../../x").is_err());
        assert!(output_path(dir.path(), "f", "").is_err());
        let p = output_path(dir.path(), "f", "runs/a").unwrap();
        assert_eq!(p, dir.path().join("runs").join("a"));
        assert!(dir.path().join("runs").is_dir());
    }
}
