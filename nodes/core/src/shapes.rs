//! Shape checks shared by several nodes, with messages that name the input
//! and say what was expected.
use diffgraph_sdk::prelude::*;

/// Reads a LIST<INT> shape input, refusing zero and negative dimensions up front (libtorch's
/// own message for them does not say which input was wrong).
pub fn shape_input(inputs: &Inputs, name: &str) -> Result<Vec<i64>, NodeError> {
    let shape = inputs.int_list(name)?;
    if shape.iter().any(|&d| d <= 0) {
        return Err(format!(
            "input `{name}`: expected positive dimensions (a 0 makes an empty batch that \
             would run to the end and produce nothing), got shape {shape:?}"
        )
        .into());
    }
    Ok(shape)
}

/// The image as [B,C,H,W] with C = 1 or 3: a [C,H,W] tensor gets a batch
/// dimension of 1.
pub fn image_bchw(name: &str, t: &Tensor) -> Result<Tensor, NodeError> {
    let shape = t.size();
    let expected = || {
        NodeError::new(format!(
            "input `{name}`: expected a [B,C,H,W] or [C,H,W] image tensor with C = 1 or 3, got shape {shape:?}"
        ))
    };
    let batched = match shape.len() {
        3 => t.f_unsqueeze(0)?,
        4 => t.shallow_clone(),
        _ => return Err(expected()),
    };
    let s = batched.size();
    if s[0] == 0 {
        return Err(format!(
            "input `{name}`: the batch is empty (shape {shape:?}): there is no image to use"
        )
        .into());
    }
    if !(s[1] == 1 || s[1] == 3) || s[2] == 0 || s[3] == 0 {
        return Err(expected());
    }
    if !t.is_floating_point() {
        return Err(format!(
            "input `{name}`: expected a floating-point image with values in [0,1], got {:?}",
            t.kind()
        )
        .into());
    }
    Ok(batched)
}
