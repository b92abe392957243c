//! `Scheduler`: builds any sampler (`crate::samplers`) from a diffusers
//! `scheduler_config.json` or Stable Diffusion's defaults (`crate::config`),
//! and hands the graph its timesteps and its `SCHEDULER` state for a `Loop`.
//!
//! img2img: `strength` < 1 starts the run part-way, as diffusers'
//! `StableDiffusionImg2ImgPipeline.get_timesteps` does:
//! `init_timestep = min(int(steps * strength), steps)`,
//! `t_start = max(steps - init_timestep, 0)`, the run's timesteps are
//! `timesteps[t_start * order:]` and the scheduler begins at that index
//! (`set_begin_index`); `AddNoise` noises the encoded image to the run's
//! first timestep.
use crate::config::{self, SamplerKind};
use crate::noise::NoiseStream;
use crate::samplers;
use crate::schedule::{ConfigName, PredictionType, TimestepSpacing};
use crate::state::{SchedulerState, SCHEDULER};
use diffgraph_sdk::prelude::*;
use serde_json::{json, Map, Value as Json};

/// `schedule` input values: ComfyUI's scheduler names.
const SCHEDULES: &[&str] = &["config", "normal", "karras"];

fn sampler_choices() -> Vec<&'static str> {
    let mut c = vec!["config"];
    c.extend(SamplerKind::names());
    c
}

fn with_config(names: Vec<&'static str>) -> Vec<&'static str> {
    let mut c = vec!["config"];
    c.extend(names);
    c
}

/// `t_start` of diffusers' img2img `get_timesteps`.
pub fn img2img_start(steps: i64, strength: f64) -> Result<i64, NodeError> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(format!("strength must lie in [0, 1], got {strength}").into());
    }
    let init_timestep = ((steps as f64 * strength) as i64).min(steps);
    let t_start = (steps - init_timestep).max(0);
    if steps - t_start < 1 {
        return Err(format!(
            "strength {strength} with {steps} steps leaves no step to run (int(steps * strength) = 0)"
        )
        .into());
    }
    Ok(t_start)
}

pub struct Scheduler;

