//! TorchScript denoisers: a module with forward(x_t, t, context) -> model
//! output (t a float tensor [B]), for models the project does not implement
//! natively (and the analytic test models of tests/fixtures). Loaded by
//! `LoadTorchScriptDenoiser` (`nodes/torchscript.rs`).
use super::{Accepts, Conditioning, Denoiser, OutputLayout};
use diffgraph_diffusion::PredictionType;
use diffgraph_sdk::prelude::*;

pub struct TorchScript {
    module: tch::CModule,
    layout: OutputLayout,
}

impl TorchScript {
    pub fn new(module: tch::CModule, prediction_type: PredictionType) -> TorchScript {
        TorchScript {
            module,
            layout: OutputLayout::prediction(prediction_type),
        }
    }
}

impl Denoiser for TorchScript {
    fn family(&self) -> &'static str {
        "TorchScript denoiser (forward(x_t, t, context))"
    }

    fn accepts(&self) -> Accepts {
        Accepts::TEXT
    }

    fn output_layout(&self) -> &OutputLayout {
        &self.layout
    }

    fn kind(&self) -> Kind {
        Kind::Float
    }

    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Tensor, NodeError> {
        let context = cond.context.as_ref().ok_or("the module needs a context")?;
        let ts = Tensor::full([x.size()[0]], t, (Kind::Float, x.device()));
        Ok(tch::no_grad(|| {
            self.module
                .forward_ts(&[x.shallow_clone(), ts, context.shallow_clone()])
        })?)
    }
}
