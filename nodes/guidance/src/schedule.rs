//! What the guidance nodes need from the scheduler's `alphas_cumprod` input:
//! its length and ᾱ_t at an integer timestep. The diffusion math itself
//! (prediction conversions, the DDPM step variance) is `diffgraph_diffusion`'s.
use diffgraph_sdk::prelude::*;

/// The timestep as an index of `alphas_cumprod`: guidance looks ᾱ_t up, so
/// only integer timesteps (DDIM, DDPM, PNDM, and the Euler family with
/// "leading"/"trailing" spacing) are accepted.
pub fn integer_timestep(name: &str, t: f64, len: i64) -> Result<i64, NodeError> {
    let t = diffgraph_diffusion::integer_timestep(t).map_err(|e| {
        format!(
            "input `{name}`: {e}; guidance looks alpha_bar_t up in alphas_cumprod[t], so it \
             needs integer timesteps"
        )
    })?;
    if t < 0 || t >= len {
        return Err(format!(
            "input `{name}`: timestep {t} is outside alphas_cumprod, which has {len} entries"
        )
        .into());
    }
    Ok(t)
}

/// `alphas_cumprod[t]` as float32 (the scheduler's dtype), checked to be a 1-D table.
pub fn alpha_bar(alphas_cumprod: &Tensor, t: i64) -> Result<f32, NodeError> {
    Ok(alphas_cumprod.f_double_value(&[t])? as f32)
}

/// Length of the `alphas_cumprod` input, which must be 1-D.
pub fn table_len(alphas_cumprod: &Tensor) -> Result<i64, NodeError> {
    match alphas_cumprod.size().as_slice() {
        [n] if *n > 0 => Ok(*n),
        other => Err(format!(
            "input `alphas_cumprod`: expected the scheduler's 1-D table, got shape {other:?}"
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_must_index_the_table() {
        assert_eq!(integer_timestep("timestep", 999.0, 1000).unwrap(), 999);
        let e = integer_timestep("timestep", 12.5, 1000).unwrap_err().0;
        assert!(e.contains("not an integer"), "{e}");
        assert!(integer_timestep("timestep", 1000.0, 1000)
            .unwrap_err()
            .0
            .contains("outside"));
        assert!(integer_timestep("timestep", -1.0, 1000).is_err());
    }
}