impl Node for Scheduler {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Scheduler", "sampling")
            .description(
                "A noise scheduler with diffusers' numerics (DDIM, DDPM, PNDM, LMS, Euler, Euler ancestral, Heun, \
                 DPM-Solver++ 2M). Iterate a Loop over `timesteps`, carrying `state` and the latent: per \
                 iteration ScaleModelInput, the model, then SchedulerStep (whose `state` output is the next \
                 state).",
            )
            .input(
                InputSpec::string("sampler")
                    .default("config")
                    .choices(&sampler_choices())
                    .doc("ComfyUI names or diffusers class names; `config`: the config file's _class_name, DDIM without a file"),
            )
            .input(InputSpec::int("steps").default(20).range(1.0, 1000.0).doc("number of inference steps"))
            .input(
                InputSpec::string("schedule")
                    .default("config")
                    .choices(SCHEDULES)
                    .doc("normal, or karras (Karras et al. sigmas: LMS, Euler, Heun, DPM++); config: use_karras_sigmas"),
            )
            .input(
                InputSpec::float("strength")
                    .default(1.0)
                    .range(0.0, 1.0)
                    .doc("img2img: the part of the schedule to run (1: all, txt2img)"),
            )
            .input(
                InputSpec::string("config")
                    .optional()
                    .file()
                    .doc("scheduler_config.json, or a diffusers model folder; without it Stable Diffusion's defaults"),
            )
            .input(
                InputSpec::string("prediction_type")
                    .optional()
                    .doc("epsilon, v_prediction or sample; overrides the config (link it from the model)"),
            )
            .input(
                InputSpec::string("timestep_spacing")
                    .default("config")
                    .choices(&with_config(TimestepSpacing::names())),
            )
            .input(InputSpec::int("steps_offset").optional().min(0.0).doc("overrides the config"))
            .input(InputSpec::int("seed").default(0).doc(
                "stochastic samplers (DDPM, Euler ancestral, DDIM with eta > 0): step i draws the i-th tensor \
                 of torch.Generator(\"cpu\").manual_seed(seed), as diffusers does",
            ))
            .input(InputSpec::int("skip_draws").default(0).min(0.0).doc(
                "same-shaped draws of that generator before the first step's (1 when the initial latents \
                 or the img2img noise came from GaussianNoise with the same seed, as in diffusers' pipelines)",
            ))
            .input(InputSpec::float("eta").default(0.0).min(0.0).doc("DDIM only: 0 deterministic, 1 DDPM-like"))
            .output(OutputSpec::new("timesteps", PortType::list(PortType::Float)).doc("the run's, in order"))
            .output(OutputSpec::new("state", PortType::object(SCHEDULER)))
            .output(OutputSpec::new("init_noise_sigma", PortType::Float).doc("scale of the initial noise"))
            .output(OutputSpec::new("alphas_cumprod", PortType::Tensor).doc("float32 [num_train_timesteps] on the CPU"))
            .output(
                OutputSpec::new("sigmas", PortType::list(PortType::Float))
                    .doc("the sigma samplers' sigma table (timesteps + 1 values); empty for the others"),
            )
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let file = match inputs.get("config")? {
            InputValue::Str(p) if !p.is_empty() => Some(config::read_config_file(p)?),
            _ => None,
        };
        let kind = match inputs.str("sampler")? {
            "config" => match file.as_ref().and_then(|f| f.get("_class_name")) {
                Some(Json::String(class)) => SamplerKind::parse("the config's _class_name", class)
                    .map_err(|e| NodeError::new(format!("{e}; choose `sampler` explicitly")))?,
                _ => SamplerKind::Ddim,
            },
            name => SamplerKind::parse("sampler", name)?,
        };
        let mut overrides = Map::new();
        match inputs.str("schedule")? {
            "karras" if !kind.supports_karras() => {
                return Err(format!(
                    "the karras schedule is not available for {} (LMS, Euler, Heun and DPM++ have it)",
                    kind.class_name()
                )
                .into());
            }
            "karras" => {
                overrides.insert("use_karras_sigmas".into(), json!(true));
            }
            "normal" => {
                overrides.insert("use_karras_sigmas".into(), json!(false));
            }
            _ => {}
        }
        if let InputValue::Str(p) = inputs.get("prediction_type")? {
            PredictionType::parse("prediction_type", p)?;
            overrides.insert("prediction_type".into(), json!(p));
        }
        match inputs.str("timestep_spacing")? {
            "config" => {}
            s => {
                overrides.insert("timestep_spacing".into(), json!(s));
            }
        }
        if inputs.has("steps_offset") {
            overrides.insert("steps_offset".into(), json!(inputs.int("steps_offset")?));
        }
        let config = config::resolve(kind, file.as_ref(), &overrides)?;
        let steps = inputs.int("steps")?;
        let sampler = samplers::build(kind, config, steps, inputs.float("eta")?)?;
        let start = img2img_start(steps, inputs.float("strength")?)? as usize * sampler.order();
        let skip =
            usize::try_from(inputs.int("skip_draws")?).map_err(|_| "skip_draws must be >= 0")?;

        let timesteps: Vec<f64> = sampler.timesteps()[start.min(sampler.timesteps().len())..]
            .iter()
            .map(|&t| f64::from(t))
            .collect();
        let init_noise_sigma = f64::from(sampler.init_noise_sigma()?);
        let alphas = sampler.schedule().alphas_cumprod_tensor();
        let sigmas: Vec<f64> = sampler.sigmas().iter().map(|&s| f64::from(s)).collect();
        let state =
            SchedulerState::new(sampler, start, NoiseStream::new(inputs.int("seed")?, skip));
        Ok(vec![
            timesteps.into(),
            Object::new(SCHEDULER, state).into(),
            init_noise_sigma.into(),
            alphas.into(),
            sigmas.into(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::img2img_start;

    #[test]
    fn img2img_start_follows_diffusers() {
        assert_eq!(img2img_start(10, 0.6).unwrap(), 4);
        assert_eq!(img2img_start(50, 1.0).unwrap(), 0);
        assert_eq!(img2img_start(20, 0.75).unwrap(), 5);
        assert!(img2img_start(10, 0.05).is_err());
        assert!(img2img_start(10, 1.5).is_err());
    }
}
