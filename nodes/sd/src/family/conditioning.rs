//! What a denoiser is conditioned on, as one struct whose fields are each
//! optional, and what a family makes of each field. A family that needs
//! another kind of conditioning adds a field here (and its row in `FIELDS`),
//! an input to `UNetStep`, and says in its [`Accepts`] whether it uses it.
use diffgraph_sdk::prelude::*;

/// The conditioning of one branch (conditional or unconditional), each
/// field of batch 1 or B.
#[derive(Default)]
pub struct Conditioning {
    /// Text encoder hidden states [B, tokens, dim] (SD's cross-attention context).
    pub context: Option<Tensor>,
    /// Pooled text embedding [B, dim] (SDXL's `text_embeds`).
    pub pooled: Option<Tensor>,
    /// Added time ids [B, n] (SDXL's `add_time_ids`: sizes and crop).
    pub time_ids: Option<Tensor>,
    /// Class labels [B], int64 (ADM, class-conditional LDM).
    pub class_labels: Option<Tensor>,
    /// An attention or inpainting mask.
    pub mask: Option<Tensor>,
}

/// How a family treats one field of a [`Conditioning`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    Required,
    Optional,
    Unused,
}

/// How a family treats each field of a [`Conditioning`].
#[derive(Clone, Copy, Debug)]
pub struct Accepts {
    pub context: Use,
    pub pooled: Use,
    pub time_ids: Use,
    pub class_labels: Use,
    pub mask: Use,
}

impl Accepts {
    /// Text cross-attention alone (SD 1.x/2.x).
    pub const TEXT: Accepts = Accepts {
        context: Use::Required,
        pooled: Use::Unused,
        time_ids: Use::Unused,
        class_labels: Use::Unused,
        mask: Use::Unused,
    };

    /// No text: class labels when the model is class-conditional, else
    /// nothing (guided-diffusion's ADM, latent diffusion's UNet2DModel).
    pub fn class_labels_only(class_cond: bool) -> Accepts {
        Accepts {
            context: Use::Unused,
            pooled: Use::Unused,
            time_ids: Use::Unused,
            class_labels: if class_cond {
                Use::Required
            } else {
                Use::Unused
            },
            mask: Use::Unused,
        }
    }

    fn uses(&self) -> [Use; 5] {
        [
            self.context,
            self.pooled,
            self.time_ids,
            self.class_labels,
            self.mask,
        ]
    }
}

/// Per field: what it is, and the UNetStep inputs that give it for the
/// conditional and the unconditional branch.
const FIELDS: [(&str, &str, &str); 5] = [
    ("a text context", "cond", "uncond"),
    ("a pooled text embedding", "pooled", "uncond_pooled"),
    ("added time ids", "time_ids", "uncond_time_ids"),
    ("class labels", "class_labels", "uncond_class_labels"),
    ("a mask", "mask", "mask"),
];

fn port(i: usize, branch: &str) -> &'static str {
    if branch == "uncond" {
        FIELDS[i].2
    } else {
        FIELDS[i].1
    }
}

impl Conditioning {
    fn fields(&self) -> [Option<&Tensor>; 5] {
        [
            self.context.as_ref(),
            self.pooled.as_ref(),
            self.time_ids.as_ref(),
            self.class_labels.as_ref(),
            self.mask.as_ref(),
        ]
    }

    fn map(
        &self,
        mut f: impl FnMut(usize, &Tensor) -> Result<Tensor, NodeError>,
    ) -> Result<Conditioning, NodeError> {
        let mut out = self.fields().map(|_| None);
        for (i, t) in self.fields().into_iter().enumerate() {
            if let Some(t) = t {
                out[i] = Some(f(i, t)?);
            }
        }
        let [context, pooled, time_ids, class_labels, mask] = out;
        Ok(Conditioning {
            context,
            pooled,
            time_ids,
            class_labels,
            mask,
        })
    }

