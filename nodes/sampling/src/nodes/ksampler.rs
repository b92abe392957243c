//! ComfyUI's sampling as native nodes, so that a translated KSampler stays a
//! visible Loop: `KSchedule` (ComfyUI's sigma schedule: model sampling,
//! scheduler, steps, denoise, KSamplerAdvanced's step window), `KSigmas`
//! (KarrasScheduler / ExponentialScheduler with explicit sigmas),
//! `SplitSigmas`, `KSamplerStart` (ComfyUI's noise scaling; the run),
//! then per model evaluation `KModelInput` (the U-Net's input and timestep),
//! the U-Net (`UNetStep`, plugin sd), `CFGDenoise` (each branch's denoised,
//! ComfyUI's CFG mix) and `KSamplerStep`. The math: `crate::ksampler` and
//! `diffgraph_diffusion::comfy`.
use crate::config::ConfigFile;
use crate::ksampler::{evaluations, method, prepare_mask, Inpaint, KRun, COMFY_SAMPLER_NAMES};
use crate::noise::seeded_randn;
use diffgraph_diffusion::cfg::cfg_mix;
use diffgraph_diffusion::comfy::{
    ksampler_sigmas, truncate_steps, DiscreteSampling, ModelPrediction, SCHEDULER_NAMES,
};
use diffgraph_diffusion::schedule::ScheduleConfig;
use diffgraph_diffusion::BetaSchedule;
use diffgraph_sdk::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// Port type of a k-diffusion run.
pub const KSAMPLER_RUN: &str = "KSAMPLER_RUN";

/// A run as a plugin object (the mutex only makes it `Sync`; a run is never
/// changed once made).
pub struct KState(Mutex<KRun>);

impl KState {
    pub(crate) fn lock(&self) -> MutexGuard<'_, KRun> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn config_input() -> InputSpec {
    InputSpec::string("config").default("").doc(
        "a diffusers scheduler_config.json for the betas (the checkpoint loader's scheduler_config); empty: SD's",
    )
}

fn prediction_input() -> InputSpec {
    InputSpec::string("prediction_type")
        .default("epsilon")
        .choices(&["epsilon", "v_prediction"])
}

/// ComfyUI's `ModelSamplingDiscrete` for a config: its "linear" schedule
/// is diffusers' `scaled_linear` (SD 1.x/2.x: 0.00085 to 0.012 over 1000).
fn model_sampling(
    inputs: &Inputs,
    prediction: ModelPrediction,
) -> Result<DiscreteSampling, NodeError> {
    let file = match inputs.opt_str("config")? {
        Some(p) if !p.is_empty() => ConfigFile::read(p).map_err(String::from)?,
        _ => ConfigFile::stable_diffusion(),
    };
    let config = file
        .schedule(ScheduleConfig::default())
        .map_err(String::from)?;
    if config.beta_schedule != BetaSchedule::ScaledLinear || config.trained_betas.is_some() {
        return Err(format!(
            "input `config`: ComfyUI's discrete model sampling has the scaled_linear beta schedule, the config has {:?}",
            config.beta_schedule
        )
        .into());
    }
    Ok(DiscreteSampling::linear(
        config.beta_start,
        config.beta_end,
        config.num_train_timesteps,
        prediction,
    )
    .map_err(String::from)?)
}

fn prediction(inputs: &Inputs) -> Result<ModelPrediction, NodeError> {
    Ok(
        ModelPrediction::parse(inputs.opt_str("prediction_type")?.unwrap_or("epsilon"))
            .map_err(|e| format!("input `prediction_type`: {e}"))?,
    )
}

fn sigmas_of(t: &Tensor) -> Result<Vec<f32>, NodeError> {
    if t.dim() != 1 {
        return Err(format!(
            "input `sigmas`: expected a 1-D tensor, got shape {:?}",
            t.size()
        )
        .into());
    }
    Ok(
        Vec::<f32>::try_from(&t.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?)
            .map_err(|e| format!("input `sigmas`: {e}"))?,
    )
}

fn sigmas_value(s: &[f32]) -> Value {
    Tensor::from_slice(s).into()
}

pub struct KSchedule;

