//! The `SCHEDULER` object: a sampler at a point of its run, carried through
//! the graph's `Loop` (inputs `state` and the latent, `next: state <-
//! SchedulerStep.state`).
//!
//! diffusers keeps a `step_index` inside the scheduler: `None` until the
//! first `step` (or `scale_model_input`), then found from the timestep
//! (`index_for_timestep`) or taken from `begin_index` (img2img's
//! `set_begin_index(t_start * order)`), and incremented by each `step`. Here
//! a state object never changes: `SchedulerStep` returns a new state with the
//! advanced index and the sampler's updated history. A state that has not
//! stepped yet resolves the index from the timestep it is given, which also
//! lets stateless samplers (DDIM, DDPM, Euler, Euler ancestral) run from an
//! uncarried state (every iteration reading the scheduler node's output, as
//! the demo graph does); multistep samplers refuse that with a clear error.
use crate::noise::NoiseStream;
use crate::sampler::{Sampler, StepInput, StepOutput};
use diffgraph_diffusion::{Error, Result};
use diffgraph_sdk::tch::Tensor;
use std::sync::{Mutex, MutexGuard};

/// Port type of the scheduler object.
pub const SCHEDULER: &str = "SCHEDULER";

struct Inner {
    sampler: Box<dyn Sampler>,
    /// The run's first index: `t_start * order` for img2img, else 0.
    start: usize,
    /// The index of the next step, once this run has stepped.
    next: Option<usize>,
    noise: NoiseStream,
}

/// A sampler at a point of its run. The mutex only makes the object `Sync`
/// (tensors are not); nothing mutates a state after it is made.
pub struct SchedulerState {
    inner: Mutex<Inner>,
}

impl SchedulerState {
    /// A state before the first step of a run that starts at index `start`.
    pub fn new(sampler: Box<dyn Sampler>, start: usize, noise: NoiseStream) -> SchedulerState {
        SchedulerState {
            inner: Mutex::new(Inner {
                sampler,
                start,
                next: None,
                noise,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the sampler (read-only).
    pub fn with_sampler<R>(&self, f: impl FnOnce(&dyn Sampler) -> R) -> R {
        f(self.lock().sampler.as_ref())
    }

    /// The timesteps of this run: the sampler's from `start` on.
    pub fn run_timesteps(&self) -> Vec<f32> {
        let inner = self.lock();
        inner.sampler.timesteps()[inner.start..].to_vec()
    }

    /// The step index for `timestep` (the expected one when `None`).
    pub fn resolve(&self, timestep: Option<f64>) -> Result<(usize, f32)> {
        resolve(&self.lock(), timestep)
    }

    /// `scale_model_input` at `timestep`.
    pub fn scale_model_input(&self, sample: &Tensor, timestep: Option<f64>) -> Result<Tensor> {
        let inner = self.lock();
        let (index, _) = resolve(&inner, timestep)?;
        inner.sampler.scale_model_input(sample, index)
    }

    /// The cumulative alpha of the model's input at `timestep`.
    pub fn alpha_bar(&self, timestep: Option<f64>) -> Result<f64> {
        let inner = self.lock();
        let (index, t) = resolve(&inner, timestep)?;
        inner.sampler.alpha_bar(index, t)
    }

    /// `add_noise` at `timestep`, by default the run's first (img2img).
    pub fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        timestep: Option<f64>,
    ) -> Result<Tensor> {
        if original.size() != noise.size() {
            return Err(format!(
                "the sample has shape {:?} but the noise {:?}",
                original.size(),
                noise.size()
            )
            .into());
        }
        let inner = self.lock();
        let (index, t) = resolve(&inner, timestep)?;
        let noise = noise
            .f_to_device(original.device())?
            .f_to_kind(original.kind())?;
        inner.sampler.add_noise(original, &noise, index, t)
    }

    /// One step; returns its output and the state after it.
    pub fn step(
        &self,
        model_output: &Tensor,
        timestep: Option<f64>,
        sample: &Tensor,
    ) -> Result<(StepOutput, SchedulerState)> {
        let inner = self.lock();
        let (index, t) = resolve(&inner, timestep)?;
        let mut sampler = inner.sampler.box_clone();
        let (start, noise) = (inner.start, inner.noise.clone());
        drop(inner);
        let run_len = sampler.timesteps().len() - start;
        let draw = |like: &Tensor| noise.noise(index - start, run_len, like);
        let out = sampler.step(StepInput {
            index,
            timestep: t,
            model_output,
            sample,
            noise: &draw,
        })?;
        let next = SchedulerState {
            inner: Mutex::new(Inner {
                sampler,
                start,
                next: Some(index + 1),
                noise,
            }),
        };
        Ok((out, next))
    }
}

fn resolve(inner: &Inner, timestep: Option<f64>) -> Result<(usize, f32)> {
    let ts = inner.sampler.timesteps();
    let name = inner.sampler.info().class_name;
    match inner.next {
        Some(i) => {
            let expected = *ts.get(i).ok_or_else(|| {
                Error::Invalid(format!(
                    "{name}: all {} steps of the run are done; the loop runs longer than the scheduler's timesteps",
                    ts.len() - inner.start
                ))
            })?;
            if let Some(t) = timestep {
                if t as f32 != expected {
                    return Err(format!(
                        "{name}: got timestep {t} but the scheduler state is at step {i}, timestep {expected}; \
                         iterate the Loop over the scheduler's `timesteps` and carry its `state`"
                    )
                    .into());
                }
            }
            Ok((i, expected))
        }
        None => {
            let Some(t) = timestep else {
                return ts
                    .get(inner.start)
                    .map(|&t| (inner.start, t))
                    .ok_or_else(|| Error::Invalid(format!("{name}: the run has no timesteps")));
            };
            let t = t as f32;
            let index = (inner.start..ts.len())
                .find(|&i| ts[i] == t)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "{name}: timestep {t} is not one of this run's timesteps {:?}",
                        &ts[inner.start..]
                    ))
                })?;
            if index != inner.start && inner.sampler.is_multistep() {
                return Err(format!(
                    "{name} is a multistep sampler: each step needs the state the previous step returned. \
                     Carry the scheduler state through the Loop (loop input `state`, `next: {{\"state\": \
                     [\"<step node>\", \"state\"]}}`) and give SchedulerStep the loop's `state`"
                )
                .into());
            }
            Ok((index, t))
        }
    }
}
