//! Patching weights in place, restorably, for the patch list a handle asks for.
//!
//! A loaded model is shared by every handle made from it (the checkpoint
//! loader's MODEL, each LoRA loader's MODEL): [`PatchedModel`] is one such
//! handle, the shared [`Patchable`] model plus its own list of patches.
//! Before a handle computes, [`Patchable::sync`] brings the weights to what
//! its list asks: per parameter, the list's contributions (file hash,
//! strength) are compared with what was applied last; equal ones are left
//! alone, others are restored from the kept original and re-patched. So
//! switching between handles, or changing one LoRA's strength, re-patches
//! only the weights whose patches differ, and the unpatched model is
//! always one sync away (the originals are kept while a weight is patched).
//! This is ComfyUI's `ModelPatcher` (`comfy/model_patcher.py`: backups,
//! `patch_weight_to_device`, `unpatch_model`) with the bookkeeping per
//! weight instead of per model.
use super::file::LoraFile;
use super::keys::{KeyIndex, Rule};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tch::{Kind, Tensor};

/// One LoRA file applied to one model part at a strength.
#[derive(Clone)]
pub struct Patch {
    pub file: Arc<LoraFile>,
    /// Parameter name -> the file's module name.
    pub targets: Arc<BTreeMap<String, String>>,
    pub strength: f64,
}

/// What a weight holds now: the (file hash, strength bits) applied, and the
/// original to restore.
struct Applied {
    signature: Vec<(u64, u64)>,
    original: Tensor,
}

/// A model and its parameters by name (sharing storage with the model's
/// layers), with what is patched into them.
pub struct Patchable<M> {
    pub model: M,
    params: BTreeMap<String, Tensor>,
    applied: BTreeMap<String, Applied>,
}

impl<M> Patchable<M> {
    pub fn new(model: M, params: BTreeMap<String, Tensor>) -> Patchable<M> {
        Patchable {
            model,
            params,
            applied: BTreeMap::new(),
        }
    }

    /// Brings every weight to original + Σ strength·ΔW over `patches` (in
    /// list order; float32 sums, cast to the weight's dtype once, as
    /// ComfyUI's `calculate_weight`). Returns how many weights were written.
    pub fn sync(&mut self, patches: &[Patch]) -> Result<usize, String> {
        let mut wanted: BTreeMap<&str, Vec<&Patch>> = BTreeMap::new();
        for p in patches {
            for param in p.targets.keys() {
                wanted.entry(param.as_str()).or_default().push(p);
            }
        }
        let signature = |ps: &[&Patch]| -> Vec<(u64, u64)> {
            ps.iter()
                .map(|p| (p.file.hash, p.strength.to_bits()))
                .collect()
        };
        let mut names: Vec<String> = self.applied.keys().cloned().collect();
        names.extend(wanted.keys().map(|k| k.to_string()));
        names.sort();
        names.dedup();
        let _guard = tch::no_grad_guard();
        let mut written = 0;
        for name in names {
            let want = wanted.get(name.as_str()).map(|ps| signature(ps));
            let now = self.applied.get(&name).map(|a| &a.signature);
            if want.as_ref() == now {
                continue;
            }
            let param = self
                .params
                .get(&name)
                .ok_or_else(|| format!("the model has no parameter {name}"))?;
            let original = match self.applied.remove(&name) {
                Some(a) => a.original,
                None => param.copy(),
            };
            written += 1;
            let Some(want) = want else {
                param
                    .shallow_clone()
                    .f_copy_(&original)
                    .map_err(|e| e.to_string())?;
                continue;
            };
            let shape = param.size();
            let mut w = original.to_kind(Kind::Float);
            for p in &wanted[name.as_str()] {
                let module = &p.targets[&name];
                let delta = p.file.delta(module, &shape)?;
                let delta = delta.to_device(w.device());
                w = w.f_add(&(delta * p.strength)).map_err(|e| e.to_string())?;
            }
            param
                .shallow_clone()
                .f_copy_(&w)
                .map_err(|e| e.to_string())?;
            self.applied.insert(
                name,
                Applied {
                    signature: want,
                    original,
                },
            );
        }
        Ok(written)
    }

    /// How many weights are patched now.
    pub fn patched(&self) -> usize {
        self.applied.len()
    }
}

/// A handle on a shared model with its own patch list.
pub struct PatchedModel<M> {
    shared: Arc<Mutex<Patchable<M>>>,
    pub index: Arc<KeyIndex>,
    patches: Vec<Patch>,
}

impl<M> Clone for PatchedModel<M> {
    fn clone(&self) -> Self {
        PatchedModel {
            shared: self.shared.clone(),
            index: self.index.clone(),
            patches: self.patches.clone(),
        }
    }
}

impl<M> PatchedModel<M> {
    /// `params`: the model's parameters by name (sharing its storage);
    /// `rule`: how LoRA files name them.
    pub fn new(model: M, params: BTreeMap<String, Tensor>, rule: Rule) -> PatchedModel<M> {
        let index = KeyIndex::new(rule, &params);
        PatchedModel::indexed(model, params, index)
    }

    /// With an index built by the caller (extra spellings added with
    /// [`KeyIndex::add_alias`]).
    pub fn indexed(model: M, params: BTreeMap<String, Tensor>, index: KeyIndex) -> PatchedModel<M> {
        PatchedModel {
            index: Arc::new(index),
            shared: Arc::new(Mutex::new(Patchable::new(model, params))),
            patches: Vec::new(),
        }
    }

