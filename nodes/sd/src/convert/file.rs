//! Reading a single-file checkpoint: `.safetensors` only. Pickled
//! checkpoints (`.ckpt`, `.pt`, ...) are refused without being opened by a
//! deserializer: unpickling can execute arbitrary code.
use crate::weights::Weights;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use tch::Tensor;

const PICKLE_EXTENSIONS: [&str; 6] = ["ckpt", "pt", "pth", "bin", "pkl", "pickle"];

fn pickle_refusal(path: &Path) -> String {
    format!(
        "{}: this is a pickled PyTorch checkpoint; pickles can run arbitrary code when loaded, so diffgraph does \
         not read them. Convert it to .safetensors first, e.g. in Python: `import torch, safetensors.torch as st; \
         sd = torch.load(\"model.ckpt\", map_location=\"cpu\", weights_only=True); sd = sd.get(\"state_dict\", sd); \
         st.save_file({{k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}}, \
         \"model.safetensors\")` (weights_only=True stops torch from running code from the file).",
        path.display()
    )
}

/// Refuses pickles by extension and by content (zip archives of
/// `torch.save`, raw pickle streams), and anything that does not start like
/// a safetensors file (8-byte header length, then a JSON object).
pub fn check_safetensors(path: &Path) -> Result<(), String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if ext
        .as_deref()
        .is_some_and(|e| PICKLE_EXTENSIONS.contains(&e))
    {
        return Err(pickle_refusal(path));
    }
    let mut head = [0u8; 9];
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let n = file
        .read(&mut head)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if head.starts_with(b"PK\x03\x04") || (n >= 2 && head[0] == 0x80 && head[1] <= 5) {
        return Err(pickle_refusal(path));
    }
    if n < 9 || head[8] != b'{' {
        return Err(format!("{} is not a .safetensors file", path.display()));
    }
    Ok(())
}

/// Every tensor of a single-file `.safetensors` checkpoint, as stored.
pub fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, Tensor>, String> {
    check_safetensors(path)?;
    Weights::read_safetensors(path)
}
