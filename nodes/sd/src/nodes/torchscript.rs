//! `LoadTorchScriptDenoiser`: a TorchScript module as a `MODEL`
//! (family: [`crate::family::torchscript`]).
use crate::family::torchscript::TorchScript;
use crate::family::{Model, MODEL};
use diffgraph_diffusion::{ConfigName, PredictionType};
use diffgraph_sdk::prelude::*;

/// Loads a TorchScript denoiser for models the project does not implement
/// natively.
pub struct LoadTorchScriptDenoiser;

impl Node for LoadTorchScriptDenoiser {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadTorchScriptDenoiser", "loaders")
            .description(
                "Loads a TorchScript module with forward(x_t, t, context) -> model output (t: float tensor [B]) \
                 as a MODEL for UNetStep; prediction_type says what it predicts.",
            )
            .input(InputSpec::string("path").file().doc("a TorchScript file saved with torch.jit.save"))
            .input(
                InputSpec::string("prediction_type")
                    .default(PredictionType::Epsilon.name())
                    .choices(&PredictionType::names()),
            )
            .output(OutputSpec::new("model", PortType::object(MODEL)))
            .output(OutputSpec::new("prediction_type", PortType::String))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let path = inputs.str("path")?;
        let mut module = tch::CModule::load_on_device(path, ctx.device())
            .map_err(|e| NodeError::new(format!("cannot load TorchScript module {path}: {e}")))?;
        module.set_eval();
        let prediction = PredictionType::parse("prediction_type", inputs.str("prediction_type")?)
            .map_err(String::from)?;
        Ok(vec![
            Object::new(MODEL, Model::new(TorchScript::new(module, prediction))).into(),
            prediction.name().into(),
        ])
    }
}
