//! Classifier-free guidance (Ho & Salimans 2022, eq. 6 and Algorithm 2), the
//! one home of the mixing formula that the sd plugin's `UNetStep` and the
//! guidance plugin's `CFGMixer` both call:
//!
//! ```text
//! ε̃(x_t, c) = (1 + w)·ε(x_t, c) − w·ε(x_t, ∅)
//!           = ε(x_t, ∅) + g·(ε(x_t, c) − ε(x_t, ∅)),   g = w + 1
//! ```
//!
//! `w` is the paper's guidance strength; `g` is diffusers' `guidance_scale`
//! and ComfyUI's `cfg`. The mix is linear, so it applies to whatever the
//! model predicts (ε or v), as diffusers' pipelines apply it.
//!
//! Optional guidance rescale (Lin et al. 2023, "Common Diffusion Noise
//! Schedules and Sample Steps are Flawed", Sec. 3.4 / eqs. 15-16), exactly as
//! diffusers' `rescale_noise_cfg`: with σ(·) the per-sample standard deviation
//! over all non-batch dimensions (unbiased, torch's default),
//!
//! ```text
//! x_rescaled = x_cfg · σ(x_cond) / σ(x_cfg)
//! x_final    = φ·x_rescaled + (1 − φ)·x_cfg
//! ```
use crate::Result;
use tch::Tensor;

/// diffusers' `rescale_noise_cfg(noise_cfg, noise_pred_text, guidance_rescale)`,
/// same operations in the same order.
pub fn rescale_noise_cfg(noise_cfg: &Tensor, cond: &Tensor, phi: f64) -> Result<Tensor> {
    let dims: Vec<i64> = (1..noise_cfg.dim() as i64).collect();
    if dims.is_empty() {
        return Err("guidance_rescale needs a batch dimension and at least one more".into());
    }
    let std_cond = cond.f_std_dim(dims.as_slice(), true, true)?;
    let std_cfg = noise_cfg.f_std_dim(dims.as_slice(), true, true)?;
    let rescaled = noise_cfg.f_mul(&std_cond.f_div(&std_cfg)?)?;
    Ok(rescaled
        .f_mul_scalar(phi)?
        .f_add(&noise_cfg.f_mul_scalar(1.0 - phi)?)?)
}

/// uncond + g·(cond − uncond) (diffusers' expression), then the rescale when
/// φ > 0. At g = 1 the result is `cond` itself (bit for bit; no rescale,
/// which would be the identity up to rounding), so w = 0 is the conditional
/// model exactly.
pub fn cfg_mix(cond: &Tensor, uncond: &Tensor, g: f64, phi: f64) -> Result<Tensor> {
    if cond.size() != uncond.size() {
        return Err(format!(
            "inputs `cond` (shape {:?}) and `uncond` (shape {:?}) must have the same shape",
            cond.size(),
            uncond.size()
        )
        .into());
    }
    if g == 1.0 {
        return Ok(cond.shallow_clone());
    }
    let mixed = uncond.f_add(&cond.f_sub(uncond)?.f_mul_scalar(g)?)?;
    if phi > 0.0 {
        rescale_noise_cfg(&mixed, cond, phi)
    } else {
        Ok(mixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    #[test]
    fn mix_is_the_papers_formula_and_g1_is_cond() {
        let cond = t(&[1.0, -2.0, 0.5, 3.0], &[2, 2]);
        let uncond = t(&[0.25, 1.0, -1.0, 3.0], &[2, 2]);
        // w = 2 (g = 3): (1 + w)·cond − w·uncond, by hand.
        let want = t(&[2.5, -8.0, 3.5, 3.0], &[2, 2]);
        let got = cfg_mix(&cond, &uncond, 3.0, 0.0).unwrap();
        assert!((&got - &want).abs().max().double_value(&[]) < 1e-6, "{got}");
        // g = 1: cond itself, even with a rescale asked for.
        assert!(cfg_mix(&cond, &uncond, 1.0, 0.7).unwrap().equal(&cond));
        // g = 0: uncond.
        assert!(cfg_mix(&cond, &uncond, 0.0, 0.0).unwrap().equal(&uncond));
        assert!(cfg_mix(&cond, &t(&[0.0; 2], &[1, 2]), 2.0, 0.0).is_err());
    }

    #[test]
    fn rescale_matches_a_hand_computation() {
        // One sample [1, 4]: cond = [1, 2, 3, 4], uncond = 0, g = 3 -> cfg = [3, 6, 9, 12].
        let cond = t(&[1.0, 2.0, 3.0, 4.0], &[1, 4]);
        let uncond = t(&[0.0; 4], &[1, 4]);
        let phi = 0.7;
        // Unbiased std: std(cond) = sqrt(5/3), std(cfg) = 3·sqrt(5/3): rescaled = cfg / 3 = cond.
        // final = 0.7·cond + 0.3·3·cond = 1.6·cond.
        let got = cfg_mix(&cond, &uncond, 3.0, phi).unwrap();
        let want = t(&[1.6, 3.2, 4.8, 6.4], &[1, 4]);
        assert!((&got - &want).abs().max().double_value(&[]) < 1e-5, "{got}");
        // Per-sample statistics: a second sample with another scale is rescaled by its own std.
        let cond2 = t(&[1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 2.0], &[2, 2, 2]);
        let uncond2 = t(&[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0], &[2, 2, 2]);
        let got2 = cfg_mix(&cond2, &uncond2, 2.0, 1.0).unwrap();
        // Sample 1: cfg = uncond + 2·(cond − uncond) = [0, -1, 0, 4]; cond = [0, 0, 0, 2] has std 1.
        let cfg1 = [0.0f64, -1.0, 0.0, 4.0];
        let m = cfg1.iter().sum::<f64>() / 4.0;
        let std_cfg = (cfg1.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 3.0).sqrt();
        let std_cond = 1.0; // [0, 0, 0, 2]: mean 0.5, sum of squares 3, /3
        let want1: Vec<f32> = cfg1
            .iter()
            .map(|v| (v * std_cond / std_cfg) as f32)
            .collect();
        let got1 = Vec::<f32>::try_from(got2.get(1).reshape([-1])).unwrap();
        for (a, b) in got1.iter().zip(&want1) {
            assert!((a - b).abs() < 1e-5, "{got1:?} vs {want1:?}");
        }
        let got0 = got2.get(0).reshape([-1]);
        assert!(
            (&got0 - t(&[1.0, 2.0, 3.0, 4.0], &[4]))
                .abs()
                .max()
                .double_value(&[])
                < 1e-5
        );
    }
}
