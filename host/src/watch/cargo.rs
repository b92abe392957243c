//! `watch --build`: which plugin crates produce which libraries (from
//! `cargo metadata`), and rebuilding a crate when its sources change.
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A plugin crate of the workspace: a `cdylib` target and its source folder.
#[derive(Clone, Debug)]
pub struct PluginCrate {
    pub package: String,
    /// File name cargo gives the library, e.g. `libmy_nodes.so`.
    pub library: String,
    /// Folder whose changes trigger a rebuild (the crate's root: src/ and Cargo.toml).
    pub root: PathBuf,
    pub manifest: PathBuf,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
    target_directory: PathBuf,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    manifest_path: PathBuf,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    crate_types: Vec<String>,
}

/// The workspace around `dir`: its plugin crates and its target folder.
pub fn discover(dir: &Path) -> Result<(Vec<PluginCrate>, PathBuf), String> {
    let out = Command::new("cargo")
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let meta: Metadata = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cannot read cargo metadata: {e}"))?;
    let crates = meta
        .packages
        .into_iter()
        .filter(|p| meta.workspace_members.contains(&p.id))
        .filter_map(|p| {
            let lib = p
                .targets
                .iter()
                .find(|t| t.crate_types.iter().any(|c| c == "cdylib"))?;
            let root = p.manifest_path.parent()?.to_path_buf();
            Some(PluginCrate {
                package: p.name.clone(),
                library: format!("lib{}.so", lib.name.replace('-', "_")),
                root,
                manifest: p.manifest_path.clone(),
            })
        })
        .collect();
    Ok((crates, meta.target_directory))
}

/// The crate a changed file belongs to (a `.rs` file or a Cargo.toml under its root).
pub fn crate_of<'a>(crates: &'a [PluginCrate], changed: &Path) -> Option<&'a PluginCrate> {
    let relevant = changed.extension().is_some_and(|e| e == "rs")
        || changed.file_name().is_some_and(|n| n == "Cargo.toml");
    if !relevant || changed.components().any(|c| c.as_os_str() == "target") {
        return None;
    }
    crates
        .iter()
        .filter(|c| changed.starts_with(&c.root))
        .max_by_key(|c| c.root.as_os_str().len())
}

/// Runs `cargo build` for one crate with its output shown on the terminal.
pub fn build(krate: &PluginCrate, release: bool) -> Result<(), String> {
    let mut cmd = Command::new("cargo");
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&krate.manifest)
        .arg("-p")
        .arg(&krate.package);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build -p {} failed ({status})",
            krate.package
        ))
    }
}
