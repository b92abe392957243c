//! The nodes that use a `SCHEDULER` inside a sampling loop: `SchedulerStep`
//! (one denoising step; its `state` output is the next iteration's state) and
//! `ScaleModelInput` (the model input's scaling).
use crate::state::{SchedulerState, SCHEDULER};
use diffgraph_sdk::prelude::*;

pub fn state_input() -> InputSpec {
    InputSpec::new("state", PortType::object(SCHEDULER))
        .doc("the loop's carried scheduler state (or the scheduler's, for stateless samplers)")
}

pub fn timestep_input() -> InputSpec {
    InputSpec::float("timestep").optional().doc(
        "the loop's item; checked against the state's step (default: the state's next timestep)",
    )
}

/// The optional `timestep` input.
pub fn timestep(inputs: &Inputs) -> Result<Option<f64>, NodeError> {
    inputs.opt_float("timestep")
}

pub struct SchedulerStep;

impl Node for SchedulerStep {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SchedulerStep", "sampling")
            .description(
                "One denoising step of the scheduler: from `sample` at `timestep` to the next timestep, \
                 given the model's output. Runs inside a Loop body, once per timestep; feed `state` back \
                 as the loop's next state.",
            )
            .input(state_input())
            .input(InputSpec::tensor("model_output").doc("the model's prediction for `sample` at `timestep`"))
            .input(timestep_input())
            .input(InputSpec::new("sample", PortType::Latent))
            .output(OutputSpec::new("prev_sample", PortType::Latent))
            .output(OutputSpec::new("pred_original_sample", PortType::Latent).doc("the predicted clean sample x0"))
            .output(OutputSpec::new("state", PortType::object(SCHEDULER)).doc("the state after this step"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let state = inputs.object::<SchedulerState>("state")?;
        let (out, next) = state
            .step(
                inputs.tensor("model_output")?,
                timestep(inputs)?,
                inputs.tensor("sample")?,
            )
            .map_err(String::from)?;
        Ok(vec![
            out.prev_sample.into(),
            out.pred_original_sample.into(),
            Object::new(SCHEDULER, next).into(),
        ])
    }
}

pub struct ScaleModelInput;

impl Node for ScaleModelInput {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ScaleModelInput", "sampling")
            .description(
                "Scales the sample before it goes into the model at `timestep` (identity for DDIM, DDPM, PNDM \
                 and DPM++; the Euler family, LMS and Heun divide by sqrt(sigma^2 + 1)).",
            )
            .input(state_input())
            .input(InputSpec::new("sample", PortType::Latent))
            .input(timestep_input())
            .output(OutputSpec::new("sample", PortType::Latent))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let state = inputs.object::<SchedulerState>("state")?;
        let scaled = state
            .scale_model_input(inputs.tensor("sample")?, timestep(inputs)?)
            .map_err(String::from)?;
        Ok(vec![scaled.into()])
    }
}
