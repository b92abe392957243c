//! Sigma tables of the sigma-parameterised samplers (x = x0 + sigma·eps),
//! as diffusers computes them in `set_timesteps` of
//! `schedulers/scheduling_euler_discrete.py` (the LMS, Heun, Euler ancestral
//! and DPM-Solver schedulers copy the same code):
//!
//! - training sigmas: `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in
//!   float32 torch ops, then as a numpy float32 array;
//! - at the inference timesteps: `np.interp(timesteps, arange(T), sigmas)` in float64;
//! - Karras: `(max^(1/7) + ramp·(min^(1/7) - max^(1/7)))^7` over `ramp =
//!   linspace(0, 1, n)` in float64 (`_convert_to_karras`), with min/max the
//!   last/first of the input sigmas;
//! - timesteps for Karras sigmas: `_sigma_to_t`, interpolating log-sigma in
//!   numpy's float32 logs of the training sigmas;
//! - the table gets a final 0 (or `sigma_min`) and is cast to float32.
use crate::numpy;
use crate::scalar;
use crate::schedule::Schedule;
use crate::Result;

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`, float32 (IEEE
/// division; libtorch's square root, `crate::scalar`).
pub fn training_sigmas(schedule: &Schedule) -> Result<Vec<f32>> {
    let ratios: Vec<f32> = schedule
        .alphas_cumprod
        .iter()
        .map(|&a| (1.0 - a) / a)
        .collect();
    scalar::sqrt_all(&ratios)
}

/// The training sigmas interpolated at `timesteps` (float64).
pub fn at_timesteps(timesteps: &[f32], training: &[f32]) -> Vec<f64> {
    timesteps
        .iter()
        .map(|&t| numpy::interp(f64::from(t), training))
        .collect()
}

/// `_convert_to_karras`: n sigmas from `sigma_max` down to `sigma_min`, rho = 7.
pub fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    numpy::linspace(0.0, 1.0, n)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// numpy's float32 `np.log(sigmas)` of the training sigmas.
pub fn log_sigmas(training: &[f32]) -> Vec<f32> {
    training.iter().map(|&s| numpy::log_f32(s)).collect()
}

/// `_sigma_to_t`: the fractional training timestep whose log-sigma is
/// `log(sigma)`, linear between the two neighbouring training timesteps.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // low_idx = cumsum(dists >= 0).argmax().clip(max=n-2): the last index whose
    // log-sigma is <= log_sigma (0 if none), at most n - 2.
    let count = log_sigmas
        .iter()
        .filter(|&&l| log_sigma - f64::from(l) >= 0.0)
        .count();
    let low_idx = count.saturating_sub(1).min(n - 2);
    let high_idx = low_idx + 1;
    let low = f64::from(log_sigmas[low_idx]);
    let high = f64::from(log_sigmas[high_idx]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// A sampler's sigma table: one sigma per timestep, plus the final one.
#[derive(Clone, Debug)]
pub struct SigmaTable {
    /// float32 timesteps (fractional for linspace spacing and Karras sigmas).
    pub timesteps: Vec<f32>,
    /// `timesteps.len() + 1` float32 sigmas.
    pub sigmas: Vec<f32>,
}

/// The Euler/LMS/Heun schedule: `timesteps` from the spacing, their
/// interpolated sigmas, optionally replaced by Karras sigmas (whose
/// timesteps then come from [`sigma_to_t`], kept fractional), then
/// `final_sigma` appended.
pub fn euler_table(
    schedule: &Schedule,
    timesteps: Vec<f32>,
    use_karras: bool,
    final_sigma: f32,
) -> Result<SigmaTable> {
    let training = training_sigmas(schedule)?;
    let mut sigmas = at_timesteps(&timesteps, &training);
    let mut timesteps = timesteps;
    if use_karras {
        let (min, max) = (sigmas[sigmas.len() - 1], sigmas[0]);
        sigmas = karras(min, max, timesteps.len());
        let logs = log_sigmas(&training);
        timesteps = sigmas
            .iter()
            .map(|&s| sigma_to_t(s, &logs) as f32)
            .collect();
    }
    let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
    sigmas.push(final_sigma);
    Ok(SigmaTable { timesteps, sigmas })
}

/// `((1 - alphas_cumprod[0]) / alphas_cumprod[0]) ** 0.5`, the
/// `final_sigmas_type="sigma_min"` last sigma.
pub fn sigma_min_final(schedule: &Schedule) -> Result<f32> {
    let a = schedule.alphas_cumprod[0];
    scalar::sqrt((1.0 - a) / a)
}

/// `init_noise_sigma` of the Euler family: the largest sigma for linspace
/// and trailing spacing, `(max**2 + 1) ** 0.5` (float32) for leading.
pub fn init_noise_sigma(sigmas: &[f32], leading: bool) -> Result<f32> {
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if leading {
        scalar::sqrt(max * max + 1.0)
    } else {
        Ok(max)
    }
}

/// 1 / (sigma² + 1): the cumulative alpha of x / sqrt(sigma² + 1), the
/// input a sigma sampler gives the model.
pub fn alpha_bar_at(sigma: f32) -> f64 {
    let s = f64::from(sigma);
    1.0 / (s * s + 1.0)
}

/// DPM-Solver's `_sigma_to_alpha_sigma_t`: (1 / (sigma² + 1) ** 0.5,
/// sigma · alpha_t), float32.
pub fn alpha_sigma_t(sigma: f32) -> Result<(f32, f32)> {
    let alpha = 1.0f32 / scalar::sqrt(sigma * sigma + 1.0)?;
    Ok((alpha, sigma * alpha))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::sd_config;

    #[test]
    fn sd_sigmas_and_karras_endpoints() {
        let s = Schedule::new(sd_config()).unwrap();
        let training = training_sigmas(&s).unwrap();
        assert!((training[999] - 14.6146).abs() < 1e-3);
        let k = karras(0.1, 10.0, 5);
        assert!((k[0] - 10.0).abs() < 1e-12 && (k[4] - 0.1).abs() < 1e-12);
        let logs = log_sigmas(&training);
        let t = sigma_to_t(f64::from(training[500]), &logs);
        assert!((t - 500.0).abs() < 1e-3, "{t}");
        assert_eq!(sigma_to_t(1e-12, &logs), 0.0);
        assert_eq!(sigma_to_t(1e3, &logs), 999.0);
    }
}
