//! Small arithmetic nodes: tensor sums, scaling and statistics, plus scalar
//! additions for trivial graphs and tests.
use diffgraph_sdk::prelude::*;

pub struct TensorAdd;

impl Node for TensorAdd {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TensorAdd", "math")
            .description("a + b, with PyTorch broadcasting.")
            .input(InputSpec::tensor("a"))
            .input(InputSpec::tensor("b"))
            .output(OutputSpec::new("sum", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let (a, b) = (inputs.tensor("a")?, inputs.tensor("b")?);
        let sum = a.f_add(b).map_err(|e| {
            format!(
                "inputs `a` (shape {:?}, {:?}, {:?}) and `b` (shape {:?}, {:?}, {:?}) cannot be added: {e}",
                a.size(),
                a.kind(),
                a.device(),
                b.size(),
                b.kind(),
                b.device()
            )
        })?;
        Ok(vec![sum.into()])
    }
}

pub struct TensorScale;

impl Node for TensorScale {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TensorScale", "math")
            .description("x * factor.")
            .input(InputSpec::tensor("x"))
            .input(InputSpec::float("factor"))
            .output(OutputSpec::new("scaled", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let scaled = inputs.tensor("x")?.f_mul_scalar(inputs.float("factor")?)?;
        Ok(vec![scaled.into()])
    }
}

pub struct TensorStats;

impl Node for TensorStats {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TensorStats", "math")
            .description(
                "Mean, standard deviation (unbiased, like torch.std), minimum and maximum of all \
                 elements, computed in float64.",
            )
            .input(InputSpec::tensor("x"))
            .output(OutputSpec::new("mean", PortType::Float))
            .output(OutputSpec::new("std", PortType::Float))
            .output(OutputSpec::new("min", PortType::Float))
            .output(OutputSpec::new("max", PortType::Float))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let x = inputs.tensor("x")?;
        if x.numel() == 0 {
            return Err(format!(
                "input `x`: expected a non-empty tensor, got shape {:?}",
                x.size()
            )
            .into());
        }
        // float64 so that large float32 tensors do not lose precision in the sums.
        let x = x.f_to_kind(Kind::Double)?;
        let stats = [
            x.f_mean(Kind::Double)?,
            x.f_std(true)?,
            x.f_min()?,
            x.f_max()?,
        ];
        stats
            .iter()
            .map(|s| Ok(Value::Float(s.f_double_value(&[])?)))
            .collect()
    }
}

/// A tensor's shape, for nodes that take one (GaussianNoise "like" a latent:
/// ComfyUI's `prepare_noise` draws noise of the latent's shape).
pub struct TensorShape;

impl Node for TensorShape {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TensorShape", "math")
            .description(
                "The shape of `x` as a list of integers (e.g. for GaussianNoise's `shape`).",
            )
            .input(InputSpec::tensor("x"))
            .output(OutputSpec::new("shape", PortType::list(PortType::Int)))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![inputs.tensor("x")?.size().into()])
    }
}

pub struct FloatAdd;

impl Node for FloatAdd {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("FloatAdd", "math")
            .description("a + b for floats.")
            .input(InputSpec::float("a"))
            .input(InputSpec::float("b"))
            .output(OutputSpec::new("sum", PortType::Float))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![(inputs.float("a")? + inputs.float("b")?).into()])
    }
}

pub struct IntAdd;

impl Node for IntAdd {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("IntAdd", "math")
            .description("a + b for integers; overflowing i64 is an error.")
            .input(InputSpec::int("a"))
            .input(InputSpec::int("b"))
            .output(OutputSpec::new("sum", PortType::Int))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let (a, b) = (inputs.int("a")?, inputs.int("b")?);
        let sum = a
            .checked_add(b)
            .ok_or_else(|| format!("{a} + {b} overflows a 64-bit integer"))?;
        Ok(vec![sum.into()])
    }
}
