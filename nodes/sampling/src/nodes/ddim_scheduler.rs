//! `DDIMScheduler`: the first scheduler node, kept for existing graphs. It
//! builds a DDIM sampler from explicit config inputs (Stable Diffusion's
//! defaults) and outputs integer timesteps; `Scheduler` is the general node.
use crate::noise::NoiseStream;
use crate::sampler::Sampler;
use crate::samplers::ddim::Ddim;
use crate::schedule::{BetaSchedule, ConfigName, PredictionType, ScheduleConfig, TimestepSpacing};
use crate::state::{SchedulerState, SCHEDULER};
use diffgraph_sdk::prelude::*;

/// Reads the schedule config inputs shared by every scheduler node.
pub fn config_from_inputs(inputs: &Inputs) -> Result<ScheduleConfig, NodeError> {
    Ok(ScheduleConfig {
        num_train_timesteps: inputs.int("num_train_timesteps")?,
        beta_start: inputs.float("beta_start")?,
        beta_end: inputs.float("beta_end")?,
        beta_schedule: BetaSchedule::parse("beta_schedule", inputs.str("beta_schedule")?)?,
        steps_offset: inputs.int("steps_offset")?,
        set_alpha_to_one: inputs.bool("set_alpha_to_one")?,
        timestep_spacing: TimestepSpacing::parse(
            "timestep_spacing",
            inputs.str("timestep_spacing")?,
        )?,
        prediction_type: PredictionType::parse("prediction_type", inputs.str("prediction_type")?)?,
        clip_sample: inputs.bool("clip_sample")?,
        ..ScheduleConfig::default()
    })
}

/// The schedule config inputs, with Stable Diffusion's defaults.
pub fn config_inputs(schema: NodeSchema) -> NodeSchema {
    let d = ScheduleConfig::default();
    schema
        .input(
            InputSpec::string("timestep_spacing")
                .default(d.timestep_spacing.name())
                .choices(&TimestepSpacing::names())
                .doc("how the inference timesteps are spread over the training timesteps"),
        )
        .input(
            InputSpec::string("prediction_type")
                .default(d.prediction_type.name())
                .choices(&PredictionType::names())
                .doc("what the model predicts: the noise, v, or the clean sample"),
        )
        .input(
            InputSpec::string("beta_schedule")
                .default(d.beta_schedule.name())
                .choices(&BetaSchedule::names()),
        )
        .input(
            InputSpec::float("beta_start")
                .default(d.beta_start)
                .min(0.0),
        )
        .input(InputSpec::float("beta_end").default(d.beta_end).min(0.0))
        .input(
            InputSpec::int("num_train_timesteps")
                .default(d.num_train_timesteps)
                .range(1.0, 100_000.0),
        )
        .input(
            InputSpec::int("steps_offset")
                .default(d.steps_offset)
                .min(0.0)
                .doc("added to leading timesteps"),
        )
        .input(
            InputSpec::bool("set_alpha_to_one")
                .default(d.set_alpha_to_one)
                .doc("the last step goes to alpha 1 (a clean sample) instead of alphas_cumprod[0]"),
        )
        .input(
            InputSpec::bool("clip_sample")
                .default(d.clip_sample)
                .doc("clamp the predicted x0 to [-1, 1]"),
        )
}

pub struct DdimScheduler;

impl Node for DdimScheduler {
    fn schema(&self) -> NodeSchema {
        let schema = NodeSchema::new("DDIMScheduler", "sampling")
            .description(
                "DDIM sampler (diffusers DDIMScheduler) with Stable Diffusion's scheduler config as defaults \
                 and integer timesteps (kept for existing graphs; see Scheduler). Iterate a Loop over \
                 `timesteps`, calling SchedulerStep once per timestep.",
            )
            .input(InputSpec::int("steps").default(20).range(1.0, 1000.0).doc("number of inference steps"))
            .input(
                InputSpec::float("eta")
                    .default(0.0)
                    .min(0.0)
                    .doc("0: deterministic DDIM; 1: DDPM-like; > 0 adds noise from a generator seeded with `seed`"),
            )
            .input(InputSpec::int("seed").default(0).doc(
                "seed of the noise added when eta > 0: step i draws the i-th tensor of \
                 torch.Generator(\"cpu\").manual_seed(seed), as diffusers does",
            ));
        config_inputs(schema)
            .output(
                OutputSpec::new("timesteps", PortType::list(PortType::Int)).doc("highest first"),
            )
            .output(OutputSpec::new("state", PortType::object(SCHEDULER)))
            .output(
                OutputSpec::new("init_noise_sigma", PortType::Float)
                    .doc("scale of the initial noise"),
            )
            .output(
                OutputSpec::new("alphas_cumprod", PortType::Tensor)
                    .doc("float32 [num_train_timesteps] on the CPU"),
            )
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let config = config_from_inputs(inputs)?;
        let ddim = Ddim::new(config, inputs.int("steps")?, inputs.float("eta")?)?;
        let timesteps: Vec<i64> = ddim.timesteps().iter().map(|&t| t as i64).collect();
        let sigma = f64::from(ddim.init_noise_sigma()?);
        let alphas = ddim.schedule().alphas_cumprod_tensor();
        let noise = NoiseStream::new(inputs.int("seed")?, 0);
        let state = Object::new(SCHEDULER, SchedulerState::new(Box::new(ddim), 0, noise));
        Ok(vec![
            timesteps.into(),
            state.into(),
            sigma.into(),
            alphas.into(),
        ])
    }
}
