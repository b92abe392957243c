//! `Scheduler`: builds any sampler (`crate::samplers`) from a diffusers
//! `scheduler_config.json` or Stable Diffusion's defaults (`crate::config`),
//! with the node's config inputs on top, and hands the graph its timesteps
//! and its `SCHEDULER` state for a `Loop`. `DDIMScheduler`, the first
//! scheduler node's name, is the same node with DDIM as its default sampler
//! and integer timesteps (`LIST<INT>`, as the graphs written for it read them).
//!
//! img2img: `strength` < 1 starts the run part-way, as diffusers'
//! `StableDiffusionImg2ImgPipeline.get_timesteps` does:
//! `init_timestep = min(int(steps * strength), steps)`,
//! `t_start = max(steps - init_timestep, 0)`, the run's timesteps are
//! `timesteps[t_start * order:]` and the scheduler begins at that index
//! (`set_begin_index`); `AddNoise` noises the encoded image to the run's
//! first timestep.
use crate::config::{ConfigFile, Overrides};
use crate::noise::NoiseStream;
use crate::samplers::{self, ddim};
use crate::state::{SchedulerState, SCHEDULER};
use diffgraph_diffusion::{
    integer_timestep, BetaSchedule, ConfigName, PredictionType, TimestepSpacing,
};
use diffgraph_sdk::prelude::*;

/// `schedule` input values: ComfyUI's scheduler names.
const SCHEDULES: &[&str] = &["config", "normal", "karras"];

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

/// SDXL's base-then-refiner split (diffusers
/// `pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py`,
/// `denoising_end`, and `pipeline_stable_diffusion_xl_img2img.py`
/// `get_timesteps` with `denoising_start`): the cut-off training timestep
/// `int(round(N - fraction * N))`; the base keeps the timesteps at or above
/// it, the refiner runs those below it (for a second-order sampler one more,
/// so that it never starts between the two evaluations of a step). Returns
/// the range of `timesteps` to run.
pub fn denoising_range(
    timesteps: &[f32],
    num_train_timesteps: i64,
    start: Option<f64>,
    end: Option<f64>,
    order: usize,
) -> Result<std::ops::Range<usize>, NodeError> {
    let cutoff = |f: f64, name: &str| -> Result<f64, NodeError> {
        if !(0.0..=1.0).contains(&f) {
            return Err(format!("{name} must lie in [0, 1], got {f}").into());
        }
        let n = num_train_timesteps as f64;
        Ok((n - f * n).round())
    };
    let mut range = 0..timesteps.len();
    if let Some(f) = start {
        let c = cutoff(f, "denoising_start")?;
        let mut n = timesteps.iter().filter(|&&t| f64::from(t) < c).count();
        if order == 2 && n % 2 == 0 {
            n += 1;
        }
        range.start = timesteps.len().saturating_sub(n);
    }
    if let Some(f) = end {
        let c = cutoff(f, "denoising_end")?;
        range.end = timesteps.iter().filter(|&&t| f64::from(t) >= c).count();
    }
    if range.start >= range.end {
        return Err(format!(
            "denoising_start {start:?} and denoising_end {end:?} leave no timestep of {:?} to run",
            timesteps
        )
        .into());
    }
    Ok(range)
}

/// The scheduler node, under either of its names.
pub struct Scheduler {
    name: &'static str,
    default_sampler: &'static str,
    /// `timesteps` as `LIST<INT>` (refusing samplers with fractional ones).
    integer_timesteps: bool,
}

impl Scheduler {
    /// `Scheduler`: the sampler of the config file (DDIM without one), float timesteps.
    pub const GENERAL: Scheduler = Scheduler {
        name: "Scheduler",
        default_sampler: "config",
        integer_timesteps: false,
    };
    /// `DDIMScheduler`, kept for existing graphs: DDIM, integer timesteps.
    pub const DDIM: Scheduler = Scheduler {
        name: "DDIMScheduler",
        default_sampler: ddim::INFO.name,
        integer_timesteps: true,
    };
}

/// A parsed optional name input.
fn opt_name<T: ConfigName>(inputs: &Inputs, key: &str) -> Result<Option<T>, NodeError> {
    match inputs.opt_str(key)? {
        None => Ok(None),
        Some(s) => Ok(Some(T::parse(key, s).map_err(String::from)?)),
    }
}

fn opt_bool(inputs: &Inputs, key: &str) -> Result<Option<bool>, NodeError> {
    inputs.has(key).then(|| inputs.bool(key)).transpose()
}

