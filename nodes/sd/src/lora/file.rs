//! Reading a LoRA `.safetensors` file into per-module adapters, and
//! matching them to model parameters.
//!
//! Kinds, with the weight change each adds (ComfyUI
//! `comfy/weight_adapter/lora.py` and `loha.py`, `calculate_weight`;
//! diffusers / PEFT `tuners/lora/layer.py` `get_delta_weight`):
//! - LoRA / LoCon: `up` [out, r] or [out, r, 1, 1], `down` [r, in] or
//!   [r, in, k, k]; ΔW = (alpha / r) · up·down, reshaped to the weight
//!   (conv kernels too: LoCon). kohya spells them `.lora_up.weight`,
//!   `.lora_down.weight`, `.alpha`; diffusers / PEFT `.lora_B.weight`,
//!   `.lora_A.weight` (no alpha: scale 1).
//! - LoHa: ΔW = (alpha / r) · (w1a·w1b) ⊙ (w2a·w2b), r = rows of w1b
//!   (`.hada_w1_a` ... `.hada_w2_b`, `.alpha`).
//!
//! Not supported, and reported as such rather than skipped silently: LoRA's
//! `lora_mid` (Tucker), LoHa's `hada_t1`/`hada_t2`, DoRA's `dora_scale`.
use super::keys::KeyIndex;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use tch::{Kind, Tensor};

/// One module's weight change before strength.
pub enum Adapter {
    Lora {
        up: Tensor,
        down: Tensor,
        alpha: Option<f64>,
    },
    LoHa {
        w1a: Tensor,
        w1b: Tensor,
        w2a: Tensor,
        w2b: Tensor,
        alpha: Option<f64>,
    },
}

impl Adapter {
    /// ΔW (float32) in the shape of the weight it patches.
    pub fn delta(&self, shape: &[i64]) -> Result<Tensor, String> {
        let f = |t: &Tensor| t.to_kind(Kind::Float);
        let (delta, rank, alpha) = match self {
            Adapter::Lora { up, down, alpha } => {
                let rank = down.size()[0];
                let d = f(&up.flatten(1, -1)).f_matmul(&f(&down.flatten(1, -1)));
                (d.map_err(|e| e.to_string())?, rank, alpha)
            }
            Adapter::LoHa {
                w1a,
                w1b,
                w2a,
                w2b,
                alpha,
            } => {
                let rank = w1b.size()[0];
                let m1 = f(w1a).f_matmul(&f(&w1b.flatten(1, -1)));
                let m2 = f(w2a).f_matmul(&f(&w2b.flatten(1, -1)));
                let d = m1.and_then(|a| a.f_mul(&m2?)).map_err(|e| e.to_string())?;
                (d, rank, alpha)
            }
        };
        if delta.numel() as i64 != shape.iter().product::<i64>() {
            return Err(format!(
                "gives {:?} values for a weight of shape {shape:?}",
                delta.size()
            ));
        }
        let scale = alpha.map_or(1.0, |a| a / rank as f64);
        Ok(delta.reshape(shape) * scale)
    }
}

/// A LoRA file: its adapters by the file's module name, what could not be
/// read, and a hash of its bytes (the patch cache's key).
pub struct LoraFile {
    pub source: String,
    /// The module names of `adapters`.
    pub modules: BTreeSet<String>,
    /// Behind a lock because tensors are not `Sync` (files are shared by
    /// model handles); only the patching, already serialised by the
    /// model's lock, takes it.
    adapters: Mutex<BTreeMap<String, Adapter>>,
    /// Modules of kinds this reader does not apply, with the reason.
    pub unsupported: Vec<String>,
    /// Keys that belong to no module this reader knows.
    pub stray: Vec<String>,
    pub hash: u64,
}

/// The suffixes that make up a module's entry, and what each is.
const PARTS: &[(&str, &str)] = &[
    (".lora_up.weight", "up"),
    (".lora_down.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora.down.weight", "down"),
    (".alpha", "alpha"),
    (".hada_w1_a", "w1a"),
    (".hada_w1_b", "w1b"),
    (".hada_w2_a", "w2a"),
    (".hada_w2_b", "w2b"),
    (".lora_mid.weight", "unsupported: lora_mid (Tucker LoCon)"),
    (".hada_t1", "unsupported: hada_t1 (Tucker LoHa)"),
    (".hada_t2", "unsupported: hada_t2 (Tucker LoHa)"),
    (".dora_scale", "unsupported: dora_scale (DoRA)"),
];

