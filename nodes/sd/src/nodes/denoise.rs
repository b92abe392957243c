//! `UNetStep` (alias `Denoise`): one evaluation of a denoiser of any family
//! per loop iteration, the conditional and unconditional branches batched
//! into one call as diffusers' pipelines do, and classifier-free guidance.
//!
//! **The g = 1 rule has one owner, this node**: with `uncond` and
//! `guidance_scale` it outputs the guided `model_output` itself (the formula:
//! `diffgraph_diffusion::cfg::cfg_mix`, shared with the guidance plugin's
//! `CFGMixer`), and at g = 1 it does not compute the unconditional branch.
//! A graph thus states g once. `output_cond`/`output_uncond` stay for
//! external mixers; after a skip `output_uncond` *is* `output_cond` (the same
//! tensor), which `CFGMixer` refuses to mix at any g other than 1.
use super::labels::class_labels;
use crate::family::{Conditioning, Model, MODEL};
use diffgraph_diffusion::cfg::cfg_mix;
use diffgraph_sdk::prelude::*;

/// Classifier-free guidance settings: diffusers' `guidance_scale` g = w + 1
/// and `guidance_rescale` φ.
#[derive(Clone, Copy, Debug)]
pub struct Guidance {
    pub scale: f64,
    pub rescale: f64,
}

/// What one step computes: the raw branches (float32) and the output the
/// scheduler steps with.
pub struct StepOutput {
    pub cond: Tensor,
    /// `cond` itself (the same tensor) when the branch was not computed.
    pub uncond: Tensor,
    pub model_output: Tensor,
}

/// Evaluates `model` on `x` at `t`: `cond` alone, or with `uncond` in one
/// batch (unconditional first), and mixes when `guidance` is given. Refuses
/// conditioning the family cannot use or lacks (before evaluating anything)
/// and a guidance scale other than 1 without an unconditional branch.
pub fn evaluate(
    model: &Model,
    x: &Tensor,
    t: f64,
    cond: &Conditioning,
    uncond: Option<&Conditioning>,
    guidance: Option<Guidance>,
) -> Result<StepOutput, NodeError> {
    model.check(cond, "cond")?;
    if let Some(u) = uncond {
        model.check(u, "uncond")?;
    }
    if let Some(g) = guidance.filter(|g| g.scale != 1.0 && uncond.is_none()) {
        return Err(format!(
            "guidance_scale {} needs the unconditional branch: connect `uncond` (or \
             `uncond_class_labels`), or leave guidance_scale out for the conditional model alone",
            g.scale
        )
        .into());
    }
    let skip_uncond = guidance.is_some_and(|g| g.scale == 1.0);
    let d = &model.denoiser;
    check_sample(x)?;
    let (batch, kind) = (x.size()[0], d.kind());
    let input = x.f_to_kind(kind)?;
    let cond = cond.for_batch(batch, kind, "cond")?;
    let (out_c, out_u) = match uncond {
        Some(u) if !skip_uncond => {
            let u = u.for_batch(batch, kind, "uncond")?;
            let both = d.predict(
                &Tensor::f_cat(&[&input, &input], 0)?,
                t,
                &Conditioning::cat(&u, &cond)?,
            )?;
            let halves = both.f_to_kind(Kind::Float)?.f_chunk(2, 0)?;
            (halves[1].shallow_clone(), Some(halves[0].shallow_clone()))
        }
        _ => (d.predict(&input, t, &cond)?.f_to_kind(Kind::Float)?, None),
    };
    let model_output = match (guidance, &out_u) {
        (Some(g), Some(u)) => mix(model, &out_c, u, g)?,
        _ => out_c.shallow_clone(),
    };
    Ok(StepOutput {
        uncond: out_u.unwrap_or_else(|| out_c.shallow_clone()),
        cond: out_c,
        model_output,
    })
}

/// A sample the denoisers can take: a batch dimension first and no zero
/// dimension (libtorch's convolutions would abort on an empty one, not
/// return an error). Families check their own layout (a U-Net's [B,C,H,W],
/// a TorchScript model's [B, D]).
pub fn check_sample(x: &Tensor) -> Result<(), NodeError> {
    let shape = x.size();
    if shape.len() < 2 || shape.contains(&0) {
        return Err(format!(
            "input `sample`: expected a batch of samples ([batch, ...], e.g. a latent \
             [batch, channels, height, width]) with no zero dimension, got shape {shape:?}"
        )
        .into());
    }
    Ok(())
}

/// The guided output. For learned-variance models only the prediction
/// channels are mixed and the conditional branch's variance channels follow
/// (GLIDE's `model_fn`, glide_text2im notebooks: `eps, rest = model_out[:, :3],
/// model_out[:, 3:]`, guided eps concatenated with `rest`).
fn mix(model: &Model, cond: &Tensor, uncond: &Tensor, g: Guidance) -> Result<Tensor, NodeError> {
    let cfg = |c: &Tensor, u: &Tensor| cfg_mix(c, u, g.scale, g.rescale).map_err(String::from);
    if model.denoiser.output_layout().learned_variance.is_none() {
        return Ok(cfg(cond, uncond)?);
    }
    let channels = cond.size().get(1).copied().unwrap_or(0);
    if channels % 2 != 0 {
        return Err(format!(
            "the {} reports learned variance channels, but its output has {channels} channels (expected prediction + variance, an even number)",
            model.denoiser.family()
        )
        .into());
    }
    let (c, u) = (cond.chunk(2, 1), uncond.chunk(2, 1));
    Ok(Tensor::cat(&[cfg(&c[0], &u[0])?, c[1].shallow_clone()], 1))
}

