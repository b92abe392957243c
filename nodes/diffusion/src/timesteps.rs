//! Inference timesteps from the config's `timestep_spacing`, and the check
//! that a timestep indexes `alphas_cumprod`. The spacing follows diffusers
//! `schedulers/scheduling_ddim.py` (`DDIMScheduler.set_timesteps`), which computes
//! them with numpy, including numpy's float arithmetic:
//!
//! - leading: `arange(n) * (T // n)`, reversed, `+ steps_offset`.
//! - linspace: `round(linspace(0, T - 1, n))`, reversed.
//! - trailing: `round(arange(T, 0, -T / n)) - 1`.
//!
//! DDPM and PNDM use the same rules. The sigma samplers
//! (`scheduling_euler_discrete.py`, `scheduling_lms_discrete.py`,
//! `scheduling_heun_discrete.py`) keep linspace timesteps as unrounded
//! float32 ([`sigma_timesteps`]), and DPM-Solver
//! (`scheduling_dpmsolver_multistep.py`) spaces n + 1 points and drops the
//! last for linspace and leading ([`dpm_timesteps`]).
//!
//! `np.round` rounds half to even (`f64::round_ties_even`; flooring instead,
//! as candle did, changes 24 of 50 timesteps).
//!
//! One deliberate deviation: for 62 step counts in 1..=1000 (61, 103, 121,
//! ...), numpy's float `arange` yields n + 1 values for trailing spacing, and
//! diffusers returns a spurious last timestep -1 (which would then index
//! `alphas_cumprod[-1]`, i.e. t = 999, in Python). We return exactly n
//! timesteps: diffusers' first n, which are identical.
use crate::names::ConfigName;
use crate::numpy;
use crate::schedule::ScheduleConfig;
use crate::Result;
use std::fmt::Display;

/// `timestep_spacing` of the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Linspace,
    Trailing,
}

impl ConfigName for TimestepSpacing {
    const ALL: &'static [(&'static str, Self)] = &[
        ("leading", TimestepSpacing::Leading),
        ("linspace", TimestepSpacing::Linspace),
        ("trailing", TimestepSpacing::Trailing),
    ];
}

/// A timestep that indexes `alphas_cumprod` (DDIM, DDPM, PNDM and guidance
/// look ᾱ_t up, so they need integer timesteps).
pub fn integer_timestep<T: Into<f64> + Copy + Display>(t: T) -> Result<i64> {
    let x: f64 = t.into();
    if x.fract() != 0.0 || !x.is_finite() {
        return Err(format!("timestep {t} is not an integer").into());
    }
    Ok(x as i64)
}

/// The `n` inference timesteps, highest first.
pub fn timesteps(config: &ScheduleConfig, n: i64) -> Result<Vec<i64>> {
    let total = config.num_train_timesteps;
    if n < 1 {
        return Err(format!("steps must be at least 1, got {n}").into());
    }
    if n > total {
        return Err(format!(
            "steps ({n}) cannot be larger than num_train_timesteps ({total}): the model was trained on {total} timesteps"
        )
        .into());
    }
    Ok(match config.timestep_spacing {
        TimestepSpacing::Leading => {
            let ratio = total / n;
            (0..n)
                .rev()
                .map(|i| i * ratio + config.steps_offset)
                .collect()
        }
        TimestepSpacing::Linspace => {
            let mut t: Vec<i64> = numpy::linspace(0.0, (total - 1) as f64, n as usize)
                .into_iter()
                .map(|x| x.round_ties_even() as i64)
                .collect();
            t.reverse();
            t
        }
        TimestepSpacing::Trailing => {
            let step = total as f64 / n as f64;
            let mut t: Vec<i64> = numpy::arange(total as f64, 0.0, -step)
                .into_iter()
                .map(|x| x.round_ties_even() as i64 - 1)
                .collect();
            t.truncate(n as usize);
            t
        }
    })
}

/// The timesteps of the Euler/LMS/Heun schedulers, as float32: leading and
/// trailing as in [`timesteps`]; linspace not rounded:
/// `np.linspace(0, T - 1, n, dtype=np.float32)[::-1]`.
pub fn sigma_timesteps(config: &ScheduleConfig, n: i64) -> Result<Vec<f32>> {
    if config.timestep_spacing != TimestepSpacing::Linspace {
        return Ok(timesteps(config, n)?
            .into_iter()
            .map(|t| t as f32)
            .collect());
    }
    timesteps(config, n)?; // the same checks on n
    let total = config.num_train_timesteps;
    let mut t: Vec<f32> = numpy::linspace(0.0, (total - 1) as f64, n as usize)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    t.reverse();
    Ok(t)
}

/// DPM-Solver's timesteps (`DPMSolverMultistepScheduler.set_timesteps`, with
/// `lambda_min_clipped` = -inf so that the last timestep is T):
/// linspace `round(linspace(0, T - 1, n + 1))[::-1][:-1]`; leading
/// `arange(n + 1) * (T // (n + 1))`, reversed, last dropped, `+ steps_offset`;
/// trailing as in [`timesteps`].
pub fn dpm_timesteps(config: &ScheduleConfig, n: i64) -> Result<Vec<i64>> {
    let t = timesteps(config, n)?; // checks n; trailing is the same
    let total = config.num_train_timesteps;
    Ok(match config.timestep_spacing {
        TimestepSpacing::Trailing => t,
        TimestepSpacing::Linspace => numpy::linspace(0.0, (total - 1) as f64, n as usize + 1)
            .into_iter()
            .rev()
            .take(n as usize)
            .map(|x| x.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = total / (n + 1);
            (1..=n)
                .rev()
                .map(|i| i * ratio + config.steps_offset)
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::sd_config;

    fn with(spacing: TimestepSpacing) -> ScheduleConfig {
        ScheduleConfig {
            timestep_spacing: spacing,
            ..sd_config()
        }
    }

    #[test]
    fn sd_leading_50() {
        let t = timesteps(&with(TimestepSpacing::Leading), 50).unwrap();
        assert_eq!(t.len(), 50);
        assert_eq!(&t[..3], &[981, 961, 941]);
        assert_eq!(*t.last().unwrap(), 1);
    }

    #[test]
    fn trailing_keeps_exactly_n() {
        let t = timesteps(&with(TimestepSpacing::Trailing), 61).unwrap();
        assert_eq!(t.len(), 61);
        assert_eq!(&t[58..], &[48, 32, 15]);
        assert_eq!(t[0], 999);
    }

    #[test]
    fn rejects_bad_counts() {
        assert!(timesteps(&sd_config(), 0).is_err());
        assert!(timesteps(&sd_config(), 1001).is_err());
        assert_eq!(
            timesteps(&with(TimestepSpacing::Linspace), 1).unwrap(),
            vec![0]
        );
    }

    #[test]
    fn integer_timesteps() {
        assert_eq!(integer_timestep(999.0f32).unwrap(), 999);
        let e = integer_timestep(12.5f64).unwrap_err().to_string();
        assert_eq!(e, "timestep 12.5 is not an integer");
        assert!(integer_timestep(f32::NAN).is_err());
    }
}
