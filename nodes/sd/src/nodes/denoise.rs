//! The denoiser a `MODEL` handle holds (the SD U-Net, or any TorchScript
//! module with forward(x_t, t, context)), and the U-Net step node that
//! evaluates it once per loop iteration, batching the conditional and
//! unconditional branches into one call as diffusers' pipelines do.
use diffgraph_sdk::prelude::*;

/// Port type of loaded denoisers.
pub const MODEL: &str = "MODEL";

/// What predicts the noise (or v, or x0).
pub enum Denoiser {
    /// The Stable Diffusion U-Net (behind a lock: tensors are not Sync).
    Unet(Box<std::sync::Mutex<crate::unet::UNet>>),
    /// forward(x_t, t: float [B], context) -> model output.
    TorchScript(tch::CModule),
}

/// A loaded denoiser and what it predicts, which travels with it so that
/// schedulers and guidance use the right conversion.
pub struct Model {
    pub denoiser: Denoiser,
    pub prediction_type: String,
    /// Dtype the model computes in; inputs are cast to it, outputs back to f32.
    pub kind: Kind,
}

impl Model {
    /// One batched evaluation: `x` [B, ...], `t` the timestep for all of the
    /// batch, `context` [B, ...].
    pub fn predict(&self, x: &Tensor, t: f64, context: &Tensor) -> Result<Tensor, NodeError> {
        let batch = x.size()[0];
        match &self.denoiser {
            Denoiser::Unet(unet) => {
                let unet = unet
                    .lock()
                    .map_err(|_| NodeError::new("the U-Net was poisoned by an earlier panic"))?;
                Ok(unet.try_forward(x, t, context)?)
            }
            Denoiser::TorchScript(m) => {
                let ts = Tensor::full([batch], t, (Kind::Float, x.device()));
                Ok(tch::no_grad(|| {
                    m.forward_ts(&[x.shallow_clone(), ts, context.shallow_clone()])
                })?)
            }
        }
    }
}

pub const PREDICTION_TYPES: &[&str] = &["epsilon", "v_prediction", "sample"];

/// Loads a TorchScript denoiser (see `Denoiser::TorchScript`) for models the
/// project does not implement natively.
pub struct LoadTorchScriptDenoiser;

impl Node for LoadTorchScriptDenoiser {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadTorchScriptDenoiser", "loaders")
            .description(
                "Loads a TorchScript module with forward(x_t, t, context) -> model output (t: float tensor [B]) \
                 as a MODEL for UNetStep; prediction_type says what it predicts.",
            )
            .input(InputSpec::string("path").file().doc("a TorchScript file saved with torch.jit.save"))
            .input(InputSpec::string("prediction_type").default("epsilon").choices(PREDICTION_TYPES))
            .output(OutputSpec::new("model", PortType::object(MODEL)))
            .output(OutputSpec::new("prediction_type", PortType::String))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let path = inputs.str("path")?;
        let mut module = tch::CModule::load_on_device(path, ctx.device())
            .map_err(|e| NodeError::new(format!("cannot load TorchScript module {path}: {e}")))?;
        module.set_eval();
        let prediction_type = inputs.str("prediction_type")?.to_string();
        let model = Model {
            denoiser: Denoiser::TorchScript(module),
            prediction_type: prediction_type.clone(),
            kind: Kind::Float,
        };
        Ok(vec![
            Object::new(MODEL, model).into(),
            prediction_type.into(),
        ])
    }
}

/// One model evaluation per denoising step, conditional and unconditional in
/// one batch (diffusers: `torch.cat([negative, positive])`, latents doubled).
pub struct UNetStep;

impl Node for UNetStep {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("UNetStep", "sampling")
            .description(
                "Evaluates the model on the (already scaled) sample at a timestep. With `uncond` given, the \
                 unconditional and conditional branches run in one batched call; when guidance_scale is 1 \
                 (w = 0) the unconditional branch is not computed and output_uncond is output_cond.",
            )
            .input(InputSpec::new("model", PortType::object(MODEL)))
            .input(InputSpec::new("sample", PortType::Latent))
            .input(InputSpec::float("timestep"))
            .input(InputSpec::new("cond", PortType::Conditioning))
            .input(InputSpec::new("uncond", PortType::Conditioning).optional())
            .input(InputSpec::float("guidance_scale").optional().doc("diffusers' guidance_scale g = w + 1"))
            .output(OutputSpec::new("output_cond", PortType::Tensor))
            .output(OutputSpec::new("output_uncond", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let model: &Model = inputs.object("model")?;
        let x = inputs.tensor("sample")?;
        let t = inputs.float("timestep")?;
        let cond = expand_context(inputs.tensor("cond")?, x.size()[0], "cond")?;
        let skip_uncond = match inputs.get("guidance_scale")? {
            InputValue::None => false,
            v => v.as_float() == Some(1.0),
        };
        let uncond = match inputs.opt_tensor("uncond")? {
            Some(u) if !skip_uncond => Some(expand_context(u, x.size()[0], "uncond")?),
            _ => None,
        };
        let input = x.to_kind(model.kind);
        let (out_c, out_u) = match uncond {
            Some(u) => {
                let both = model.predict(
                    &Tensor::cat(&[&input, &input], 0),
                    t,
                    &Tensor::cat(&[u.to_kind(model.kind), cond.to_kind(model.kind)], 0),
                )?;
                let halves = both.to_kind(Kind::Float).chunk(2, 0);
                (halves[1].shallow_clone(), halves[0].shallow_clone())
            }
            None => {
                let out = model
                    .predict(&input, t, &cond.to_kind(model.kind))?
                    .to_kind(Kind::Float);
                (out.shallow_clone(), out)
            }
        };
        Ok(vec![out_c.into(), out_u.into()])
    }
}

/// A conditioning of batch 1 serves every sample of the batch.
fn expand_context(c: &Tensor, batch: i64, name: &str) -> Result<Tensor, NodeError> {
    let n = c.size().first().copied().unwrap_or(0);
    if n == batch {
        Ok(c.shallow_clone())
    } else if n == 1 {
        let mut shape = c.size();
        shape[0] = batch;
        Ok(c.expand(&shape, false))
    } else {
        Err(NodeError::new(format!("input `{name}`: batch of {n} does not match the sample's batch of {batch} (give 1 or {batch})")))
    }
}
