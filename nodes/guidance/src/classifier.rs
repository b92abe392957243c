//! Noise-aware classifiers p_φ(y | x_t, t) as TorchScript modules, and the
//! gradient ∇_{x_t} Σ_i w_i·log p_φ(y_i | x_t) that classifier guidance needs
//! (Dhariwal & Nichol 2021, Sec. 4), by libtorch autograd through the module.
//!
//! Contract: `forward(x_t, t) -> logits [B, K]`, with `t` a float32 tensor [B]
//! holding the (integer) timestep, the same convention as UNetStep's
//! TorchScript denoisers. The logits may be unnormalised; log_softmax is
//! applied here. Samples must be classified independently (no batch
//! statistics: the module runs in eval mode), since the gradient of the
//! batch sum is taken as each sample's gradient.
use diffgraph_sdk::prelude::*;

/// Port type of loaded classifiers.
pub const CLASSIFIER: &str = "CLASSIFIER";

/// A loaded classifier (the `CLASSIFIER` object).
pub struct Classifier {
    pub module: tch::CModule,
    pub path: String,
}

pub struct LoadClassifier;

impl Node for LoadClassifier {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadClassifier", "guidance")
            .description(
                "Loads a noise-aware classifier p(y | x_t, t) for classifier guidance: a TorchScript module \
                 (torch.jit.save) with forward(x_t, t) -> logits [B, K], t a float tensor [B] of timesteps. \
                 It is put in eval mode on the run's device.",
            )
            .input(InputSpec::string("path").file().doc("a TorchScript file"))
            .output(OutputSpec::new("classifier", PortType::object(CLASSIFIER)))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let path = inputs.str("path")?;
        let mut module = tch::CModule::load_on_device(path, ctx.device()).map_err(|e| {
            NodeError::new(format!(
                "cannot load the TorchScript classifier {path}: {e}"
            ))
        })?;
        module.f_set_eval()?;
        let classifier = Classifier {
            module,
            path: path.to_string(),
        };
        Ok(vec![Object::new(CLASSIFIER, classifier).into()])
    }
}

/// The guidance targets: classes y_i with weights w_i (the objective is
/// Σ_i w_i·log p(y_i | x_t); one target with weight 1 is the paper's log p(y | x_t)),
/// shared by the whole batch, or
/// one label per sample (class-conditional sampling of a batch of different
/// classes: guided-diffusion's `cond_fn` gradient of
/// Σ_i log p(y_i | x_i, t)).
#[derive(Debug)]
pub struct Targets {
    pub classes: Vec<i64>,
    pub weights: Vec<f64>,
    /// `labels` [B] (int64): each sample's own class; `classes` is empty then.
    pub per_sample: Option<Tensor>,
}

