//! Model folders with ComfyUI's layout: each root holds `checkpoints/`,
//! `vae/`, `loras/`, `embeddings/`, `upscale_models/`, and a workflow's
//! `ckpt_name` (etc.) is a file name inside one of them (ComfyUI's
//! `folder_paths.get_full_path`: the first root that has it wins).
//!
//! Roots come from `--models DIR` (repeatable) and then `$DIFFGRAPH_MODELS`
//! (colon-separated); an entry that is a `.yaml` file is read as ComfyUI's
//! `extra_model_paths.yaml` (`extra_paths`), so an existing ComfyUI
//! install's models are used in place. The embedded demo model (`models/shapes-ldm` of the
//! repository) is always the checkpoint `shapes-ldm` when no root has a file
//! of that name, so that ComfyUI workflows run on a fresh clone.
use std::path::{Path, PathBuf};

/// The checkpoint name under which the embedded demo model is listed.
pub const DEMO_CHECKPOINT: &str = "shapes-ldm";
/// File endings ComfyUI lists in model folders that diffgraph can load.
const MODEL_ENDINGS: &[&str] = &["safetensors", "sft"];
/// File endings listed in `configs/` (ComfyUI lists `.yaml`).
const CONFIG_ENDINGS: &[&str] = &["yaml", "json"];
/// Image files LoadImage lists in the input folder (ComfyUI filters by
/// content type `image`).
const IMAGE_ENDINGS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"];

/// Where models are looked up.
#[derive(Clone, Debug, Default)]
pub struct ModelFolders {
    pub roots: Vec<PathBuf>,
    /// Folders by kind from `extra_model_paths.yaml` files, searched after
    /// the roots' own (ComfyUI's `add_model_folder_path`).
    pub extra: Vec<(String, PathBuf)>,
    /// ComfyUI's input folder (what LoadImage lists); None: `$DIFFGRAPH_INPUT`,
    /// else `input` in the working directory, as ComfyUI's default.
    pub input: Option<PathBuf>,
}