    /// This handle with the model's weights indexed by another rule (the
    /// same parameters; for a part whose file names depend on the model
    /// around it, e.g. the SDXL refiner's only text encoder).
    pub fn with_rule(mut self, rule: Rule) -> PatchedModel<M> {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let index = KeyIndex::new(rule, &shared.params);
        drop(shared);
        self.index = Arc::new(index);
        self
    }

    /// The same model with one more patch after this handle's.
    pub fn with(&self, patch: Patch) -> PatchedModel<M> {
        let mut next = self.clone();
        next.patches.push(patch);
        next
    }

    pub fn patches(&self) -> &[Patch] {
        &self.patches
    }

    /// The model, locked, with this handle's patches applied.
    pub fn lock(&self) -> Result<MutexGuard<'_, Patchable<M>>, String> {
        let mut guard = self
            .shared
            .lock()
            .map_err(|_| "the model was poisoned by an earlier panic".to_string())?;
        guard.sync(&self.patches)?;
        Ok(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }

    fn file(hash: u64, up: &[f32], down: &[f32]) -> Arc<LoraFile> {
        let mut tensors = BTreeMap::new();
        tensors.insert("m.lora_up.weight".to_string(), t(up, &[2, 1]));
        tensors.insert("m.lora_down.weight".to_string(), t(down, &[1, 2]));
        let mut f = LoraFile::from_tensors(tensors, "test").unwrap();
        f.hash = hash;
        Arc::new(f)
    }

    fn patch(file: &Arc<LoraFile>, strength: f64) -> Patch {
        let targets = BTreeMap::from([("w".to_string(), "m".to_string())]);
        Patch {
            file: file.clone(),
            targets: Arc::new(targets),
            strength,
        }
    }

    #[test]
    fn sync_patches_restores_and_skips_what_is_already_applied() {
        let w = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        let mut m = Patchable::new((), BTreeMap::from([("w".to_string(), w.shallow_clone())]));
        let (a, b) = (
            file(1, &[1.0, 2.0], &[3.0, 4.0]),
            file(2, &[1.0, 0.0], &[0.0, 1.0]),
        );
        let values = |w: &Tensor| Vec::<f32>::try_from(w.reshape([-1])).unwrap();
        assert_eq!(m.sync(&[patch(&a, 1.0)]).unwrap(), 1);
        assert_eq!(values(&w), [3.0, 4.0, 6.0, 8.0], "up·down in place");
        assert_eq!(m.sync(&[patch(&a, 1.0)]).unwrap(), 0, "nothing changed");
        assert_eq!(m.sync(&[patch(&a, 0.5)]).unwrap(), 1);
        assert_eq!(
            values(&w),
            [1.5, 2.0, 3.0, 4.0],
            "from the original, not on top"
        );
        m.sync(&[patch(&a, 0.5), patch(&b, 2.0)]).unwrap();
        assert_eq!(values(&w), [1.5, 4.0, 3.0, 4.0], "stacked");
        assert_eq!(m.sync(&[]).unwrap(), 1);
        assert_eq!(values(&w), [0.0; 4], "restored");
        assert_eq!(m.patched(), 0);
    }

    #[test]
    fn loha_is_the_elementwise_product_of_two_low_rank_products() {
        let mut tensors = BTreeMap::new();
        tensors.insert("m.hada_w1_a".to_string(), t(&[1.0, 2.0], &[2, 1]));
        tensors.insert("m.hada_w1_b".to_string(), t(&[1.0, 1.0], &[1, 2]));
        tensors.insert("m.hada_w2_a".to_string(), t(&[3.0, 1.0], &[2, 1]));
        tensors.insert("m.hada_w2_b".to_string(), t(&[1.0, 2.0], &[1, 2]));
        tensors.insert("m.alpha".to_string(), Tensor::from(0.5f32));
        let f = LoraFile::from_tensors(tensors, "test").unwrap();
        let d = f.delta("m", &[2, 2]).unwrap();
        // (w1a·w1b) = [[1,1],[2,2]], (w2a·w2b) = [[3,6],[1,2]], alpha/rank = 0.5.
        assert_eq!(
            Vec::<f32>::try_from(d.reshape([-1])).unwrap(),
            [1.5, 3.0, 1.0, 2.0]
        );
    }

    #[test]
    fn unsupported_and_incomplete_modules_are_reported() {
        let mut tensors = BTreeMap::new();
        tensors.insert("a.lora_up.weight".to_string(), t(&[1.0, 2.0], &[2, 1]));
        tensors.insert("b.lora_up.weight".to_string(), t(&[1.0, 2.0], &[2, 1]));
        tensors.insert("b.lora_down.weight".to_string(), t(&[1.0, 2.0], &[1, 2]));
        tensors.insert("b.dora_scale".to_string(), t(&[1.0, 2.0], &[2, 1]));
        tensors.insert("c.something".to_string(), t(&[1.0], &[1]));
        let f = LoraFile::from_tensors(tensors, "test").unwrap();
        assert!(f.modules.is_empty());
        assert_eq!(f.unsupported.len(), 2, "{:?}", f.unsupported);
        assert_eq!(f.stray, ["c.something"]);
    }
}
