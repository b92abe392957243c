//! Loading named weights with a complete report of what did not fit: every
//! missing key, every unexpected key and every shape mismatch, at once.
//! Models are plain structs of tensors built by taking names from [`Weights`].
//!
//! Memory: a taken tensor leaves the set, so the stored copy is freed as soon
//! as the model holds its converted one (or is the model's, when dtype and
//! device already match); with the per-tensor reader
//! ([`crate::safetensors`]) loading peaks at the larger of the checkpoint and
//! the model, plus one tensor.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A set of named tensors being consumed by a model's constructor.
pub struct Weights {
    /// Not yet taken.
    tensors: BTreeMap<String, Tensor>,
    /// Every name's stored shape, taken or not.
    shapes: BTreeMap<String, Vec<i64>>,
    taken: BTreeSet<String>,
    /// Each taken tensor as the model holds it (shallow clones: the same
    /// storage), by name: what LoRA patches in place ([`Weights::params`]).
    params: BTreeMap<String, Tensor>,
    missing: Vec<String>,
    mismatched: Vec<String>,
    /// Dtype the model computes in; weights are converted on take.
    pub kind: Kind,
    pub device: Device,
    /// Where the weights came from, for messages.
    pub source: String,
}

impl Weights {
    pub fn new(
        tensors: BTreeMap<String, Tensor>,
        kind: Kind,
        device: Device,
        source: &str,
    ) -> Weights {
        let shapes = tensors.iter().map(|(k, t)| (k.clone(), t.size())).collect();
        Weights {
            tensors,
            shapes,
            taken: BTreeSet::new(),
            params: BTreeMap::new(),
            missing: Vec::new(),
            mismatched: Vec::new(),
            kind,
            device,
            source: source.to_string(),
        }
    }

    /// Reads every tensor of a .safetensors file, as stored (any dtype), one
    /// tensor at a time ([`crate::safetensors::read`]).
    pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>, String> {
        crate::safetensors::read(path)
    }

    /// The tensor `name` with `shape` (converted to the compute dtype and
    /// device); records a missing key or a shape mismatch and returns zeros so
    /// that construction can go on and report everything.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Tensor {
        // Between tensors (each is converted and moved): a Ctrl-C ends a
        // long model construction here.
        diffgraph_sdk::interrupt::check();
        if self.taken.contains(name) {
            // Taken before: not in `tensors` any more; a model takes each
            // name once, so this is a bug in the model's constructor.
            self.mismatched.push(format!("{name}: taken twice"));
            return Tensor::zeros(shape, (self.kind, self.device));
        }
        match self.tensors.remove(name) {
            Some(t) => {
                self.taken.insert(name.to_string());
                if t.size() != shape {
                    self.mismatched
                        .push(format!("{name}: expected {shape:?}, found {:?}", t.size()));
                    return Tensor::zeros(shape, (self.kind, self.device));
                }
                let t = t.to_kind(self.kind).to_device(self.device);
                self.params.insert(name.to_string(), t.shallow_clone());
                t
            }
            None => {
                self.missing.push(name.to_string());
                // Recorded too: a model built to be filled in place
                // (`UNet::random`) keeps its parameter names.
                let t = Tensor::zeros(shape, (self.kind, self.device));
                self.params.insert(name.to_string(), t.shallow_clone());
                t
            }
        }
    }

    /// Like `take`, for optional parameters (e.g. a bias some layers lack).
    pub fn take_opt(&mut self, name: &str, shape: &[i64]) -> Option<Tensor> {
        self.shapes
            .contains_key(name)
            .then(|| self.take(name, shape))
    }

    /// The tensors taken so far, by name, sharing storage with the model's
    /// (patching one in place patches the model: [`crate::lora`]).
    pub fn params(&self) -> BTreeMap<String, Tensor> {
        self.params
            .iter()
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect()
    }

    /// The shape of `name`, if present (for inferring an architecture).
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.shapes.get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.shapes.keys()
    }

    /// Succeeds only when every key was taken with the right shape and none
    /// is left over; otherwise lists all the problems.
    pub fn finish(self) -> Result<(), String> {
        let unexpected: Vec<&String> = self.tensors.keys().collect();
        if self.missing.is_empty() && self.mismatched.is_empty() && unexpected.is_empty() {
            return Ok(());
        }
        let mut msg = format!("{} does not match the model:", self.source);
        let list = |title: &str, items: Vec<&String>, msg: &mut String| {
            if !items.is_empty() {
                let shown: Vec<&str> = items.iter().take(20).map(|s| s.as_str()).collect();
                let more = if items.len() > 20 {
                    format!(" ... and {} more", items.len() - 20)
                } else {
                    String::new()
                };
                msg.push_str(&format!(
                    "\n  {title} ({}): {}{more}",
                    items.len(),
                    shown.join(", ")
                ));
            }
        };
        list("missing keys", self.missing.iter().collect(), &mut msg);
        list(
            "shape mismatches",
            self.mismatched.iter().collect(),
            &mut msg,
        );
        list("unexpected keys", unexpected, &mut msg);
        Err(msg)
    }
}
