//! The nodes that use a `SCHEDULER` inside a sampling loop: `SchedulerStep`
//! (one denoising step) and `ScaleModelInput` (the model input's scaling).
use super::scheduler::{SchedulerState, SCHEDULER};
use diffgraph_sdk::prelude::*;

fn state_input() -> InputSpec {
    InputSpec::new("state", PortType::object(SCHEDULER))
}

pub struct SchedulerStep;

impl Node for SchedulerStep {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SchedulerStep", "sampling")
            .description(
                "One denoising step of the scheduler: from `sample` at `timestep` to the previous timestep, \
                 given the model's output. Runs inside a Loop body, once per timestep.",
            )
            .input(state_input())
            .input(InputSpec::tensor("model_output").doc("the model's prediction for `sample` at `timestep`"))
            .input(InputSpec::int("timestep").min(0.0))
            .input(InputSpec::new("sample", PortType::Latent))
            .output(OutputSpec::new("prev_sample", PortType::Latent))
            .output(OutputSpec::new("pred_original_sample", PortType::Latent).doc("the predicted clean sample x0"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let state = inputs.object::<SchedulerState>("state")?;
        let mut sampler = state.lock()?;
        let out = sampler.step(
            inputs.tensor("model_output")?,
            inputs.int("timestep")?,
            inputs.tensor("sample")?,
        )?;
        Ok(vec![
            out.prev_sample.into(),
            out.pred_original_sample.into(),
        ])
    }
}

pub struct ScaleModelInput;

impl Node for ScaleModelInput {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ScaleModelInput", "sampling")
            .description(
                "Scales the sample before it goes into the model at `timestep` (identity for DDIM; \
                 the Euler family divides by sqrt(sigma^2 + 1)).",
            )
            .input(state_input())
            .input(InputSpec::new("sample", PortType::Latent))
            .input(InputSpec::int("timestep").min(0.0))
            .output(OutputSpec::new("sample", PortType::Latent))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let state = inputs.object::<SchedulerState>("state")?;
        let sampler = state.lock()?;
        let scaled =
            sampler.scale_model_input(inputs.tensor("sample")?, inputs.int("timestep")?)?;
        Ok(vec![scaled.into()])
    }
}