impl Targets {
    /// Reads `labels` (LIST<INT> or an integer TENSOR [B], one per sample),
    /// or `target` (LIST<INT>) and the optional `target_weights`
    /// (LIST<FLOAT>, each 1 when absent).
    pub fn from_inputs(inputs: &Inputs) -> Result<Targets, NodeError> {
        let has = |n: &str| -> Result<bool, NodeError> {
            Ok(!matches!(inputs.get(n)?, InputValue::None))
        };
        match (has("labels")?, has("target")?) {
            (true, true) => return Err("give either `target` (classes for every sample) or `labels` (one per sample), not both".into()),
            (false, false) => return Err("give `target` (classes for every sample) or `labels` (one per sample)".into()),
            (true, false) => {
                let y = match inputs.get("labels")? {
                    InputValue::List(_) => Tensor::from_slice(&inputs.int_list("labels")?),
                    InputValue::Tensor(t) if !t.is_floating_point() && t.dim() == 1 => t.to_kind(Kind::Int64),
                    _ => return Err("input `labels`: expected a list of ints or an integer tensor [B]".into()),
                };
                return Ok(Targets { classes: Vec::new(), weights: Vec::new(), per_sample: Some(y) });
            }
            (false, true) => {}
        }
        let classes = inputs.int_list("target")?;
        let weights = match inputs.get("target_weights")? {
            InputValue::None => vec![1.0; classes.len()],
            _ => inputs
                .list("target_weights")?
                .iter()
                .map(|v| {
                    v.as_float().ok_or_else(|| {
                        NodeError::new("input `target_weights`: expected a list of floats")
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Targets::new(classes, weights)
    }

    pub fn new(classes: Vec<i64>, weights: Vec<f64>) -> Result<Targets, NodeError> {
        if classes.is_empty() {
            return Err("input `target`: give at least one class index".into());
        }
        if weights.len() != classes.len() {
            return Err(format!(
                "input `target_weights` has {} weights for {} targets; give one weight per target",
                weights.len(),
                classes.len()
            )
            .into());
        }
        Ok(Targets {
            classes,
            weights,
            per_sample: None,
        })
    }
}

/// ∇_x Σ_i w_i·log_softmax(f(x, t))[:, y_i] per sample (or, with per-sample
/// labels, ∇_x Σ_b log_softmax(f(x, t))[b, y_b]), and that objective
/// [B] (detached), computed with autograd on a detached copy of `x` (grad mode
/// is switched on for the call, whatever the caller's mode).
pub fn log_prob_grad(
    module: &tch::CModule,
    x: &Tensor,
    timestep: f64,
    targets: &Targets,
) -> Result<(Tensor, Tensor), NodeError> {
    tch::with_grad(|| {
        let batch = *x
            .size()
            .first()
            .ok_or("input `sample`: a scalar has no batch dimension")?;
        let xg = x.f_detach()?.f_set_requires_grad(true)?;
        let t = Tensor::f_full([batch], timestep, (Kind::Float, x.device()))?;
        let logits = module
            .forward_ts(&[&xg, &t])
            .map_err(|e| NodeError::new(format!("the classifier's forward(x_t, t) failed: {e}")))?;
        let size = logits.size();
        let k = match size.as_slice() {
            [b, k] if *b == batch => *k,
            _ => {
                return Err(NodeError::new(format!(
                    "the classifier returned logits of shape {size:?}; expected [{batch}, K]"
                )))
            }
        };
        let log_p = logits.f_log_softmax(1, Kind::Float)?;
        if let Some(y) = &targets.per_sample {
            let n = y.size()[0];
            if n != batch && n != 1 {
                return Err(format!("input `labels`: {n} labels for a batch of {batch}").into());
            }
            let y = y.f_to_device(x.device())?.f_expand([batch], false)?;
            let (lo, hi) = (y.min().int64_value(&[]), y.max().int64_value(&[]));
            if lo < 0 || hi >= k {
                return Err(format!("input `labels`: classes {lo}..={hi} are not all among the classifier's {k} classes (0..{k})").into());
            }
            let objective = log_p
                .f_gather(1, &y.f_unsqueeze(1)?, false)?
                .f_squeeze_dim(1)?;
            let total = objective.f_sum(Kind::Float)?;
            let mut grads = Tensor::f_run_backward(&[&total], &[&xg], false, false)?;
            let grad = grads.pop().ok_or("autograd returned no gradient")?;
            return Ok((grad.f_to_kind(x.kind())?, objective.f_detach()?));
        }
        let mut objective = Tensor::f_zeros([batch], (Kind::Float, x.device()))?;
        for (&y, &w) in targets.classes.iter().zip(&targets.weights) {
            if !(0..k).contains(&y) {
                return Err(format!(
                    "input `target`: class {y} is not among the classifier's {k} classes (0..{k})"
                )
                .into());
            }
            objective = objective.f_add(&log_p.f_select(1, y)?.f_mul_scalar(w)?)?;
        }
        let total = objective.f_sum(Kind::Float)?;
        let mut grads = Tensor::f_run_backward(&[&total], &[&xg], false, false)?;
        let grad = grads.pop().ok_or("autograd returned no gradient")?;
        Ok((grad.f_to_kind(x.kind())?, objective.f_detach()?))
    })
}
