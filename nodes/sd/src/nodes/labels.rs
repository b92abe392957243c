//! Class labels as a node input: an int, a list of ints or an integer tensor.
use diffgraph_sdk::prelude::*;

/// Input `name` as an int64 tensor [n] on `device`, or `None` when not given.
pub fn class_labels(
    inputs: &Inputs,
    name: &str,
    device: Device,
) -> Result<Option<Tensor>, NodeError> {
    let labels = match inputs.get(name)? {
        InputValue::None => return Ok(None),
        InputValue::Int(y) => Tensor::from_slice(&[*y]),
        InputValue::List(_) => Tensor::from_slice(&inputs.int_list(name)?),
        InputValue::Tensor(t) if !t.is_floating_point() && t.dim() <= 1 => {
            t.to_kind(Kind::Int64).reshape([-1])
        }
        InputValue::Tensor(t) => {
            return Err(format!(
                "input `{name}`: class labels must be an integer tensor [batch], got {:?} of shape {:?}",
                t.kind(),
                t.size()
            )
            .into())
        }
        other => {
            return Err(format!(
                "input `{name}`: class labels are an int, a list of ints or an integer tensor, got {}",
                other.kind_name()
            )
            .into())
        }
    };
    Ok(Some(labels.to_device(device)))
}