/// The node's config inputs, typed.
fn overrides(inputs: &Inputs) -> Result<Overrides, NodeError> {
    let timestep_spacing = match inputs.str("timestep_spacing")? {
        "config" => None,
        s => Some(TimestepSpacing::parse("timestep_spacing", s).map_err(String::from)?),
    };
    let use_karras_sigmas = match inputs.str("schedule")? {
        "karras" => Some(true),
        "normal" => Some(false),
        _ => None,
    };
    Ok(Overrides {
        num_train_timesteps: inputs.opt_int("num_train_timesteps")?,
        beta_start: inputs.opt_float("beta_start")?,
        beta_end: inputs.opt_float("beta_end")?,
        beta_schedule: opt_name::<BetaSchedule>(inputs, "beta_schedule")?,
        steps_offset: inputs.opt_int("steps_offset")?,
        timestep_spacing,
        prediction_type: opt_name::<PredictionType>(inputs, "prediction_type")?,
        use_karras_sigmas,
        set_alpha_to_one: opt_bool(inputs, "set_alpha_to_one")?,
        clip_sample: opt_bool(inputs, "clip_sample")?,
        use_clipped_model_output: opt_bool(inputs, "use_clipped_model_output")?,
    })
}

/// The config inputs: each overrides the config file's key (or SD's).
fn config_inputs(schema: NodeSchema) -> NodeSchema {
    let over = "overrides the config";
    schema
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
                .choices(&with_config(TimestepSpacing::names()))
                .doc("how the inference timesteps are spread over the training timesteps"),
        )
        .input(InputSpec::int("steps_offset").optional().min(0.0).doc("added to leading timesteps; overrides the config"))
        .input(InputSpec::string("beta_schedule").optional().choices(&BetaSchedule::names()).doc(over))
        .input(InputSpec::float("beta_start").optional().min(0.0).doc(over))
        .input(InputSpec::float("beta_end").optional().min(0.0).doc(over))
        .input(InputSpec::int("num_train_timesteps").optional().range(1.0, 100_000.0).doc(over))
        .input(InputSpec::bool("set_alpha_to_one").optional().doc(
            "DDIM, PNDM: the last step goes to alpha 1 (a clean sample) instead of alphas_cumprod[0]; overrides the config",
        ))
        .input(
            InputSpec::bool("clip_sample")
                .optional()
                .doc("DDIM, DDPM, Heun: clamp the predicted x0 to ±clip_sample_range; overrides the config"),
        )
        .input(InputSpec::bool("use_clipped_model_output").optional().doc(
            "DDIM: re-derive eps from the clipped x0 (diffusers' step argument; guided-diffusion's order); default false",
        ))
}

