//! The interface every sampler implements, and what its `step` returns.
//!
//! A sampler is a state machine over one denoising run: it owns its
//! [`Schedule`] and timesteps, and `step` takes `&mut self` so that
//! multistep samplers (PNDM, LMS, DPM++) can keep a history of model outputs
//! and Euler/Heun a step counter. The graph's `SCHEDULER` object holds it
//! behind a mutex (see `crate::nodes::scheduler`), and the same object serves
//! every run of a cached graph: a stateful sampler must therefore reset its
//! history whenever `step` is called with its first timestep (diffusers'
//! `_init_step_index` looks the step index up from the timestep the same way).
use crate::schedule::Schedule;
use diffgraph_sdk::prelude::*;

/// The result of one denoising step (diffusers' `SchedulerOutput`).
pub struct StepOutput {
    /// x_{t-1}: the sample to feed the next step.
    pub prev_sample: Tensor,
    /// The model's current estimate of the clean sample x_0.
    pub pred_original_sample: Tensor,
}

pub trait Sampler: Send + 'static {
    /// The scheduler's name, for messages (e.g. `DDIM`).
    fn name(&self) -> &'static str;

    /// The noise schedule (betas, alphas_cumprod, config).
    fn schedule(&self) -> &Schedule;

    /// The timesteps to run, in order: the model is called once per entry.
    fn timesteps(&self) -> &[i64];

    /// Factor for the initial noise: latents = randn * init_noise_sigma.
    fn init_noise_sigma(&self) -> f64;

    /// Scales the sample before it goes into the model at `timestep`.
    fn scale_model_input(&self, sample: &Tensor, timestep: i64) -> Result<Tensor, NodeError>;

    /// One step from `sample` at `timestep` to the previous timestep, given
    /// the model's output for that sample and timestep.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
    ) -> Result<StepOutput, NodeError>;

    /// Position of `timestep` in [`Sampler::timesteps`], if it is there.
    fn step_index(&self, timestep: i64) -> Option<usize> {
        self.timesteps().iter().position(|&t| t == timestep)
    }
}

/// Checks that a step's tensors fit together (same shape and device).
pub fn check_step_inputs(model_output: &Tensor, sample: &Tensor) -> Result<(), NodeError> {
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