impl ModelFolders {
    /// `cli` roots first, then those of `$DIFFGRAPH_MODELS`.
    pub fn new(cli: &[PathBuf]) -> ModelFolders {
        let mut entries = cli.to_vec();
        if let Some(env) = std::env::var_os("DIFFGRAPH_MODELS") {
            entries.extend(std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()));
        }
        let mut folders = ModelFolders::default();
        for e in entries {
            let yaml = e.extension().is_some_and(|x| x == "yaml" || x == "yml");
            match std::fs::read_to_string(&e) {
                Ok(text) if yaml && e.is_file() => {
                    let dir = e.parent().unwrap_or(Path::new("."));
                    folders.extra.extend(super::extra_paths::parse(&text, dir));
                }
                _ => folders.roots.push(e),
            }
        }
        folders
    }

    /// The same folders with `dir` as the input folder (servers: `--input`).
    pub fn with_input(mut self, dir: PathBuf) -> ModelFolders {
        self.input = Some(dir);
        self
    }

    /// The input folder images are read from.
    pub fn input_folder(&self) -> PathBuf {
        self.input
            .clone()
            .or_else(|| std::env::var_os("DIFFGRAPH_INPUT").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("input"))
    }

    /// An input image name (ComfyUI's annotated form `NAME [input]` too)
    /// as a path in the input folder, or a message naming the file and the
    /// folder searched.
    pub fn resolve_input(&self, name: &str) -> Result<PathBuf, String> {
        let folder = self.input_folder();
        let plain = name.strip_suffix(" [input]").unwrap_or(name);
        if plain.ends_with(" [output]") || plain.ends_with(" [temp]") {
            return Err(format!(
                "`{name}`: diffgraph reads input images from the input folder only ({})",
                folder.display()
            ));
        }
        let rel = Path::new(plain);
        if plain.is_empty() || !is_relative_inside(rel) {
            return Err(format!(
                "`{name}` is not a file name inside the input folder"
            ));
        }
        let path = folder.join(rel);
        if path.is_file() {
            // Absolute: the native graph means this file wherever it runs.
            Ok(std::fs::canonicalize(&path).unwrap_or(path))
        } else {
            Err(format!(
                "image `{name}` not found in the input folder {}",
                folder.display()
            ))
        }
    }

    /// The images in the input folder (LoadImage's choices), sorted.
    pub fn list_input(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.input_folder())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_file() && has_ending(&e.path(), IMAGE_ENDINGS))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The folders a file of `kind` (`checkpoints`, `vae`, ...) is searched in.
    pub fn folders(&self, kind: &str) -> Vec<PathBuf> {
        let extra = self.extra.iter().filter(|(k, _)| k == kind);
        self.roots
            .iter()
            .map(|r| r.join(kind))
            .chain(extra.map(|(_, p)| p.clone()))
            .collect()
    }

    /// The path of `name` in the `kind` folders, or a message naming the
    /// file and every folder searched. A single file may carry a sidecar
    /// diffusers folder of the same stem (`NAME.safetensors` + `NAME/`)
    /// giving what its shapes cannot tell; see `sidecar_config`.
    pub fn resolve(&self, kind: &str, name: &str) -> Result<PathBuf, String> {
        let rel = Path::new(name);
        if name.is_empty() || !is_relative_inside(rel) {
            return Err(format!(
                "`{name}` is not a file name inside the {kind} folders"
            ));
        }
        let folders = self.folders(kind);
        if let Some(found) = folders.iter().map(|f| f.join(rel)).find(|p| p.exists()) {
            return Ok(found);
        }
        if kind == "checkpoints" && name == DEMO_CHECKPOINT {
            if let Some(demo) = demo_model() {
                return Ok(demo);
            }
        }
        let searched = if folders.is_empty() {
            "no model folders are set (--models DIR or $DIFFGRAPH_MODELS)".to_string()
        } else {
            format!(
                "searched {}",
                folders
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let available = self.list(kind);
        let available = if available.is_empty() {
            String::new()
        } else {
            format!(" (available: {})", available.join(", "))
        };
        Err(format!(
            "{kind} file `{name}` not found: {searched}{available}"
        ))
    }

    /// The names a `kind` input offers (ComfyUI's choices): every loadable
    /// file or diffusers folder in the folders, plus `shapes-ldm` for
    /// checkpoints.
    pub fn list(&self, kind: &str) -> Vec<String> {
        let mut names = Vec::new();
        for folder in self.folders(kind) {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let endings = if kind == "configs" {
                    CONFIG_ENDINGS
                } else {
                    MODEL_ENDINGS
                };
                let loadable = if path.is_dir() {
                    path.join("model_index.json").exists()
                } else {
                    has_ending(&path, endings)
                };
                if loadable {
                    names.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        if kind == "checkpoints" && demo_model().is_some() {
            names.push(DEMO_CHECKPOINT.to_string());
        }
        names.sort();
        names.dedup();
        names
    }
}

fn has_ending(path: &Path, endings: &[&str]) -> bool {
    path.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| endings.contains(&x.to_ascii_lowercase().as_str()))
}

/// A relative path that stays inside the folder it is joined to.
fn is_relative_inside(rel: &Path) -> bool {
    !rel.is_absolute()
        && !rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// What a model config adds to the native LoadCheckpoint (CheckpointLoader's
/// `config_name`, or a checkpoint's sidecar): a diffusers folder is its
/// `config`; a `.yaml` (ComfyUI's LDM configs, e.g. `v2-inference-v.yaml`)
/// gives the prediction type from `parameterization: "v"` (else epsilon);
/// a `.json` may give `prediction_type` and `config` (a diffusers folder,
/// relative to the JSON file). The architecture comes from the weights'
/// shapes, as for any single file.
pub fn config_inputs(path: &Path) -> serde_json::Value {
    use serde_json::{json, Value as Json};
    if path.is_dir() {
        return json!({ "config": path.to_string_lossy() });
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if path.extension().is_some_and(|x| x == "json") {
        let j: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
        let mut out = json!({});
        if let Some(p) = j["prediction_type"].as_str() {
            out["prediction_type"] = json!(p);
        }
        if let Some(c) = j["config"].as_str() {
            let dir = path.parent().unwrap_or(Path::new("")).join(c);
            out["config"] = json!(dir.to_string_lossy());
        }
        return out;
    }
    let v = text.lines().any(|l| {
        l.trim()
            .strip_prefix("parameterization:")
            .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == "v")
    });
    json!({ "prediction_type": if v { "v_prediction" } else { "epsilon" } })
}

/// For a single-file checkpoint `NAME.ext`, a config file next to it:
/// `NAME.yaml` (ComfyUI's) or `NAME.json` (see `config_inputs`).
pub fn sidecar_file(checkpoint: &Path) -> Option<PathBuf> {
    if checkpoint.is_dir() {
        return None;
    }
    ["yaml", "json"]
        .iter()
        .map(|x| checkpoint.with_extension(x))
        .find(|p| p.is_file())
}

/// For a single-file checkpoint `NAME.ext`, the diffusers folder `NAME/`
/// next to it (with `model_index.json`), if any: the config `LoadCheckpoint`
/// takes for what the weights' shapes cannot tell (ComfyUI's
/// `CheckpointLoader` takes a config the same way).
pub fn sidecar_config(checkpoint: &Path) -> Option<PathBuf> {
    if checkpoint.is_dir() {
        return None;
    }
    let folder = checkpoint.with_extension("");
    folder.join("model_index.json").exists().then_some(folder)
}

/// Whether a checkpoint is SDXL, by the rule of the sd plugin's
/// `LoadCheckpoint` (`nodes/sd/src/nodes/sdxl_loader.rs` `is_sdxl`): a
/// diffusers folder with `text_encoder_2/`, or a `.safetensors` file whose
/// header names `conditioner.embedders.*` keys. The translation needs it to
/// give KSampler's U-Net step SDXL's pooled embeddings and time ids, which
/// ComfyUI's CONDITIONING carries implicitly.
pub fn is_sdxl_checkpoint(path: &Path) -> bool {
    use std::io::Read;
    if path.is_dir() {
        return path.join("text_encoder_2").is_dir();
    }
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(len).min(100_000_000) as usize;
    let mut header = vec![0u8; n];
    let needle = b"conditioner.embedders.";
    f.read_exact(&mut header).is_ok() && header.windows(needle.len()).any(|w| w == needle)
}

/// The embedded demo model: `models/shapes-ldm` under the working directory,
/// next to the executable's build tree (`target/<profile>/../../models`), or
/// in the source tree this library was built from.
fn demo_model() -> Option<PathBuf> {
    let rel = Path::new("models").join(DEMO_CHECKPOINT);
    let mut candidates = vec![rel.clone()];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("../..").join(&rel));
            candidates.push(dir.join("../../..").join(&rel));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&rel));
    // Absolute, so that the translated graph means the same file whatever
    // the working directory of whoever validates or runs it.
    candidates
        .into_iter()
        .find(|p| p.join("model_index.json").exists())
        .and_then(|p| std::fs::canonicalize(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_in_order_and_names_the_folders_searched() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(b.path().join("checkpoints")).unwrap();
        std::fs::write(b.path().join("checkpoints/m.safetensors"), b"").unwrap();
        let f = ModelFolders {
            roots: vec![a.path().into(), b.path().into()],
            ..ModelFolders::default()
        };
        assert_eq!(
            f.resolve("checkpoints", "m.safetensors").unwrap(),
            b.path().join("checkpoints/m.safetensors")
        );
        assert_eq!(f.list("checkpoints")[0], "m.safetensors");
        let err = f.resolve("checkpoints", "x.safetensors").unwrap_err();
        assert!(err.contains("`x.safetensors` not found"), "{err}");
        assert!(err.contains(&a.path().join("checkpoints").display().to_string()));
        assert!(f.resolve("checkpoints", "../m.safetensors").is_err());
        // The demo model is there without any folder.
        let none = ModelFolders::default();
        assert!(none.resolve("checkpoints", DEMO_CHECKPOINT).is_ok());
        assert!(none
            .list("checkpoints")
            .contains(&DEMO_CHECKPOINT.to_string()));
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_and_sidecars_give_prediction_type_and_folder() {
        let d = tempfile::tempdir().unwrap();
        let ckpt = d.path().join("m.safetensors");
        std::fs::write(&ckpt, b"").unwrap();
        assert_eq!(sidecar_file(&ckpt), None);
        let yaml = d.path().join("m.yaml");
        std::fs::write(&yaml, "model:\n  params:\n    parameterization: \"v\"\n").unwrap();
        assert_eq!(sidecar_file(&ckpt), Some(yaml.clone()));
        assert_eq!(
            config_inputs(&yaml),
            json!({ "prediction_type": "v_prediction" })
        );
        std::fs::write(&yaml, "model:\n  params:\n    linear_start: 0.00085\n").unwrap();
        assert_eq!(
            config_inputs(&yaml),
            json!({ "prediction_type": "epsilon" })
        );
        let j = d.path().join("c.json");
        std::fs::write(&j, r#"{"prediction_type": "epsilon", "config": "sd1"}"#).unwrap();
        let got = config_inputs(&j);
        assert_eq!(got["prediction_type"], "epsilon");
        assert_eq!(got["config"], json!(d.path().join("sd1").to_string_lossy()));
    }
}
