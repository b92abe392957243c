//! Constant nodes: they turn a literal from the graph file into an output, so
//! that one value can feed several inputs (and be overridden with `--set`).
use diffgraph_sdk::prelude::*;

/// Ranges longer than this are almost certainly a mistake in the graph and
/// would only exhaust memory.
const MAX_RANGE_LEN: i128 = 10_000_000;

pub struct IntConstant;

impl Node for IntConstant {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("IntConstant", "constants")
            .description("An integer constant.")
            .input(InputSpec::int("value"))
            .output(OutputSpec::new("value", PortType::Int))
    }
    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![inputs.int("value")?.into()])
    }
}

pub struct FloatConstant;

impl Node for FloatConstant {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("FloatConstant", "constants")
            .description("A floating-point constant (integers are accepted and converted).")
            .input(InputSpec::float("value"))
            .output(OutputSpec::new("value", PortType::Float))
    }
    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![inputs.float("value")?.into()])
    }
}

pub struct BoolConstant;

impl Node for BoolConstant {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("BoolConstant", "constants")
            .description("A boolean constant.")
            .input(InputSpec::bool("value"))
            .output(OutputSpec::new("value", PortType::Bool))
    }
    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![inputs.bool("value")?.into()])
    }
}

pub struct StringConstant;

impl Node for StringConstant {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("StringConstant", "constants")
            .description("A string constant.")
            .input(InputSpec::string("value"))
            .output(OutputSpec::new("value", PortType::String))
    }
    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![inputs.str("value")?.into()])
    }
}

pub struct IntList;

impl Node for IntList {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("IntList", "constants")
            .description("A list of integers (e.g. a tensor shape or a list of timesteps).")
            .input(InputSpec::new("values", PortType::list(PortType::Int)))
            .output(OutputSpec::new("values", PortType::list(PortType::Int)))
    }
    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![inputs.int_list("values")?.into()])
    }
}

pub struct Range;

impl Node for Range {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Range", "constants")
            .description(
                "The integers start, start+step, ... up to but excluding stop, exactly like \
                 Python's range(start, stop, step); a negative step counts down.",
            )
            .input(InputSpec::int("start").default(0))
            .input(InputSpec::int("stop"))
            .input(InputSpec::int("step").default(1).doc("Must not be 0."))
            .output(OutputSpec::new("values", PortType::list(PortType::Int)))
    }
    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let values = python_range(
            inputs.int("start")?,
            inputs.int("stop")?,
            inputs.int("step")?,
        )?;
        Ok(vec![values.into()])
    }
}

/// Python's `list(range(start, stop, step))`, refusing a zero step and
/// absurdly long results. Lengths are computed in i128 so no bound overflows.
pub fn python_range(start: i64, stop: i64, step: i64) -> Result<Vec<i64>, NodeError> {
    if step == 0 {
        return Err("input `step`: expected a nonzero integer, got 0".into());
    }
    let (start, stop, step) = (start as i128, stop as i128, step as i128);
    let len = if step > 0 {
        (stop - start + step - 1).div_euclid(step)
    } else {
        (start - stop - step - 1).div_euclid(-step)
    }
    .max(0);
    if len > MAX_RANGE_LEN {
        return Err(format!("Range({start}, {stop}, {step}) would hold {len} values; at most {MAX_RANGE_LEN} are allowed").into());
    }
    // Every element lies between start and stop, so it fits in i64.
    Ok((0..len).map(|i| (start + i * step) as i64).collect())
}

#[cfg(test)]
mod tests {
    use super::python_range;

    #[test]
    fn matches_python() {
        assert_eq!(python_range(0, 5, 1).unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(python_range(1, 10, 3).unwrap(), vec![1, 4, 7]);
        assert_eq!(python_range(10, 0, -3).unwrap(), vec![10, 7, 4, 1]);
        assert_eq!(python_range(5, 5, 1).unwrap(), Vec::<i64>::new());
        assert_eq!(python_range(5, 0, 1).unwrap(), Vec::<i64>::new());
        assert_eq!(python_range(-3, 3, 2).unwrap(), vec![-3, -1, 1]);
        assert_eq!(
            python_range(i64::MAX - 1, i64::MAX, 1).unwrap(),
            vec![i64::MAX - 1]
        );
        assert!(python_range(0, 1, 0).is_err());
        assert!(python_range(0, i64::MAX, 1).is_err());
    }
}