fn hash_file(path: &Path) -> Result<u64, String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.write(&buf[..n]);
    }
    Ok(hasher.finish())
}

impl LoraFile {
    pub fn read(path: &Path) -> Result<LoraFile, String> {
        let tensors = crate::safetensors::read(path)?;
        let mut file = LoraFile::from_tensors(tensors, &path.display().to_string())?;
        file.hash = hash_file(path)?;
        Ok(file)
    }

    /// Groups the tensors by module; `hash` is left 0 (set by [`LoraFile::read`]).
    pub fn from_tensors(
        tensors: BTreeMap<String, Tensor>,
        source: &str,
    ) -> Result<LoraFile, String> {
        let mut modules: BTreeMap<String, BTreeMap<&'static str, Tensor>> = BTreeMap::new();
        let mut stray = Vec::new();
        for (key, t) in tensors {
            match PARTS.iter().find(|(s, _)| key.ends_with(s)) {
                Some((suffix, part)) => {
                    let module = key[..key.len() - suffix.len()].to_string();
                    modules.entry(module).or_default().insert(part, t);
                }
                None => stray.push(key),
            }
        }
        let mut adapters = BTreeMap::new();
        let mut unsupported = Vec::new();
        for (module, mut parts) in modules {
            if let Some(why) = parts.keys().find(|p| p.starts_with("unsupported")) {
                unsupported.push(format!("{module} ({})", &why["unsupported: ".len()..]));
                continue;
            }
            let alpha = match parts.remove("alpha") {
                Some(a) if a.numel() == 1 => Some(a.to_kind(Kind::Double).double_value(&[])),
                Some(a) => {
                    return Err(format!("{source}: {module}.alpha has shape {:?}", a.size()))
                }
                None => None,
            };
            let names: BTreeSet<&str> = parts.keys().copied().collect();
            let adapter = if names == BTreeSet::from(["up", "down"]) {
                let (up, down) = (parts.remove("up").unwrap(), parts.remove("down").unwrap());
                let (us, ds) = (up.size(), down.size());
                if us.len() < 2 || ds.len() < 2 || us[1] != ds[0] {
                    return Err(format!(
                        "{source}: {module}: up {us:?} and down {ds:?} do not multiply"
                    ));
                }
                Adapter::Lora { up, down, alpha }
            } else if names == BTreeSet::from(["w1a", "w1b", "w2a", "w2b"]) {
                let mut take = |k| parts.remove(k).unwrap();
                Adapter::LoHa {
                    w1a: take("w1a"),
                    w1b: take("w1b"),
                    w2a: take("w2a"),
                    w2b: take("w2b"),
                    alpha,
                }
            } else {
                unsupported.push(format!(
                    "{module} (incomplete: has {})",
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ));
                continue;
            };
            adapters.insert(module, adapter);
        }
        Ok(LoraFile {
            source: source.to_string(),
            modules: adapters.keys().cloned().collect(),
            adapters: Mutex::new(adapters),
            unsupported,
            stray,
            hash: 0,
        })
    }

    /// For one model part: parameter name -> the file's module name, and the
    /// modules of the file the index does not know (left to other parts).
    pub fn matches<'a>(&'a self, index: &KeyIndex) -> BTreeMap<String, &'a str> {
        self.modules
            .iter()
            .filter_map(|m| Some((index.lookup(m)?.to_string(), m.as_str())))
            .collect()
    }
}

impl LoraFile {
    /// ΔW of `module` (float32, before strength) shaped as `shape`.
    pub fn delta(&self, module: &str, shape: &[i64]) -> Result<Tensor, String> {
        let adapters = self
            .adapters
            .lock()
            .map_err(|_| format!("{}: poisoned by an earlier panic", self.source))?;
        let adapter = adapters
            .get(module)
            .ok_or_else(|| format!("{}: no module {module}", self.source))?;
        adapter
            .delta(shape)
            .map_err(|e| format!("{}: {module} {e}", self.source))
    }
}

/// The shown part of a long list.
pub fn short_list(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(8).map(String::as_str).collect();
    if items.len() > 8 {
        format!("{} ... and {} more", shown.join(", "), items.len() - 8)
    } else {
        shown.join(", ")
    }
}
