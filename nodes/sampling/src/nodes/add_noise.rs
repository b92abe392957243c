//! `AddNoise` (img2img: the encoded image noised to the run's first
//! timestep) and `SchedulerAlphaBar` (the noise level of a timestep, for
//! guidance nodes).
use super::step::{state_input, timestep, timestep_input};
use crate::state::SchedulerState;
use diffgraph_sdk::prelude::*;

pub struct AddNoise;

impl Node for AddNoise {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("AddNoise", "sampling")
            .description(
                "The scheduler's add_noise: `sample` noised to `timestep` (default: the run's first, which \
                 is what img2img starts from). DDIM/DDPM/PNDM: sqrt(a)·x + sqrt(1-a)·noise; Euler, LMS, \
                 Heun: x + sigma·noise; DPM++: x/sqrt(sigma²+1) + sigma/sqrt(sigma²+1)·noise.",
            )
            .input(state_input().doc("the scheduler's state (before the loop)"))
            .input(InputSpec::new("sample", PortType::Latent).doc("the clean latent (e.g. the encoded image)"))
            .input(InputSpec::tensor("noise").doc("standard normal noise shaped like `sample`"))
            .input(timestep_input().doc("default: the run's first timestep"))
            .output(OutputSpec::new("noisy", PortType::Latent))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let state = inputs.object::<SchedulerState>("state")?;
        let noisy = state
            .add_noise(
                inputs.tensor("sample")?,
                inputs.tensor("noise")?,
                timestep(inputs)?,
            )
            .map_err(String::from)?;
        Ok(vec![noisy.into()])
    }
}

pub struct SchedulerAlphaBar;

impl Node for SchedulerAlphaBar {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SchedulerAlphaBar", "sampling")
            .description(
                "The cumulative alpha (alpha_bar) of the model's input at `timestep`, and its sigma = \
                 sqrt((1 - alpha_bar) / alpha_bar): alphas_cumprod[t] for DDIM, DDPM and PNDM; \
                 1 / (sigma² + 1) of the step's sigma for the sigma samplers, whose model input is scaled \
                 to that level (Karras and fractional timesteps included).",
            )
            .input(state_input())
            .input(timestep_input())
            .output(OutputSpec::new("alpha_bar", PortType::Float))
            .output(OutputSpec::new("sigma", PortType::Float))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let state = inputs.object::<SchedulerState>("state")?;
        let a = state.alpha_bar(timestep(inputs)?).map_err(String::from)?;
        Ok(vec![a.into(), ((1.0 - a) / a).sqrt().into()])
    }
}
