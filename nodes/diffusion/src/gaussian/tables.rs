//! Beta schedules, `space_timesteps` and the respaced float64 tables of
//! guided-diffusion (`gaussian_diffusion.py` `get_named_beta_schedule`,
//! `betas_for_alpha_bar`, `GaussianDiffusion.__init__`; `respace.py`
//! `space_timesteps`, `SpacedDiffusion.__init__`).
use crate::numpy::linspace;
use crate::Result;
use std::collections::BTreeSet;

/// `get_named_beta_schedule(name, steps)`: `linear` (Ho et al.'s 1e-4..0.02,
/// scaled by 1000 / steps) or `cosine` (Nichol & Dhariwal, max beta 0.999).
pub fn named_beta_schedule(name: &str, steps: usize) -> Result<Vec<f64>> {
    if steps == 0 {
        return Err("diffusion_steps must be at least 1".to_string().into());
    }
    match name {
        "linear" => {
            let scale = 1000.0 / steps as f64;
            Ok(linspace(scale * 0.0001, scale * 0.02, steps))
        }
        "cosine" => {
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                    .cos()
                    .powi(2)
            };
            Ok((0..steps)
                .map(|i| {
                    let t1 = i as f64 / steps as f64;
                    let t2 = (i + 1) as f64 / steps as f64;
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                })
                .collect())
        }
        n => Err(format!("unknown noise_schedule `{n}` (linear, cosine)").into()),
    }
}

/// `space_timesteps(num_timesteps, section_counts)`: the kept original
/// timesteps, ascending. `"ddimN"`: the integer stride giving exactly N
/// steps; `"a,b,c"`: equal sections, each strided to its count with
/// Python's round (half to even); `""`: every step.
pub fn space_timesteps(num_timesteps: usize, spec: &str) -> Result<Vec<usize>> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok((0..num_timesteps).collect());
    }
    if let Some(n) = spec.strip_prefix("ddim") {
        let desired: usize = n
            .parse()
            .map_err(|_| format!("timestep_respacing `{spec}`: `{n}` is not a count"))?;
        for stride in 1..num_timesteps {
            if num_timesteps.div_ceil(stride) == desired {
                return Ok((0..num_timesteps).step_by(stride).collect());
            }
        }
        return Err(format!(
            "timestep_respacing `{spec}`: cannot create exactly {desired} steps from {num_timesteps} with an integer stride"
        )
        .into());
    }
    let counts = spec
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<usize>()
                .map_err(|_| format!("timestep_respacing `{spec}`: `{c}` is not a count"))
        })
        .collect::<Result<Vec<usize>, String>>()?;
    let size_per = num_timesteps / counts.len();
    let extra = num_timesteps % counts.len();
    let mut start = 0usize;
    let mut steps = BTreeSet::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = size_per + usize::from(i < extra);
        if size < count {
            return Err(format!(
                "timestep_respacing `{spec}`: cannot divide section of {size} steps into {count}"
            )
            .into());
        }
        let frac = if count <= 1 {
            1.0
        } else {
            (size - 1) as f64 / (count - 1) as f64
        };
        let mut cur = 0.0f64;
        for _ in 0..count {
            steps.insert(start + cur.round_ties_even() as usize);
            cur += frac;
        }
        start += size;
    }
    Ok(steps.into_iter().collect())
}

/// A (respaced) diffusion's float64 tables, indexed by the respaced step i.
#[derive(Clone, Debug)]
pub struct GaussianDiffusion {
    /// The original timestep of each respaced step (what the model gets).
    pub timestep_map: Vec<usize>,
    pub original_num_steps: usize,
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub alphas_cumprod_prev: Vec<f64>,
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    pub posterior_variance: Vec<f64>,
    pub posterior_log_variance_clipped: Vec<f64>,
    pub posterior_mean_coef1: Vec<f64>,
    pub posterior_mean_coef2: Vec<f64>,
}

fn cumprod(alphas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    alphas
        .iter()
        .map(|a| {
            acc *= a;
            acc
        })
        .collect()
}