    /// Nothing given.
    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(Option::is_none)
    }

    /// Errors naming the input when `family` needs a field that is not
    /// given, or is given one it cannot use.
    pub fn check(&self, accepts: &Accepts, family: &str, branch: &str) -> Result<(), NodeError> {
        for (i, (given, usage)) in self.fields().iter().zip(accepts.uses()).enumerate() {
            let (what, input) = (FIELDS[i].0, port(i, branch));
            match (given, usage) {
                (None, Use::Required) => {
                    return Err(format!(
                        "the {family} needs {what} for the {branch} branch: give input `{input}`"
                    )
                    .into())
                }
                (Some(_), Use::Unused) => {
                    return Err(format!(
                        "the {family} cannot use {what}: leave input `{input}` unconnected"
                    )
                    .into())
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every field of batch 1 expanded to `batch` (a conditioning of batch 1
    /// serves every sample); floating fields cast to `kind`, integer ones
    /// (labels) kept.
    pub fn for_batch(
        &self,
        batch: i64,
        kind: Kind,
        branch: &str,
    ) -> Result<Conditioning, NodeError> {
        self.map(|i, t| {
            let t = expand(t, batch, port(i, branch))?;
            Ok(if t.is_floating_point() {
                t.to_kind(kind)
            } else {
                t
            })
        })
    }

    /// The unconditional and conditional branches in one batch, unconditional
    /// first (diffusers' `torch.cat([negative, positive])`); both must give
    /// the same fields.
    pub fn cat(uncond: &Conditioning, cond: &Conditioning) -> Result<Conditioning, NodeError> {
        let u = uncond.fields();
        for (i, (c, u)) in cond.fields().iter().zip(u).enumerate() {
            if c.is_some() != u.is_some() {
                let (given, missing) = if c.is_some() {
                    (port(i, "cond"), port(i, "uncond"))
                } else {
                    (port(i, "uncond"), port(i, "cond"))
                };
                return Err(format!(
                    "input `{given}` gives {} for one branch but `{missing}` gives none for the other: \
                     both branches need the same kinds of conditioning",
                    FIELDS[i].0
                )
                .into());
            }
        }
        cond.map(|i, c| {
            let u = u[i].expect("checked above");
            // Long prompts: 77·k tokens. Different counts are repeated to
            // their least common multiple, as ComfyUI's CONDCrossAttn.concat
            // (comfy/conds.py); attention over a repeated context is the same.
            let (u, c) = &match (i, u.size().as_slice(), c.size().as_slice()) {
                (0, [_, lu, du], [_, lc, dc])
                    if lu != lc
                        && du == dc
                        && lu % CHUNK == 0
                        && lc % CHUNK == 0
                        && *lu > 0
                        && *lc > 0 =>
                {
                    let l = lcm(*lu, *lc);
                    (u.f_repeat([1, l / lu, 1])?, c.f_repeat([1, l / lc, 1])?)
                }
                _ => (u.shallow_clone(), c.shallow_clone()),
            };
            // Prompt and negative prompt from different text encoders (768
            // vs 1024 features, 77 vs 64 tokens) cannot share a batch: say
            // so before libtorch's `cat` would.
            if u.size().get(1..) != c.size().get(1..) {
                return Err(format!(
                    "inputs `{}` and `{}` give {} of different shapes ({:?} and {:?}): \
                     were they encoded with different checkpoints?",
                    port(i, "cond"),
                    port(i, "uncond"),
                    FIELDS[i].0,
                    c.size(),
                    u.size()
                )
                .into());
            }
            Ok(Tensor::f_cat(&[u, c], 0)?)
        })
    }
}

/// The token chunk of long prompts (CLIP's context).
const CHUNK: i64 = crate::tokenizer::MAX_LENGTH as i64;

fn lcm(a: i64, b: i64) -> i64 {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// A tensor of batch 1 serves every sample of the batch.
pub fn expand(c: &Tensor, batch: i64, name: &str) -> Result<Tensor, NodeError> {
    let n = c.size().first().copied().unwrap_or(0);
    if c.dim() == 0 {
        return Err(NodeError::new(format!(
            "input `{name}`: expected a tensor with a batch dimension, got a scalar"
        )));
    }
    if n == batch {
        Ok(c.shallow_clone())
    } else if n == 1 {
        let mut shape = c.size();
        shape[0] = batch;
        Ok(c.f_expand(&shape, false)?)
    } else {
        Err(NodeError::new(format!("input `{name}`: batch of {n} does not match the sample's batch of {batch} (give 1 or {batch})")))
    }
}

/// Errors unless every label is a class index below `classes`.
pub fn check_labels(y: &Tensor, classes: i64, input: &str) -> Result<(), NodeError> {
    let (lo, hi) = (y.min().int64_value(&[]), y.max().int64_value(&[]));
    if lo < 0 || hi >= classes {
        return Err(format!(
            "input `{input}`: class labels must be in 0..{classes}, got {lo}..={hi}"
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(tokens: i64, value: f64) -> Conditioning {
        Conditioning {
            context: Some(Tensor::full(
                [1, tokens, 4],
                value,
                (Kind::Float, Device::Cpu),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn long_prompt_chunks_repeat_to_a_common_length() {
        let both = Conditioning::cat(&context(154, 1.0), &context(231, 2.0)).unwrap();
        let c = both.context.unwrap();
        assert_eq!(c.size(), [2, 462, 4]);
        assert_eq!(c.get(0).sum(Kind::Float).double_value(&[]), 462.0 * 4.0);
        // Not chunks of 77: still the clear error.
        assert!(Conditioning::cat(&context(77, 1.0), &context(64, 1.0)).is_err());
    }
}
