//! The swap point: the interface every sampler implements. A new sampler is
//! one file in `crate::samplers` implementing [`Sampler`] and declaring its
//! `SamplerInfo`, plus its line in `crate::samplers::SAMPLERS`.
//!
//! A sampler is a state machine over one denoising run, like a diffusers
//! scheduler after `set_timesteps`: it owns its schedule and timesteps, and
//! `step` takes `&mut self` so that multistep samplers (PNDM, LMS, DPM++)
//! keep a history of model outputs and Heun its predictor state. Unlike
//! diffusers, the step index is not kept by the sampler but passed in by
//! `crate::state::SchedulerState`, which the graph's `Loop` carries from step
//! to step (the state clones the sampler for each step, so a state object is
//! never changed once made: graphs stay cacheable and re-runnable).
use crate::samplers::{SamplerInfo, Setup};
use diffgraph_diffusion::{integer_timestep, scalar, Result, Schedule};
use diffgraph_sdk::tch::Tensor;

/// The result of one denoising step (diffusers' `SchedulerOutput`).
pub struct StepOutput {
    /// x_{t-1}: the sample to feed the next step.
    pub prev_sample: Tensor,
    /// The model's current estimate of the clean sample x_0 (for PNDM, which
    /// has none in diffusers, the estimate implied by the model output).
    pub pred_original_sample: Tensor,
}

/// The inputs of one step.
pub struct StepInput<'a> {
    /// Position in [`Sampler::timesteps`].
    pub index: usize,
    /// `timesteps()[index]`.
    pub timestep: f32,
    pub model_output: &'a Tensor,
    pub sample: &'a Tensor,
    /// This step's draw from the run's seeded generator, shaped, typed and
    /// placed like its argument (see `crate::noise`). Only stochastic
    /// samplers call it.
    pub noise: &'a dyn Fn(&Tensor) -> Result<Tensor>,
}

pub trait Sampler: Send + 'static {
    /// The sampler's declaration (its `INFO`): names, options.
    fn info(&self) -> &'static SamplerInfo;

    /// The noise schedule (betas, alphas_cumprod, config).
    fn schedule(&self) -> &Schedule;

    /// The timesteps to run, in order: the model is called once per entry
    /// (diffusers' `scheduler.timesteps`; Heun repeats all but the first,
    /// PNDM repeats the second). float32, as diffusers' tensors are (the
    /// integer samplers' values are exact).
    fn timesteps(&self) -> &[f32];

    /// diffusers' `scheduler.sigmas` for the sigma samplers (one per
    /// timestep plus the final one), empty for the others.
    fn sigmas(&self) -> &[f32] {
        &[]
    }

    /// diffusers' `scheduler.order`: model calls per inference step (2 for
    /// Heun); img2img skips `t_start * order` timesteps.
    fn order(&self) -> usize {
        1
    }

    /// Factor for the initial noise: latents = randn * init_noise_sigma.
    fn init_noise_sigma(&self) -> Result<f32>;

    /// True when a step depends on earlier steps of the run (history, a
    /// predictor state), so that the state must be carried through the loop.
    fn is_multistep(&self) -> bool {
        false
    }

    /// Scales the sample before it goes into the model at step `index`.
    fn scale_model_input(&self, sample: &Tensor, _index: usize) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    /// One step from `input.sample` at step `input.index` to the next.
    fn step(&mut self, input: StepInput) -> Result<StepOutput>;

    /// `original` noised to step `index` (timestep `timestep`), as the
    /// scheduler's `add_noise` does for img2img.
    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        index: usize,
        timestep: f32,
    ) -> Result<Tensor>;

    /// The cumulative alpha of the model's input at step `index`: for the
    /// sigma samplers 1 / (sigma² + 1) (the model sees x / sqrt(sigma² + 1)),
    /// else `alphas_cumprod[timestep]`.
    fn alpha_bar(&self, index: usize, timestep: f32) -> Result<f64> {
        let _ = index;
        Ok(f64::from(
            self.schedule().alpha_cumprod(integer_timestep(timestep)?)?,
        ))
    }

    /// A copy with the same schedule and history (tensors shallowly copied).
    fn box_clone(&self) -> Box<dyn Sampler>;
}

/// Checks that a step's tensors fit together (same shape and device).
pub fn check_step_inputs(model_output: &Tensor, sample: &Tensor) -> Result<()> {
    if model_output.size() != sample.size() {
        return Err(format!(
            "model_output has shape {:?} but sample has shape {:?}; they must match",
            model_output.size(),
            sample.size()
        )
        .into());
    }
    if model_output.device() != sample.device() {
        return Err(format!(
            "model_output is on {:?} but sample is on {:?}",
            model_output.device(),
            sample.device()
        )
        .into());
    }
    Ok(())
}

/// Shallow copies of a list of tensors (for `box_clone`).
pub fn clone_tensors(tensors: &[Tensor]) -> Vec<Tensor> {
    tensors.iter().map(Tensor::shallow_clone).collect()
}

/// `sqrt(a)·x + sqrt(1 - a)·noise` with a = alphas_cumprod[timestep]
/// (`add_noise` of scheduling_ddim.py, scheduling_ddpm.py, scheduling_pndm.py;
/// float32 as there).
pub fn add_noise_alpha(
    schedule: &Schedule,
    original: &Tensor,
    noise: &Tensor,
    timestep: f32,
) -> Result<Tensor> {
    let a = schedule.alpha_cumprod(integer_timestep(timestep)?)?;
    let sqrt_a = f64::from(scalar::sqrt(a)?);
    let sqrt_one_minus_a = f64::from(scalar::sqrt(1.0 - a)?);
    Ok(original
        .f_mul_scalar(sqrt_a)?
        .f_add(&noise.f_mul_scalar(sqrt_one_minus_a)?)?)
}

/// `original + noise · sigma` (`add_noise` of the Euler, LMS and Heun
/// schedulers, with the sigma of the step).
pub fn add_noise_sigma(original: &Tensor, noise: &Tensor, sigma: f32) -> Result<Tensor> {
    Ok(original.f_add(&noise.f_mul_scalar(f64::from(sigma))?)?)
}

/// `clip_sample` and `clip_sample_range` (DDIM, DDPM, Heun): the predicted
/// x0 clamped to ±range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipSample {
    pub clip: bool,
    pub range: f64,
}

impl ClipSample {
    /// The class's keys, `clip` being its default for `clip_sample`.
    pub fn read(setup: &Setup, clip: bool) -> Result<ClipSample> {
        Ok(ClipSample {
            clip: setup.flag("clip_sample", clip)?,
            range: setup.num("clip_sample_range", 1.0)?,
        })
    }

    pub fn apply(&self, x0: Tensor) -> Result<Tensor> {
        Ok(if self.clip {
            x0.f_clamp(-self.range, self.range)?
        } else {
            x0
        })
    }
}