impl GaussianDiffusion {
    /// `SpacedDiffusion(space_timesteps(len(betas), respacing), betas=...)`.
    pub fn spaced(base_betas: &[f64], respacing: &str) -> Result<GaussianDiffusion> {
        let keep = space_timesteps(base_betas.len(), respacing)?;
        let base_ac = cumprod(&base_betas.iter().map(|b| 1.0 - b).collect::<Vec<_>>());
        let mut last = 1.0;
        let mut betas = Vec::with_capacity(keep.len());
        for &i in &keep {
            betas.push(1.0 - base_ac[i] / last);
            last = base_ac[i];
        }
        let mut d = GaussianDiffusion::new(&betas)?;
        d.timestep_map = keep;
        d.original_num_steps = base_betas.len();
        Ok(d)
    }

    /// `GaussianDiffusion.__init__`'s tables (numpy float64 arithmetic).
    pub fn new(betas: &[f64]) -> Result<GaussianDiffusion> {
        let n = betas.len();
        if n < 2 || betas.iter().any(|&b| !(b > 0.0 && b <= 1.0)) {
            return Err("betas must be at least 2 values in (0, 1]"
                .to_string()
                .into());
        }
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let ac = cumprod(&alphas);
        let mut acp = vec![1.0];
        acp.extend_from_slice(&ac[..n - 1]);
        let post_var: Vec<f64> = (0..n)
            .map(|i| betas[i] * (1.0 - acp[i]) / (1.0 - ac[i]))
            .collect();
        let mut clipped = vec![post_var[1]];
        clipped.extend_from_slice(&post_var[1..]);
        Ok(GaussianDiffusion {
            timestep_map: (0..n).collect(),
            original_num_steps: n,
            sqrt_recip_alphas_cumprod: ac.iter().map(|a| (1.0 / a).sqrt()).collect(),
            sqrt_recipm1_alphas_cumprod: ac.iter().map(|a| (1.0 / a - 1.0).sqrt()).collect(),
            posterior_log_variance_clipped: clipped.iter().map(|v| v.ln()).collect(),
            posterior_mean_coef1: (0..n)
                .map(|i| betas[i] * acp[i].sqrt() / (1.0 - ac[i]))
                .collect(),
            posterior_mean_coef2: (0..n)
                .map(|i| (1.0 - acp[i]) * alphas[i].sqrt() / (1.0 - ac[i]))
                .collect(),
            posterior_variance: post_var,
            betas: betas.to_vec(),
            alphas_cumprod: ac,
            alphas_cumprod_prev: acp,
        })
    }

    pub fn num_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// The timestep the model and the classifier get at respaced step `i`
    /// (`_WrappedModel`: `timestep_map[i]`, times 1000 / original steps when
    /// `rescale_timesteps`).
    pub fn model_timestep(&self, i: usize, rescale: bool) -> f64 {
        let t = self.timestep_map[i] as f64;
        if rescale {
            (t as f32 * (1000.0 / self.original_num_steps as f64) as f32) as f64
        } else {
            t
        }
    }

    /// The respaced step whose original timestep is `t` (the graph's loop
    /// runs over model timesteps).
    pub fn step_of(&self, t: f64) -> Result<usize> {
        self.timestep_map
            .iter()
            .position(|&m| m as f64 == t)
            .ok_or_else(|| {
                format!("timestep {t} is not one of this respaced schedule's timesteps").into()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_follows_the_reference_examples() {
        // respace.py's docstring: 300 steps in sections [10, 15, 20].
        let s = space_timesteps(300, "10,15,20").unwrap();
        assert_eq!(s.len(), 45);
        assert_eq!(&s[..3], &[0, 11, 22]);
        assert_eq!(space_timesteps(1000, "ddim25").unwrap()[1], 40);
        assert_eq!(space_timesteps(10, "").unwrap().len(), 10);
        assert!(space_timesteps(100, "ddim33").is_err());
        assert!(space_timesteps(10, "20")
            .unwrap_err()
            .to_string()
            .contains("cannot divide"));
    }

    #[test]
    fn tables_hold_the_reference_identities() {
        let b = named_beta_schedule("linear", 1000).unwrap();
        assert_eq!((b[0], b[999]), (0.0001, 0.02));
        let d = GaussianDiffusion::spaced(&b, "ddim50").unwrap();
        let full = GaussianDiffusion::new(&b).unwrap();
        for (i, &t) in d.timestep_map.iter().enumerate() {
            let rel = (d.alphas_cumprod[i] - full.alphas_cumprod[t]).abs() / full.alphas_cumprod[t];
            assert!(rel < 1e-12, "respaced ᾱ must be the kept ᾱ");
        }
        let c = named_beta_schedule("cosine", 1000).unwrap();
        assert_eq!(c[999], 0.999);
    }
}
