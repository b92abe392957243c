//! LoRA: low-rank weight changes from the files people download, applied by
//! patching the model's weights in place (restorably), several stacked, with
//! the U-Net's and the text encoder's strengths apart (ComfyUI's
//! `LoraLoader` semantics, `nodes.py` / `comfy/sd.py` `load_lora_for_models`).
//!
//! - [`file`]: reading a file into per-module adapters (LoRA, LoCon, LoHa).
//! - [`keys`]: which parameter each module name patches (table-driven rules
//!   per model part: kohya/A1111 and diffusers/PEFT spellings).
//! - [`patch`]: the shared model, each handle's patch list, and the sync that
//!   re-patches only the weights whose patches changed.
pub mod file;
pub mod keys;
pub mod patch;

pub use file::{short_list, LoraFile};
pub use keys::{KeyIndex, Rule};
pub use patch::{Patch, Patchable, PatchedModel};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

/// A file read once while any model uses it: the same file (path, size,
/// modification time) given to several loaders, or re-read after a strength
/// changed, is not parsed again.
pub fn read_cached(path: &Path) -> Result<Arc<LoraFile>, String> {
    type Key = (PathBuf, u64, Option<SystemTime>);
    static FILES: Mutex<Option<HashMap<Key, Weak<LoraFile>>>> = Mutex::new(None);
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let mut files = FILES.lock().unwrap_or_else(|p| p.into_inner());
    let files = files.get_or_insert_with(HashMap::new);
    files.retain(|_, f| f.strong_count() > 0);
    if let Some(file) = files.get(&key).and_then(Weak::upgrade) {
        return Ok(file);
    }
    let file = Arc::new(LoraFile::read(path)?);
    files.insert(key, Arc::downgrade(&file));
    Ok(file)
}

/// A file matched against model parts: one patch per part it touches, and
/// what it holds that no part took.
pub struct Matched {
    pub patches: Vec<Option<Patch>>,
    /// Module names of the file no part knows, plus unsupported kinds and
    /// stray keys.
    pub unmatched: Vec<String>,
}

/// Matches `file` against the parts' indices (each with its strength); a
/// part at strength 0 gets no patch but still claims its modules.
pub fn match_parts(file: &Arc<LoraFile>, parts: &[(&KeyIndex, f64)]) -> Result<Matched, String> {
    let mut claimed = BTreeSet::new();
    let mut patches = Vec::new();
    for (index, strength) in parts {
        let targets = file.matches(index);
        for (param, module) in &targets {
            let shape = index.shape(param).unwrap_or(&[]);
            // Shape errors now, not at the first sampling step.
            let _ = file.delta(module, shape)?;
            claimed.insert(module.to_string());
        }
        let targets: BTreeMap<String, String> = targets
            .into_iter()
            .map(|(p, m)| (p, m.to_string()))
            .collect();
        patches.push((*strength != 0.0 && !targets.is_empty()).then(|| Patch {
            file: file.clone(),
            targets: Arc::new(targets),
            strength: *strength,
        }));
    }
    let mut unmatched: Vec<String> = file
        .modules
        .iter()
        .filter(|m| !claimed.contains(*m))
        .cloned()
        .collect();
    unmatched.extend(file.unsupported.iter().map(|u| format!("{u}: unsupported")));
    unmatched.extend(file.stray.iter().map(|k| format!("{k}: not a LoRA key")));
    if claimed.is_empty() {
        let parts: Vec<&str> = parts.iter().map(|(i, _)| i.rule.part).collect();
        return Err(format!(
            "{}: no module matches the model's {} ({} modules in the file: {})",
            file.source,
            parts.join(" or "),
            file.modules.len() + file.unsupported.len(),
            short_list(&unmatched)
        ));
    }
    Ok(Matched { patches, unmatched })
}