/// One model evaluation per denoising step (see the module doc).
pub struct UNetStep;

impl UNetStep {
    fn schema_named(name: &str) -> NodeSchema {
        NodeSchema::new(name, "sampling")
            .description(
                "Evaluates the model (any family) on the (already scaled) sample at a timestep. With an \
                 unconditional branch (`uncond` / `uncond_class_labels`) both branches run in one batched \
                 call, and with guidance_scale g the node outputs the classifier-free guided model_output \
                 uncond + g·(cond − uncond) (Ho & Salimans 2022; diffusers' guidance_scale, optional \
                 guidance_rescale): state g here, once. At g = 1 the unconditional branch is not computed \
                 (output_uncond is output_cond). Without guidance_scale, model_output is output_cond.",
            )
            .input(InputSpec::new("model", PortType::object(MODEL)))
            .input(InputSpec::new("sample", PortType::Latent))
            .input(InputSpec::float("timestep"))
            .input(
                InputSpec::new("cond", PortType::Conditioning)
                    .optional()
                    .doc("the text context (families that use one)"),
            )
            .input(InputSpec::new("uncond", PortType::Conditioning).optional())
            .input(
                InputSpec::new("class_labels", PortType::Any)
                    .optional()
                    .doc("class-conditional families: an int, LIST<INT> or an integer TENSOR [1 or B]"),
            )
            .input(
                InputSpec::new("uncond_class_labels", PortType::Any)
                    .optional()
                    .doc("the unconditional branch's labels (e.g. the null class)"),
            )
            .input(InputSpec::tensor("pooled").optional().doc("SDXL: the prompt's pooled text embedding (CLIPTextEncode's `pooled`)"))
            .input(InputSpec::tensor("uncond_pooled").optional().doc("SDXL: the negative prompt's pooled embedding"))
            .input(InputSpec::tensor("time_ids").optional().doc("SDXL: SDXLTimeIds' time ids (sizes and crop; refiner: aesthetic score)"))
            .input(
                InputSpec::tensor("uncond_time_ids")
                    .optional()
                    .doc("SDXL: the unconditional branch's time ids (default: `time_ids`; the refiner's negative aesthetic score)"),
            )
            .input(InputSpec::float("guidance_scale").optional().doc("diffusers' guidance_scale g = w + 1"))
            .input(
                InputSpec::float("guidance_rescale")
                    .default(0.0)
                    .range(0.0, 1.0)
                    .doc("φ of Lin et al. 2023 (diffusers' guidance_rescale); 0 = off; needs guidance_scale"),
            )
            .output(OutputSpec::new("output_cond", PortType::Tensor))
            .output(OutputSpec::new("output_uncond", PortType::Tensor))
            .output(
                OutputSpec::new("model_output", PortType::Tensor)
                    .doc("guided with guidance_scale, else output_cond: for SchedulerStep"),
            )
    }

    fn run_step(inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let model: &Model = inputs.object("model")?;
        let x = inputs.tensor("sample")?;
        let tensor =
            |name: &str| Ok::<_, NodeError>(inputs.opt_tensor(name)?.map(Tensor::shallow_clone));
        let branch =
            |context: &str, pooled: &str, labels: &str| -> Result<Conditioning, NodeError> {
                Ok(Conditioning {
                    context: tensor(context)?,
                    pooled: tensor(pooled)?,
                    class_labels: class_labels(inputs, labels, x.device())?,
                    ..Conditioning::default()
                })
            };
        let mut cond = branch("cond", "pooled", "class_labels")?;
        cond.time_ids = tensor("time_ids")?;
        // The unconditional branch's time ids default to the conditional's
        // (diffusers' negative_add_time_ids without negative sizes).
        let uncond = match Some(branch("uncond", "uncond_pooled", "uncond_class_labels")?)
            .filter(|u| !u.is_empty())
        {
            Some(mut u) => {
                u.time_ids = match tensor("uncond_time_ids")? {
                    Some(t) => Some(t),
                    None => tensor("time_ids")?,
                };
                Some(u)
            }
            None => None,
        };
        let rescale = inputs.float("guidance_rescale")?;
        let guidance = match inputs.opt_float("guidance_scale")? {
            Some(scale) => Some(Guidance { scale, rescale }),
            None if rescale > 0.0 => {
                return Err(format!(
                    "guidance_rescale {rescale} rescales the guided output: give guidance_scale too"
                )
                .into())
            }
            None => None,
        };
        let out = evaluate(
            model,
            x,
            inputs.float("timestep")?,
            &cond,
            uncond.as_ref(),
            guidance,
        )?;
        Ok(vec![
            out.cond.into(),
            out.uncond.into(),
            out.model_output.into(),
        ])
    }
}

impl Node for UNetStep {
    fn schema(&self) -> NodeSchema {
        UNetStep::schema_named("UNetStep")
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        UNetStep::run_step(inputs)
    }
}

/// `UNetStep` under a family-neutral name: the same node.
pub struct Denoise;

impl Node for Denoise {
    fn schema(&self) -> NodeSchema {
        UNetStep::schema_named("Denoise")
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        UNetStep::run_step(inputs)
    }
}
