//! Reading model checkpoints without running code from them.
//!
//! PyTorch's `.pt`/`.pth`/`.ckpt` files are zip archives of a pickle
//! (`data.pkl`) and raw storages (`data/<key>`). `torch.load` unpickles with
//! Python's full unpickler, which calls any global a file names: a crafted
//! checkpoint runs arbitrary code. This crate reads the same files with its
//! own restricted unpickler ([`pickle`]) that builds plain values and knows
//! only the few globals a state dict uses (an allow-list, see
//! [`pickle::Global`]). Any other global becomes an inert stand-in that is
//! never called: outside the state dict (a Lightning checkpoint's callbacks,
//! optimizer states, numpy scalars, OmegaConf hyper-parameters) it is
//! skipped; inside it, it refuses the whole file with its name. There is no
//! code path that calls out of the reader.
//!
//! **Why an own reader**: the format needs ~30 opcodes and three globals.
//! Crates with pickle readers either pull a whole framework (candle-core's
//! `pickle` module brings candle's tensor types and cannot hand back libtorch
//! tensors) or accept more than a state dict needs (serde-pickle has no
//! persistent ids and no allow-list hook). A small reader over the `zip`
//! crate (already in the build through torch-sys) gives libtorch tensors
//! directly and an allow-list we can state in one place.
//!
//! [`read_state_dict`] picks the reader from the file's content (not its
//! name): zip archive → [`pt`], safetensors header → libtorch's reader.
#![deny(unsafe_code)]
pub mod pickle;
pub mod pt;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use tch::Tensor;

/// Every tensor of a state dict stored as `.pt` (torch.save zip) or
/// `.safetensors`, decided by the file's first bytes.
pub fn read_state_dict(path: &Path) -> Result<BTreeMap<String, Tensor>, String> {
    let mut head = [0u8; 9];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if head.starts_with(b"PK\x03\x04") {
        return pt::read_pt(path);
    }
    if n >= 2 && head[0] == 0x80 && head[1] <= 5 {
        return Err(format!(
            "{}: a raw pickle stream (torch's legacy pre-1.6 format, or not a checkpoint); only zip-format \
             torch.save files and .safetensors are read. Re-save it with a current torch \
             (torch.save(torch.load(f, weights_only=True), g)) or convert it to .safetensors",
            path.display()
        ));
    }
    if n == 9 && head[8] == b'{' {
        return Tensor::read_safetensors(path)
            .map(|v| v.into_iter().collect())
            .map_err(|e| format!("cannot read {}: {e}", path.display()));
    }
    Err(format!(
        "{} is neither a torch.save zip archive nor a .safetensors file",
        path.display()
    ))
}
