//! guided-diffusion's sampling as nodes (math: `diffgraph_diffusion::gaussian`):
//! `ADMSchedule` builds the respaced schedule from the model's diffusion
//! flags, and `ADMStep` takes one `p_sample` (DDPM, classifier guidance by
//! `condition_mean`) or `ddim_sample` (`condition_score`) step, as
//! guided-diffusion's `p_sample_loop` / `ddim_sample_loop` do for
//! scripts/classifier_sample.py.
use crate::noise::NoiseStream;
use diffgraph_diffusion::gaussian::{named_beta_schedule, GaussianDiffusion, ModelVar};
use diffgraph_sdk::prelude::*;

/// Port type of an ADM schedule.
pub const ADM_SCHEDULE: &str = "ADM_SCHEDULE";

/// A respaced schedule and how to step it.
pub struct AdmSchedule {
    pub diffusion: GaussianDiffusion,
    pub var: ModelVar,
    pub predict_xstart: bool,
    pub use_ddim: bool,
    pub clip_denoised: bool,
    pub eta: f64,
    /// The per-step draws: `torch.manual_seed(seed)`, then one
    /// `randn_like(x)` per step in order (DDPM and DDIM both draw).
    pub noise: NoiseStream,
}

pub struct ADMSchedule;

impl Node for ADMSchedule {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ADMSchedule", "sampling")
            .description(
                "guided-diffusion's respaced diffusion (create_gaussian_diffusion + space_timesteps): float64 \
                 tables, the timesteps the model gets (timestep_map, descending) for a Loop, and the sample shape. \
                 Connect the diffusion flags from LoadADM.",
            )
            .input(InputSpec::int("diffusion_steps").default(1000).min(2.0))
            .input(InputSpec::string("noise_schedule").default("linear").choices(&["linear", "cosine"]))
            .input(InputSpec::bool("learn_sigma").default(false).doc("learned-range variance (else fixed large)"))
            .input(InputSpec::bool("predict_xstart").default(false))
            .input(InputSpec::bool("rescale_timesteps").default(false))
            .input(InputSpec::new("respacing", PortType::Any).default("").doc(
                "timestep_respacing: \"250\" (or 250), \"ddim25\", \"100,50,25\" (sections), \"\" = every step",
            ))
            .input(InputSpec::bool("use_ddim").default(false))
            .input(InputSpec::bool("clip_denoised").default(true))
            .input(InputSpec::float("eta").default(0.0).min(0.0).doc("DDIM's eta"))
            .input(InputSpec::int("seed").default(0).min(0.0).doc(
                "the per-step draws, as torch.manual_seed(seed) then one randn_like(x) per step",
            ))
            .input(InputSpec::int("batch").default(1).min(1.0))
            .input(InputSpec::int("image_size").default(64).min(1.0))
            .output(OutputSpec::new("schedule", PortType::object(ADM_SCHEDULE)))
            .output(OutputSpec::new("timesteps", PortType::list(PortType::Float)).doc("model timesteps, first to last"))
            .output(OutputSpec::new("shape", PortType::list(PortType::Int)).doc("[batch, 3, image_size, image_size]"))
            .output(OutputSpec::new("timestep_scale", PortType::Float).doc("1000 / diffusion_steps with rescale_timesteps, else 1"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let steps = usize::try_from(inputs.int("diffusion_steps")?)
            .map_err(|_| "input `diffusion_steps`: negative")?;
        let betas =
            named_beta_schedule(inputs.str("noise_schedule")?, steps).map_err(String::from)?;
        let respacing = match inputs.get("respacing")? {
            InputValue::Int(n) => n.to_string(),
            InputValue::Str(s) => s.to_string(),
            other => {
                return Err(format!(
                    "input `respacing`: expected a string or a count, got {}",
                    other.kind_name()
                )
                .into())
            }
        };
        let diffusion = GaussianDiffusion::spaced(&betas, &respacing)
            .map_err(|e| format!("input `respacing`: {e}"))?;
        let rescale = inputs.bool("rescale_timesteps")?;
        let timesteps: Vec<f64> = (0..diffusion.num_timesteps())
            .rev()
            .map(|i| diffusion.timestep_map[i] as f64)
            .collect();
        let (b, s) = (inputs.int("batch")?, inputs.int("image_size")?);
        let schedule = AdmSchedule {
            diffusion,
            var: if inputs.bool("learn_sigma")? {
                ModelVar::LearnedRange
            } else {
                ModelVar::FixedLarge
            },
            predict_xstart: inputs.bool("predict_xstart")?,
            use_ddim: inputs.bool("use_ddim")?,
            clip_denoised: inputs.bool("clip_denoised")?,
            eta: inputs.float("eta")?,
            noise: NoiseStream::new(inputs.int("seed")?, 0),
        };
        Ok(vec![
            Object::new(ADM_SCHEDULE, schedule).into(),
            Value::List(timesteps.into_iter().map(Value::Float).collect()),
            Value::List([b, 3, s, s].into_iter().map(Value::Int).collect()),
            (if rescale { 1000.0 / steps as f64 } else { 1.0 }).into(),
        ])
    }
}

pub struct ADMStep;

impl Node for ADMStep {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ADMStep", "sampling")
            .description(
                "One step of guided-diffusion's p_sample (DDPM; with `grad`, condition_mean: mean + Σ·grad, Σ the \
                 model's learned variance) or ddim_sample (with `grad`, condition_score: ε from the clipped x0, \
                 minus √(1−ᾱ)·grad). Runs inside a Loop over ADMSchedule's timesteps.",
            )
            .input(InputSpec::new("schedule", PortType::object(ADM_SCHEDULE)))
            .input(InputSpec::tensor("model_output").doc("the model's output: eps (or x0), then the variance channels"))
            .input(InputSpec::new("sample", PortType::Latent))
            .input(InputSpec::float("timestep").doc("the loop's item (a model timestep)"))
            .input(InputSpec::tensor("grad").optional().doc("ADMClassifierGradient's scaled gradient"))
            .output(OutputSpec::new("prev_sample", PortType::Latent))
            .output(OutputSpec::new("pred_xstart", PortType::Latent))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let s: &AdmSchedule = inputs.object("schedule")?;
        let x = inputs.tensor("sample")?.to_kind(Kind::Float);
        let output = inputs.tensor("model_output")?.to_kind(Kind::Float);
        let i = s
            .diffusion
            .step_of(inputs.float("timestep")?)
            .map_err(|e| format!("input `timestep`: {e}"))?;
        let grad = inputs.opt_tensor("grad")?.map(|g| g.to_kind(Kind::Float));
        if let Some(g) = &grad {
            if g.size() != x.size() {
                return Err(format!(
                    "input `grad`: shape {:?} differs from the sample's {:?}",
                    g.size(),
                    x.size()
                )
                .into());
            }
        }
        let mv = s
            .diffusion
            .p_mean_variance(&output, &x, i, s.var, s.predict_xstart, s.clip_denoised)
            .map_err(|e| format!("input `model_output`: {e}"))?;
        let n = s.diffusion.num_timesteps();
        let noise = s.noise.noise(n - 1 - i, n, &x).map_err(String::from)?;
        let prev = if s.use_ddim {
            s.diffusion
                .ddim_sample(&mv, &x, i, grad.as_ref(), s.eta, &noise)
                .map_err(String::from)?
        } else {
            s.diffusion.p_sample(&mv, i, grad.as_ref(), &noise)
        };
        Ok(vec![prev.into(), mv.pred_xstart.into()])
    }
}

pub struct SplitVariance;

impl Node for SplitVariance {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SplitVariance", "sampling")
            .description(
                "Splits a learned-variance model output [B, 2C, ...] (guided-diffusion's learn_sigma: eps, then the \
                 variance values) into the prediction [B, C, ...] and the variance channels, e.g. to step an ADM \
                 model with a scheduler that takes eps alone (gaussian_diffusion.py p_mean_variance's th.split).",
            )
            .input(InputSpec::tensor("model_output"))
            .input(InputSpec::int("channels").default(3).min(1.0).doc("C, the sample's channels"))
            .output(OutputSpec::new("prediction", PortType::Tensor))
            .output(OutputSpec::new("variance", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let out = inputs.tensor("model_output")?;
        let c = inputs.int("channels")?;
        let have = out.size().get(1).copied().unwrap_or(0);
        if have != 2 * c {
            return Err(format!(
                "input `model_output`: {have} channels, expected 2 x {c} (prediction, then variance)"
            )
            .into());
        }
        let parts = out.split(c, 1);
        Ok(vec![
            parts[0].shallow_clone().into(),
            parts[1].shallow_clone().into(),
        ])
    }
}
