//! Elementwise product and indexing of tensors: what a graph needs to write a
//! reverse step by hand, e.g. guided-diffusion's learned-variance DDPM step
//! (`mean + exp(0.5·log Σ)·noise`, `gaussian_diffusion.py` `p_sample`) with
//! the step's own draw picked from a pre-drawn noise tensor by the Loop's
//! `index`.
use diffgraph_sdk::prelude::*;

pub struct TensorMul;

impl Node for TensorMul {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TensorMul", "math")
            .description("a * b elementwise, with PyTorch broadcasting.")
            .input(InputSpec::tensor("a"))
            .input(InputSpec::tensor("b"))
            .output(OutputSpec::new("product", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let (a, b) = (inputs.tensor("a")?, inputs.tensor("b")?);
        let product = a.f_mul(b).map_err(|e| {
            format!(
                "inputs `a` (shape {:?}, {:?}) and `b` (shape {:?}, {:?}) cannot be multiplied: {e}",
                a.size(),
                a.kind(),
                b.size(),
                b.kind()
            )
        })?;
        Ok(vec![product.into()])
    }
}

pub struct TensorSelect;

impl Node for TensorSelect {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TensorSelect", "math")
            .description(
                "x[index] along `dim` (that dimension removed), e.g. one step's draw from a [steps, B, C, H, W] \
                 noise tensor with a Loop's `index`. A negative index counts from the end, as in PyTorch.",
            )
            .input(InputSpec::tensor("x"))
            .input(InputSpec::int("index"))
            .input(InputSpec::int("dim").default(0))
            .output(OutputSpec::new("selected", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let x = inputs.tensor("x")?;
        let (index, dim) = (inputs.int("index")?, inputs.int("dim")?);
        let shape = x.size();
        let rank = shape.len() as i64;
        if rank == 0 || dim < -rank || dim >= rank {
            return Err(format!(
                "input `dim`: {dim} is not a dimension of a tensor of shape {shape:?}"
            )
            .into());
        }
        let d = if dim < 0 { dim + rank } else { dim };
        let n = shape[d as usize];
        if index < -n || index >= n {
            return Err(format!(
                "input `index`: {index} is out of range for dimension {d} of size {n} (shape {shape:?})"
            )
            .into());
        }
        Ok(vec![x.f_select(d, index)?.into()])
    }
}
