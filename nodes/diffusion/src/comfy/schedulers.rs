//! ComfyUI's schedulers (`comfy/samplers.py`: `SCHEDULER_HANDLERS`,
//! `simple_scheduler`, `ddim_scheduler`, `normal_scheduler`,
//! `beta_scheduler`, `linear_quadratic_schedule`, `kl_optimal_scheduler`;
//! `comfy/k_diffusion/sampling.py`: `get_sigmas_karras`,
//! `get_sigmas_exponential`) and KSampler's use of them
//! (`KSampler.calculate_sigmas`, `set_steps`, `sample`). Each returns the
//! sigma table, descending, ending in 0 (float32, as ComfyUI's tensors).
use super::beta_ppf::beta_ppf;
use super::model_sampling::DiscreteSampling;
use crate::Result;
use tch::{Device, Kind, Tensor};

/// `SCHEDULER_NAMES`, in ComfyUI's order.
pub const SCHEDULER_NAMES: &[&str] = &[
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
];

/// The samplers whose schedule is computed for one step more and loses its
/// penultimate sigma (`KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS`).
pub const DISCARD_PENULTIMATE: &[&str] = &["dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"];

const F32: (Kind, Device) = (Kind::Float, Device::Cpu);

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        &t.f_to_kind(Kind::Float)?.f_contiguous()?,
    )?)
}

fn append_zero(mut v: Vec<f32>) -> Vec<f32> {
    v.push(0.0);
    v
}

/// `calculate_sigmas(model_sampling, scheduler_name, steps)`.
pub fn scheduler_sigmas(ms: &DiscreteSampling, name: &str, steps: usize) -> Result<Vec<f32>> {
    let n = steps as i64;
    let sigma_min = f64::from(ms.sigma_min()?);
    let sigma_max = f64::from(ms.sigma_max()?);
    Ok(match name {
        "simple" => {
            let len = ms.len();
            let ss = len as f64 / steps as f64;
            let mut sigs = Vec::with_capacity(steps + 1);
            for x in 0..steps {
                sigs.push(ms.sigma_at(len - 1 - (x as f64 * ss) as usize)?);
            }
            append_zero(sigs)
        }
        "sgm_uniform" => normal(ms, steps, true)?,
        "normal" => normal(ms, steps, false)?,
        "karras" => explicit_sigmas("karras", steps, sigma_min, sigma_max, 7.0)?,
        "exponential" => explicit_sigmas("exponential", steps, sigma_min, sigma_max, 1.0)?,
        "ddim_uniform" => {
            let len = ms.len();
            let mut x = 1;
            let mut steps = steps;
            let mut sigs = if f64::from(ms.sigma_at(1)?).abs() <= 1e-5 {
                steps += 1;
                Vec::new()
            } else {
                vec![0.0]
            };
            let ss = (len / steps).max(1);
            while x < len {
                sigs.push(ms.sigma_at(x)?);
                x += ss;
            }
            sigs.reverse();
            sigs
        }
        "beta" => {
            let total = (ms.len() - 1) as f64;
            let step = 1.0 / steps as f64;
            let mut sigs = Vec::new();
            let mut last = -1.0;
            for i in 0..steps {
                let p = 1.0 - i as f64 * step;
                let t = (beta_ppf(p, 0.6, 0.6) * total).round_ties_even();
                if t != last {
                    sigs.push(ms.sigma_at(t as usize)?);
                }
                last = t;
            }
            append_zero(sigs)
        }
        "linear_quadratic" => {
            let schedule: Vec<f64> = if steps == 1 {
                vec![1.0, 0.0]
            } else {
                let threshold = 0.025;
                let linear_steps = steps / 2;
                let (ls, st) = (linear_steps as f64, steps as f64);
                let mut v: Vec<f64> = (0..linear_steps)
                    .map(|i| i as f64 * threshold / ls)
                    .collect();
                let diff = ls - threshold * st;
                let quadratic_steps = st - ls;
                let quad = diff / (ls * quadratic_steps.powi(2));
                let lin = threshold / ls - 2.0 * diff / quadratic_steps.powi(2);
                let c = quad * ls.powi(2);
                v.extend((linear_steps..steps).map(|i| {
                    let i = i as f64;
                    quad * i.powi(2) + lin * i + c
                }));
                v.push(1.0);
                v.into_iter().map(|x| 1.0 - x).collect()
            };
            let max = ms.sigma_max()?;
            schedule.into_iter().map(|x| x as f32 * max).collect()
        }
        "kl_optimal" => {
            let adj = Tensor::f_arange(n, F32)?.f_div_scalar((n - 1) as f64)?;
            let s = adj
                .f_mul_scalar(sigma_min.atan())?
                .f_add(
                    &adj.f_neg()?
                        .f_add_scalar(1.0)?
                        .f_mul_scalar(sigma_max.atan())?,
                )?
                .f_tan()?;
            append_zero(to_vec(&s)?)
        }
        other => {
            return Err(format!(
                "unknown scheduler `{other}` (expected one of {})",
                SCHEDULER_NAMES.join(", ")
            )
            .into())
        }
    })
}