impl Node for KSchedule {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSchedule", "sampling")
            .description(
                "ComfyUI's sigma schedule (comfy/samplers.py): the model's discrete sigmas, one of ComfyUI's \
                 schedulers, KSampler's denoise (< 1: the last steps of int(steps / denoise)) and \
                 KSamplerAdvanced's start/last step window.",
            )
            .input(InputSpec::string("scheduler").default("normal").choices(SCHEDULER_NAMES))
            .input(InputSpec::int("steps").default(20).range(1.0, 10000.0))
            .input(InputSpec::float("denoise").default(1.0).range(0.0, 1.0))
            .input(
                InputSpec::string("sampler_name")
                    .default("euler")
                    .choices(COMFY_SAMPLER_NAMES)
                    .doc("dpm_2, dpm_2_ancestral, uni_pc: one step more, without the penultimate sigma"),
            )
            .input(InputSpec::int("start_step").optional().min(0.0).doc("KSamplerAdvanced's start_at_step"))
            .input(InputSpec::int("last_step").optional().min(0.0).doc("KSamplerAdvanced's end_at_step"))
            .input(
                InputSpec::bool("force_full_denoise")
                    .default(false)
                    .doc("a window ending early ends at sigma 0 (return_with_leftover_noise disabled)"),
            )
            .input(config_input())
            .output(OutputSpec::new("sigmas", PortType::Tensor).doc("float32, descending, ending in 0"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let ms = model_sampling(inputs, ModelPrediction::Eps)?;
        let steps = inputs.int("steps")? as usize;
        let s = ksampler_sigmas(
            &ms,
            inputs.str("scheduler")?,
            inputs.str("sampler_name")?,
            steps,
            inputs.float("denoise")?,
        )
        .map_err(String::from)?;
        let start = inputs.opt_int("start_step")?.map(|v| v as usize);
        let last = inputs.opt_int("last_step")?.map(|v| v as usize);
        let s =
            truncate_steps(&s, start, last, inputs.bool("force_full_denoise")?).unwrap_or_default();
        Ok(vec![sigmas_value(&s)])
    }
}

pub struct KSigmas;

impl Node for KSigmas {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSigmas", "sampling")
            .description(
                "k-diffusion's Karras or exponential sigmas between explicit sigma_max and sigma_min \
                 (ComfyUI's KarrasScheduler, ExponentialScheduler).",
            )
            .input(InputSpec::string("scheduler").default("karras").choices(&["karras", "exponential"]))
            .input(InputSpec::int("steps").default(20).range(1.0, 10000.0))
            .input(InputSpec::float("sigma_max").default(14.614642))
            .input(InputSpec::float("sigma_min").default(0.0291675))
            .input(InputSpec::float("rho").default(7.0))
            .output(OutputSpec::new("sigmas", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let (steps, max, min) = (
            inputs.int("steps")?,
            inputs.float("sigma_max")?,
            inputs.float("sigma_min")?,
        );
        if !(min > 0.0 && max > min) {
            return Err(format!("expected 0 < sigma_min < sigma_max, got {min} and {max}").into());
        }
        let s = diffgraph_diffusion::comfy::schedulers::explicit_sigmas(
            inputs.str("scheduler")?,
            steps as usize,
            min,
            max,
            inputs.float("rho")?,
        )
        .map_err(String::from)?;
        Ok(vec![sigmas_value(&s)])
    }
}

pub struct SplitSigmas;

impl Node for SplitSigmas {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SplitSigmas", "sampling")
            .description("ComfyUI's SplitSigmas: sigmas[:step + 1] and sigmas[step:].")
            .input(InputSpec::tensor("sigmas"))
            .input(InputSpec::int("step").default(0).min(0.0))
            .output(OutputSpec::new("high_sigmas", PortType::Tensor))
            .output(OutputSpec::new("low_sigmas", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let s = sigmas_of(inputs.tensor("sigmas")?)?;
        let step = (inputs.int("step")? as usize).min(s.len());
        let high = &s[..(step + 1).min(s.len())];
        Ok(vec![sigmas_value(high), sigmas_value(&s[step..])])
    }
}

pub struct KSamplerStart;

impl Node for KSamplerStart {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSamplerStart", "sampling")
            .description(
                "Starts a ComfyUI sampling run (KSAMPLER.sample): the latent noised to the first sigma \
                 (noise·sqrt(1 + sigma²) at full denoise, noise·sigma otherwise, plus the latent). Loop \
                 `evaluations` times over KModelInput, the U-Net, CFGDenoise and KSamplerStep. Fewer than \
                 two sigmas: nothing to run, the latent comes back unchanged.",
            )
            .input(InputSpec::tensor("sigmas"))
            .input(InputSpec::string("sampler_name").default("euler").choices(COMFY_SAMPLER_NAMES))
            .input(InputSpec::int("seed").default(0).min(0.0).doc("the stochastic samplers' noise: the ancestral ones' generator seed, the SDE ones' Brownian tree entropy"))
            .input(InputSpec::new("latent", PortType::Latent))
            .input(InputSpec::tensor("noise").optional().doc("prepare_noise's; absent: no noise (add_noise disabled)"))
            .input(InputSpec::tensor("mask").optional().doc(
                "inpainting (the latent's noise_mask): 1 where the sampler denoises, 0 where the latent is kept; \
                 any [.., H, W], resized as ComfyUI's prepare_mask",
            ))
            .input(prediction_input())
            .input(config_input())
            .output(OutputSpec::new("state", PortType::object(KSAMPLER_RUN)))
            .output(OutputSpec::new("latent", PortType::Latent).doc("the sampler's start"))
            .output(OutputSpec::new("evaluations", PortType::Int).doc("model evaluations of the run (the Loop's `over`)"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let m = method(inputs.str("sampler_name")?)
            .map_err(|e| format!("input `sampler_name`: {e}"))?;
        let ms = model_sampling(inputs, prediction(inputs)?)?;
        let sigmas = sigmas_of(inputs.tensor("sigmas")?)?;
        let latent = inputs.tensor("latent")?.f_to_kind(Kind::Float)?;
        let mut inpaint_noise = None;
        let x = if sigmas.len() < 2 {
            latent.shallow_clone()
        } else {
            let noise = match inputs.opt_tensor("noise")? {
                Some(n) if n.size() != latent.size() => {
                    return Err(format!(
                        "input `noise`: shape {:?} differs from the latent's {:?}",
                        n.size(),
                        latent.size()
                    )
                    .into())
                }
                Some(n) => n.f_to_kind(Kind::Float)?.f_to_device(latent.device())?,
                None => latent.f_zeros_like()?,
            };
            inpaint_noise = Some(noise.shallow_clone());
            let s0 = sigmas[0];
            let max = ms.max_denoise(s0).map_err(String::from)?;
            ms.noise_scaling(s0, &noise, &latent, max)
                .map_err(String::from)?
        };
        let n = evaluations(m, &sigmas)?;
        let seed = inputs.int("seed")?;
        let mut run = KRun::new(m, ms, sigmas, seed, x.shallow_clone());
        if let (Some(mask), Some(noise)) = (inputs.opt_tensor("mask")?, inpaint_noise) {
            let shape = latent.size();
            let mask = prepare_mask(mask, &shape)
                .map_err(|e| format!("input `mask`: {e}"))?
                .f_to_device(latent.device())?;
            // ddim: ksampler("euler", inpaint_options={"random": True}), noise of seed + 1.
            let noise = if inputs.str("sampler_name")? == "ddim" {
                seeded_randn(seed + 1, &shape)
                    .map_err(String::from)?
                    .f_to_device(latent.device())?
            } else {
                noise
            };
            run = run
                .with_inpaint(Inpaint {
                    mask,
                    latent,
                    noise,
                })
                .map_err(String::from)?;
        }
        Ok(vec![
            Object::new(KSAMPLER_RUN, KState(Mutex::new(run))).into(),
            x.into(),
            (n as i64).into(),
        ])
    }
}

pub(crate) fn state_input() -> InputSpec {
    InputSpec::new("state", PortType::object(KSAMPLER_RUN))
        .doc("the Loop's carried run (KSamplerStart, then KSamplerStep)")
}

pub struct KModelInput;

impl Node for KModelInput {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KModelInput", "sampling")
            .description(
                "Where the run evaluates the model next: the sample scaled as ComfyUI's calculate_input \
                 (x / sqrt(sigma² + 1)) and its timestep (the training timestep nearest in log-sigma).",
            )
            .input(state_input())
            .output(OutputSpec::new("sample", PortType::Latent))
            .output(OutputSpec::new("timestep", PortType::Float))
            .output(OutputSpec::new("sigma", PortType::Float))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let run = inputs.object::<KState>("state")?.lock();
        let (x, sigma) = run.model_input().map_err(String::from)?;
        let ms = run.sampling();
        let scaled = ms.calculate_input(sigma, &x).map_err(String::from)?;
        let t = ms.timestep(sigma).map_err(String::from)?;
        Ok(vec![
            scaled.into(),
            (t as f64).into(),
            f64::from(sigma).into(),
        ])
    }
}

pub struct CFGDenoise;

impl Node for CFGDenoise {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CFGDenoise", "sampling")
            .description(
                "ComfyUI's guidance: each branch's output as a denoised prediction (calculate_denoised: \
                 eps or v), mixed as cfg_function does, uncond + cfg·(cond − uncond). Without `uncond` \
                 (ComfyUI skips it at cfg 1) the conditional branch alone.",
            )
            .input(state_input())
            .input(InputSpec::tensor("output_cond").optional().doc("the model's output, conditional branch"))
            .input(InputSpec::tensor("output_uncond").optional())
            .input(InputSpec::tensor("denoised_cond").optional().doc(
                "instead of output_cond: the branch's denoised prediction already combined (AreaMean)",
            ))
            .input(InputSpec::tensor("denoised_uncond").optional().doc("instead of output_uncond (AreaMean)"))
            .input(InputSpec::float("cfg").default(1.0))
            .output(OutputSpec::new("denoised", PortType::Latent))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let run = inputs.object::<KState>("state")?.lock();
        let (x, sigma) = run.model_input().map_err(String::from)?;
        let ms = run.sampling();
        let den = |name: &str, t: &Tensor| -> Result<Tensor, NodeError> {
            if t.size() != x.size() {
                return Err(format!(
                    "input `{name}`: shape {:?}, the sample's is {:?}",
                    t.size(),
                    x.size()
                )
                .into());
            }
            Ok(ms.calculate_denoised(sigma, t, &x).map_err(String::from)?)
        };
        let branch = |output: &str, denoised: &str| -> Result<Option<Tensor>, NodeError> {
            match (inputs.opt_tensor(output)?, inputs.opt_tensor(denoised)?) {
                (Some(_), Some(_)) => {
                    Err(format!("give `{output}` or `{denoised}`, not both").into())
                }
                (Some(o), None) => Ok(Some(den(output, o)?)),
                (None, Some(d)) if d.size() != x.size() => Err(format!(
                    "input `{denoised}`: shape {:?}, the sample's is {:?}",
                    d.size(),
                    x.size()
                )
                .into()),
                (None, Some(d)) => Ok(Some(d.shallow_clone())),
                (None, None) => Ok(None),
            }
        };
        let cond = branch("output_cond", "denoised_cond")?
            .ok_or("the conditional branch: give `output_cond` or `denoised_cond`")?;
        let cfg = inputs.float("cfg")?;
        let uncond = match branch("output_uncond", "denoised_uncond")? {
            Some(u) => u,
            None => cond.f_zeros_like()?,
        };
        Ok(vec![cfg_mix(&cond, &uncond, cfg, 0.0)
            .map_err(String::from)?
            .into()])
    }
}

pub struct KSamplerStep;

impl Node for KSamplerStep {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSamplerStep", "sampling")
            .description(
                "One model evaluation's worth of the ComfyUI sampler: takes the denoised prediction at \
                 KModelInput's point and moves the run on (a two-evaluation step finishes on its second).",
            )
            .input(state_input())
            .input(InputSpec::new("denoised", PortType::Latent))
            .output(OutputSpec::new("state", PortType::object(KSAMPLER_RUN)))
            .output(OutputSpec::new("latent", PortType::Latent).doc("the sampler's x after this evaluation"))
            .output(
                OutputSpec::new("denoised", PortType::Latent)
                    .doc("the denoised prediction of the step's first evaluation (ComfyUI's x0 preview, SamplerCustom's denoised_output)"),
            )
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let run = inputs.object::<KState>("state")?.lock();
        let next = run.feed(inputs.tensor("denoised")?).map_err(String::from)?;
        let x = next.x().shallow_clone();
        let x0 = next.x0().unwrap_or(&x).shallow_clone();
        Ok(vec![
            Object::new(KSAMPLER_RUN, KState(Mutex::new(next))).into(),
            x.into(),
            x0.into(),
        ])
    }
}