impl Node for Scheduler {
    fn schema(&self) -> NodeSchema {
        let description = if self.integer_timesteps {
            "The Scheduler node under its first name, for existing graphs: DDIM by default (diffusers \
             DDIMScheduler, Stable Diffusion's config), integer timesteps. Iterate a Loop over `timesteps`, \
             calling SchedulerStep once per timestep."
        } else {
            "A noise scheduler with diffusers' numerics (DDIM, DDPM, PNDM, LMS, Euler, Euler ancestral, Heun, \
             DPM-Solver++ 2M). Iterate a Loop over `timesteps`, carrying `state` and the latent: per \
             iteration ScaleModelInput, the model, then SchedulerStep (whose `state` output is the next \
             state)."
        };
        let timestep_type = if self.integer_timesteps {
            PortType::Int
        } else {
            PortType::Float
        };
        let schema = NodeSchema::new(self.name, "sampling")
            .description(description)
            .input(
                InputSpec::string("sampler")
                    .default(self.default_sampler)
                    .choices(&with_config(samplers::names()))
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
            );
        config_inputs(schema)
            .input(InputSpec::int("seed").default(0).doc(
                "stochastic samplers (DDPM, Euler ancestral, DDIM with eta > 0): step i draws the i-th tensor \
                 of torch.Generator(\"cpu\").manual_seed(seed), as diffusers does",
            ))
            .input(InputSpec::int("skip_draws").default(0).min(0.0).doc(
                "same-shaped draws of that generator before the first step's (1 when the initial latents \
                 or the img2img noise came from GaussianNoise with the same seed, as in diffusers' pipelines)",
            ))
            .input(InputSpec::float("eta").default(0.0).min(0.0).doc("DDIM only: 0 deterministic, 1 DDPM-like"))
            .input(InputSpec::float("denoising_start").optional().range(0.0, 1.0).doc(
                "SDXL refiner: run only the timesteps below int(round(N - start * N)) (diffusers' denoising_start; \
                 replaces strength)",
            ))
            .input(InputSpec::float("denoising_end").optional().range(0.0, 1.0).doc(
                "SDXL base: stop before the timesteps below int(round(N - end * N)), leaving noise for a refiner \
                 (diffusers' denoising_end)",
            ))
            .output(OutputSpec::new("timesteps", PortType::list(timestep_type)).doc("the run's, in order"))
            .output(OutputSpec::new("state", PortType::object(SCHEDULER)))
            .output(OutputSpec::new("init_noise_sigma", PortType::Float).doc("scale of the initial noise"))
            .output(OutputSpec::new("alphas_cumprod", PortType::Tensor).doc("float32 [num_train_timesteps] on the CPU"))
            .output(
                OutputSpec::new("sigmas", PortType::list(PortType::Float))
                    .doc("the sigma samplers' sigma table (timesteps + 1 values); empty for the others"),
            )
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let file = match inputs.opt_str("config")? {
            Some(p) if !p.is_empty() => Some(ConfigFile::read(p).map_err(String::from)?),
            _ => None,
        };
        let info = match inputs.str("sampler")? {
            "config" => match file.as_ref().and_then(ConfigFile::class_name) {
                Some(class) => samplers::find("the config's _class_name", class)
                    .map_err(|e| format!("{e}; choose `sampler` explicitly"))?,
                None => &ddim::INFO,
            },
            name => samplers::find("sampler", name).map_err(String::from)?,
        };
        let file = file.unwrap_or_else(ConfigFile::stable_diffusion);
        let steps = inputs.int("steps")?;
        let sampler = samplers::build(
            info,
            &file,
            &overrides(inputs)?,
            steps,
            inputs.float("eta")?,
        )
        .map_err(String::from)?;
        let denoising_start = inputs.opt_float("denoising_start")?;
        let denoising_end = inputs.opt_float("denoising_end")?;
        let all = sampler.timesteps();
        let range = if denoising_start.is_some() || denoising_end.is_some() {
            let n = sampler.schedule().num_train_timesteps();
            denoising_range(all, n, denoising_start, denoising_end, sampler.order())?
        } else {
            let start = img2img_start(steps, inputs.float("strength")?)? as usize * sampler.order();
            start.min(all.len())..all.len()
        };
        let start = range.start;
        let skip =
            usize::try_from(inputs.int("skip_draws")?).map_err(|_| "skip_draws must be >= 0")?;

        let run = &all[range];
        let timesteps: Value = if self.integer_timesteps {
            let ints = run
                .iter()
                .map(|&t| integer_timestep(t))
                .collect::<Result<Vec<i64>, _>>();
            ints.map_err(|e| {
                format!(
                    "{e}: {} has integer timesteps only; use Scheduler for {}",
                    self.name, info.class_name
                )
            })?
            .into()
        } else {
            run.iter()
                .map(|&t| f64::from(t))
                .collect::<Vec<f64>>()
                .into()
        };
        let init_noise_sigma = f64::from(sampler.init_noise_sigma().map_err(String::from)?);
        let alphas = sampler.schedule().alphas_cumprod_tensor();
        let sigmas: Vec<f64> = sampler.sigmas().iter().map(|&s| f64::from(s)).collect();
        let state =
            SchedulerState::new(sampler, start, NoiseStream::new(inputs.int("seed")?, skip));
        Ok(vec![
            timesteps,
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
    fn denoising_split_follows_diffusers() {
        use super::denoising_range;
        let leading: Vec<f32> = (0..10).rev().map(|i| (i * 100 + 1) as f32).collect();
        // 0.8 of 1000: cut-off 200; base 901..201, refiner 101, 1.
        assert_eq!(
            denoising_range(&leading, 1000, None, Some(0.8), 1).unwrap(),
            0..8
        );
        assert_eq!(
            denoising_range(&leading, 1000, Some(0.8), None, 1).unwrap(),
            8..10
        );
        // Heun's duplicated timesteps: an even count gets one more.
        assert_eq!(
            denoising_range(&leading, 1000, Some(0.8), None, 2).unwrap(),
            7..10
        );
        assert!(denoising_range(&leading, 1000, Some(0.5), Some(0.5), 1).is_err());
    }

    #[test]
    fn img2img_start_follows_diffusers() {
        assert_eq!(img2img_start(10, 0.6).unwrap(), 4);
        assert_eq!(img2img_start(50, 1.0).unwrap(), 0);
        assert_eq!(img2img_start(20, 0.75).unwrap(), 5);
        assert!(img2img_start(10, 0.05).is_err());
        assert!(img2img_start(10, 1.5).is_err());
    }
}