/// `normal_scheduler` (`sgm`: `sgm_uniform`): timesteps spaced evenly from
/// the largest sigma's to the smallest's, interpolated back to sigmas.
fn normal(ms: &DiscreteSampling, steps: usize, sgm: bool) -> Result<Vec<f32>> {
    let start = ms.timestep(ms.sigma_max()?)? as f64;
    let end = ms.timestep(ms.sigma_min()?)?;
    let mut append = true;
    let timesteps = if sgm {
        let t = Tensor::f_linspace(start, end as f64, steps as i64 + 1, F32)?;
        to_vec(&t)?[..steps].to_vec()
    } else {
        let mut steps = steps;
        if f64::from(ms.sigma(end as f32)?).abs() <= 1e-5 {
            steps += 1;
            append = false;
        }
        to_vec(&Tensor::f_linspace(start, end as f64, steps as i64, F32)?)?
    };
    let mut sigs = timesteps
        .into_iter()
        .map(|t| ms.sigma(t))
        .collect::<Result<Vec<f32>>>()?;
    if append {
        sigs.push(0.0);
    }
    Ok(sigs)
}

/// `KSampler.calculate_sigmas` and `set_steps`: the scheduler's table, one
/// step longer without its penultimate sigma for the samplers that need it,
/// and for `denoise` < 1 (above 0.9999 counts as 1) the last `steps + 1`
/// sigmas of `int(steps / denoise)` steps. `denoise` <= 0 gives no sigmas.
pub fn ksampler_sigmas(
    ms: &DiscreteSampling,
    scheduler: &str,
    sampler: &str,
    steps: usize,
    denoise: f64,
) -> Result<Vec<f32>> {
    let calc = |steps: usize| -> Result<Vec<f32>> {
        if DISCARD_PENULTIMATE.contains(&sampler) {
            let mut s = scheduler_sigmas(ms, scheduler, steps + 1)?;
            let n = s.len();
            if n >= 2 {
                s.remove(n - 2);
            }
            Ok(s)
        } else {
            scheduler_sigmas(ms, scheduler, steps)
        }
    };
    if denoise > 0.9999 {
        return calc(steps);
    }
    if denoise <= 0.0 {
        return Ok(Vec::new());
    }
    let total = (steps as f64 / denoise) as usize;
    let all = calc(total)?;
    let keep = (steps + 1).min(all.len());
    Ok(all[all.len() - keep..].to_vec())
}

/// `KSampler.sample`'s `start_step` / `last_step` (KSamplerAdvanced): the
/// table cut after `last_step` (its end set to 0 with `force_full_denoise`)
/// and from `start_step` on. `None` when nothing is left to run (ComfyUI then
/// returns the latent unchanged).
pub fn truncate_steps(
    sigmas: &[f32],
    start: Option<usize>,
    last: Option<usize>,
    force_full_denoise: bool,
) -> Option<Vec<f32>> {
    let mut s = sigmas.to_vec();
    if let Some(last) = last {
        if last + 1 < s.len() {
            s.truncate(last + 1);
            if force_full_denoise {
                if let Some(end) = s.last_mut() {
                    *end = 0.0;
                }
            }
        }
    }
    if let Some(start) = start {
        if start + 1 < s.len() {
            s.drain(..start);
        } else {
            return None;
        }
    }
    Some(s)
}

/// ComfyUI's KarrasScheduler / ExponentialScheduler nodes: k-diffusion's
/// `get_sigmas_karras` / `get_sigmas_exponential` over explicit bounds.
pub fn explicit_sigmas(
    name: &str,
    steps: usize,
    sigma_min: f64,
    sigma_max: f64,
    rho: f64,
) -> Result<Vec<f32>> {
    let n = steps as i64;
    let s = match name {
        "karras" => {
            let ramp = Tensor::f_linspace(0.0, 1.0, n, F32)?;
            let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
            ramp.f_mul_scalar(min_inv - max_inv)?
                .f_add_scalar(max_inv)?
                .f_pow_tensor_scalar(rho)?
        }
        "exponential" => Tensor::f_linspace(sigma_max.ln(), sigma_min.ln(), n, F32)?.f_exp()?,
        other => return Err(format!("expected karras or exponential, got `{other}`").into()),
    };
    Ok(append_zero(to_vec(&s)?))
}
