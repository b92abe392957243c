//! Area conditioning in the translated ComfyUI sampler (ComfyUI's
//! `ConditioningSetArea` as `comfy/samplers.py` `_calc_cond_batch` uses it):
//! `AreaCrop` cuts a cond's area out of the model input, `AreaAccumulate`
//! adds each cond's denoised prediction (of its crop) weighted by
//! `get_area_and_mult`'s mult, and `AreaMean` divides by the summed weights;
//! its result goes to `CFGDenoise`'s `denoised_cond` / `denoised_uncond`.
//! The math: `diffgraph_diffusion::comfy::area`.
use super::ksampler::{state_input, KState};
use diffgraph_diffusion::comfy::area;
use diffgraph_sdk::prelude::*;

fn area_input() -> InputSpec {
    InputSpec::new("area", PortType::list(PortType::Int))
        .doc("[height, width, y, x] in latent units (ConditioningSetArea's values // 8)")
}

fn read_area(inputs: &Inputs, dims: [i64; 2]) -> Result<Option<[i64; 4]>, NodeError> {
    if matches!(inputs.get("area")?, InputValue::None) {
        return Ok(None);
    }
    let a = inputs.int_list("area")?;
    let a: [i64; 4] = a
        .as_slice()
        .try_into()
        .map_err(|_| format!("input `area`: expected [height, width, y, x], got {a:?}"))?;
    Ok(Some(
        area::clamp(a, dims).map_err(|e| format!("input `area`: {e}"))?,
    ))
}

fn dims(x: &Tensor) -> Result<[i64; 2], NodeError> {
    match x.size()[..] {
        [_, _, h, w] => Ok([h, w]),
        ref s => Err(format!("expected a latent [B, C, H, W], got {s:?}").into()),
    }
}

pub struct AreaCrop;

impl Node for AreaCrop {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("AreaCrop", "sampling")
            .description("x[:, :, y:y+height, x:x+width], the area clamped to x as ComfyUI's get_area_and_mult does.")
            .input(InputSpec::new("x", PortType::Latent))
            .input(area_input())
            .output(OutputSpec::new("out", PortType::Latent))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let x = inputs.tensor("x")?;
        let a = read_area(inputs, dims(x)?)?.expect("a required input");
        Ok(vec![area::crop(x, a).map_err(String::from)?.into()])
    }
}

pub struct AreaAccumulate;

impl Node for AreaAccumulate {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("AreaAccumulate", "sampling")
            .description(
                "Adds one cond's prediction into the running weighted sum of ComfyUI's calc_cond_batch: its \
                 model output (on the area's crop of KModelInput's sample, or the whole sample) as a \
                 denoised prediction, times mult (strength, faded over the area's inner edges); count \
                 sums the mults (starting at 1e-37).",
            )
            .input(state_input())
            .input(InputSpec::tensor("output").doc("the model's output for this cond"))
            .input(area_input().optional())
            .input(InputSpec::float("strength").default(1.0))
            .input(InputSpec::tensor("sum").optional().doc("the previous AreaAccumulate's; absent: zeros"))
            .input(InputSpec::tensor("count").optional().doc("the previous AreaAccumulate's; absent: 1e-37"))
            .output(OutputSpec::new("sum", PortType::Tensor))
            .output(OutputSpec::new("count", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let run = inputs.object::<KState>("state")?.lock();
        let (x, sigma) = run.model_input().map_err(String::from)?;
        let d = dims(&x)?;
        let a = read_area(inputs, d)?;
        let xc = match a {
            Some(a) => area::crop(&x, a).map_err(String::from)?,
            None => x.shallow_clone(),
        };
        let output = inputs.tensor("output")?;
        if output.size() != xc.size() {
            return Err(format!(
                "input `output`: shape {:?}, the area's sample is {:?}",
                output.size(),
                xc.size()
            )
            .into());
        }
        let denoised = run
            .sampling()
            .calculate_denoised(sigma, output, &xc)
            .map_err(String::from)?;
        // Fresh tensors: the inputs may be cached values shared elsewhere.
        let sum = match inputs.opt_tensor("sum")? {
            Some(s) => s.copy(),
            None => x.f_zeros_like()?,
        };
        let count = match inputs.opt_tensor("count")? {
            Some(c) => c.copy(),
            None => x.f_ones_like()?.f_mul_scalar(1e-37)?,
        };
        if sum.size() != x.size() || count.size() != x.size() {
            return Err(format!(
                "inputs `sum` and `count`: expected the sample's shape {:?}",
                x.size()
            )
            .into());
        }
        let mult = area::mult(&xc.size(), a, d, inputs.float("strength")?).map_err(String::from)?;
        area::accumulate(&sum, &count, &denoised, &mult, a).map_err(String::from)?;
        Ok(vec![sum.into(), count.into()])
    }
}

pub struct AreaMean;

impl Node for AreaMean {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("AreaMean", "sampling")
            .description("sum / count: the conds' combined denoised prediction (calc_cond_batch's out_conds /= out_counts).")
            .input(InputSpec::tensor("sum"))
            .input(InputSpec::tensor("count"))
            .output(OutputSpec::new("denoised", PortType::Latent))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![inputs
            .tensor("sum")?
            .f_div(inputs.tensor("count")?)?
            .into()])
    }
}
