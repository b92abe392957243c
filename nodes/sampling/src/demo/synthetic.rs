//! `SyntheticModel`: a fixed, cheap stand-in for a denoising network,
//! `model_output = scale·sample + sin(timestep / period)·direction`, computed
//! with the same float32 tensor ops as the diffusers fixture script
//! (scripts/fixtures/scheduler_reference.py), so that whole sampling
//! trajectories can be compared with diffusers' schedulers.
use diffgraph_sdk::prelude::*;

/// `scale * sample + sin(timestep / period) * direction` (`sin` in float64,
/// then each product in the tensors' float32, as torch does with Python floats).
pub fn synthetic_output(
    sample: &Tensor,
    timestep: f64,
    direction: &Tensor,
    scale: f64,
    period: f64,
) -> Result<Tensor, NodeError> {
    let s = (timestep / period).sin();
    Ok(sample
        .f_mul_scalar(scale)?
        .f_add(&direction.f_to_device(sample.device())?.f_mul_scalar(s)?)?)
}

pub struct SyntheticModel;

impl Node for SyntheticModel {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SyntheticModel", "demo")
            .description(
                "A fixed stand-in model for scheduler tests: scale·sample + sin(timestep / period)·direction.",
            )
            .input(InputSpec::new("sample", PortType::Latent))
            .input(InputSpec::float("timestep"))
            .input(InputSpec::tensor("direction").doc("shaped like sample"))
            .input(InputSpec::float("scale").default(0.1))
            .input(InputSpec::float("period").default(100.0))
            .output(OutputSpec::new("model_output", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let out = synthetic_output(
            inputs.tensor("sample")?,
            inputs.float("timestep")?,
            inputs.tensor("direction")?,
            inputs.float("scale")?,
            inputs.float("period")?,
        )?;
        Ok(vec![out.into()])
    }
}
