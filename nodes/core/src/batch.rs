//! Batch slicing, repeating and joining of [B,...] tensors, with ComfyUI's
//! rules (`nodes.py` `LatentFromBatch`, `RepeatLatentBatch`, `ImageBatch`).
use crate::resize::common_upscale;
use diffgraph_sdk::prelude::*;

fn batched(name: &str, t: &Tensor) -> Result<i64, NodeError> {
    match t.size().first() {
        Some(&b) if b > 0 => Ok(b),
        _ => Err(format!(
            "input `{name}`: expected a tensor with a non-empty batch dimension, got shape {:?}",
            t.size()
        )
        .into()),
    }
}

pub struct BatchSlice;

impl Node for BatchSlice {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("BatchSlice", "latent")
            .description(
                "Items `start` .. `start + length` of the batch, clamped as ComfyUI's LatentFromBatch: \
                 start at most B - 1, length at most what is left. `batch_index` lists the items' \
                 positions in the original batch (ComfyUI keeps them with the latent so that a \
                 sampler draws each item's own noise).",
            )
            .input(InputSpec::tensor("x"))
            .input(InputSpec::int("start").default(0).min(0.0))
            .input(InputSpec::int("length").default(1).min(1.0))
            .output(OutputSpec::new("out", PortType::Tensor))
            .output(OutputSpec::new("batch_index", PortType::list(PortType::Int)))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let x = inputs.tensor("x")?;
        let b = batched("x", x)?;
        let start = inputs.int("start")?.clamp(0, b - 1);
        let length = inputs.int("length")?.max(1).min(b - start);
        let out = x.f_narrow(0, start, length)?.f_contiguous()?;
        let index: Vec<i64> = (start..start + length).collect();
        Ok(vec![out.into(), index.into()])
    }
}

pub struct BatchRepeat;

impl Node for BatchRepeat {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("BatchRepeat", "latent")
            .description(
                "The whole batch `amount` times over (x.repeat(amount, 1, ...), ComfyUI's \
                 RepeatLatentBatch): [a, b] twice is [a, b, a, b].",
            )
            .input(InputSpec::tensor("x"))
            .input(InputSpec::int("amount").default(1).min(1.0))
            .output(OutputSpec::new("out", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let x = inputs.tensor("x")?;
        batched("x", x)?;
        let amount = inputs.int("amount")?;
        if amount < 1 {
            return Err(format!("input `amount`: expected at least 1, got {amount}").into());
        }
        let mut reps = vec![1i64; x.dim()];
        reps[0] = amount;
        Ok(vec![x.f_repeat(reps.as_slice())?.into()])
    }
}

pub struct BatchConcat;

impl Node for BatchConcat {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("BatchConcat", "image")
            .description(
                "`a`'s batch followed by `b`'s ([B,C,H,W] each). When their other dimensions differ, \
                 `b` is first resized to `a`'s height and width (bilinear, centre crop), as ComfyUI's \
                 ImageBatch.",
            )
            .input(InputSpec::tensor("a"))
            .input(InputSpec::tensor("b"))
            .output(OutputSpec::new("out", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let (a, b) = (inputs.tensor("a")?, inputs.tensor("b")?);
        for (name, t) in [("a", a), ("b", b)] {
            if t.dim() != 4 || t.size()[0] == 0 {
                return Err(format!(
                    "input `{name}`: expected a [B,C,H,W] tensor, got shape {:?}",
                    t.size()
                )
                .into());
            }
        }
        Ok(vec![concat(a, b)?.into()])
    }
}

/// `a` then `b` along the batch, `b` resized to `a`'s size when it differs.
pub(crate) fn concat(a: &Tensor, b: &Tensor) -> Result<Tensor, NodeError> {
    let b = if a.size()[1..] != b.size()[1..] {
        common_upscale(b, a.size()[3], a.size()[2], "bilinear", true)?
    } else {
        b.shallow_clone()
    };
    let out = Tensor::f_cat(&[a, &b], 0).map_err(|e| {
        format!(
            "inputs `a` {:?} and `b` {:?} cannot be joined: {e}",
            a.size(),
            b.size()
        )
    })?;
    Ok(out)
}
