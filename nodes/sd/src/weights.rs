//! Loading named weights with a complete report of what did not fit: every
//! missing key, every unexpected key and every shape mismatch, at once.
//! Models are plain structs of tensors built by taking names from [`Weights`].
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A set of named tensors being consumed by a model's constructor.
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
    taken: BTreeSet<String>,
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
        Weights {
            tensors,
            taken: BTreeSet::new(),
            missing: Vec::new(),
            mismatched: Vec::new(),
            kind,
            device,
            source: source.to_string(),
        }
    }

    /// Reads every tensor of a .safetensors file, as stored (any dtype).
    pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>, String> {
        Tensor::read_safetensors(path)
            .map(|v| v.into_iter().collect())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    /// The tensor `name` with `shape` (converted to the compute dtype and
    /// device); records a missing key or a shape mismatch and returns zeros so
    /// that construction can go on and report everything.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Tensor {
        match self.tensors.get(name) {
            Some(t) => {
                self.taken.insert(name.to_string());
                if t.size() != shape {
                    self.mismatched
                        .push(format!("{name}: expected {shape:?}, found {:?}", t.size()));
                    return Tensor::zeros(shape, (self.kind, self.device));
                }
                t.to_kind(self.kind).to_device(self.device)
            }
            None => {
                self.missing.push(name.to_string());
                Tensor::zeros(shape, (self.kind, self.device))
            }
        }
    }

    /// Like `take`, for optional parameters (e.g. a bias some layers lack).
    pub fn take_opt(&mut self, name: &str, shape: &[i64]) -> Option<Tensor> {
        self.tensors
            .contains_key(name)
            .then(|| self.take(name, shape))
    }

    /// The shape of `name`, if present (for inferring an architecture).
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.tensors.get(name).map(|t| t.size())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Succeeds only when every key was taken with the right shape and none
    /// is left over; otherwise lists all the problems.
    pub fn finish(self) -> Result<(), String> {
        let unexpected: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !self.taken.contains(*k))
            .collect();
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
