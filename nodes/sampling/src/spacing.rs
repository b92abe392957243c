//! Inference timesteps from the config's `timestep_spacing`, as diffusers
//! `schedulers/scheduling_ddim.py` (`DDIMScheduler.set_timesteps`) computes
//! them with numpy, including numpy's float arithmetic:
//!
//! - leading: `arange(n) * (T // n)`, reversed, `+ steps_offset`.
//! - linspace: `round(linspace(0, T - 1, n))`, reversed.
//! - trailing: `round(arange(T, 0, -T / n)) - 1`.
//!
//! `np.round` rounds half to even (`f64::round_ties_even`; flooring instead,
//! as candle did, changes 24 of 50 timesteps).
//!
//! One deliberate deviation: for 62 step counts in 1..=1000 (61, 103, 121,
//! ...), numpy's float `arange` yields n + 1 values for trailing spacing, and
//! diffusers returns a spurious last timestep -1 (which would then index
//! `alphas_cumprod[-1]`, i.e. t = 999, in Python). We return exactly n
//! timesteps: diffusers' first n, which are identical.
use crate::schedule::{ScheduleConfig, TimestepSpacing};
use diffgraph_sdk::NodeError;

/// The `n` inference timesteps, highest first.
pub fn timesteps(config: &ScheduleConfig, n: i64) -> Result<Vec<i64>, NodeError> {
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
            let mut t: Vec<i64> = np_linspace(0.0, (total - 1) as f64, n as usize)
                .into_iter()
                .map(|x| x.round_ties_even() as i64)
                .collect();
            t.reverse();
            t
        }
        TimestepSpacing::Trailing => {
            let step = total as f64 / n as f64;
            let mut t: Vec<i64> = np_arange(total as f64, 0.0, -step)
                .into_iter()
                .map(|x| x.round_ties_even() as i64 - 1)
                .collect();
            t.truncate(n as usize);
            t
        }
    })
}

/// `np.linspace(start, stop, num)` (endpoint=True) for float64:
/// `arange(num) * step + start`, with the last value set to `stop`.
fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    y[num - 1] = stop;
    y
}

/// `np.arange(start, stop, step)` for float64: `ceil((stop - start) / step)`
/// values; the fill uses `delta = (start + step) - start`, as numpy's
/// `DOUBLE_fill` does, so `a[i] = start + i * delta` for i >= 2.
fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let second = start + step;
    let delta = second - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(spacing: TimestepSpacing) -> ScheduleConfig {
        ScheduleConfig {
            timestep_spacing: spacing,
            ..ScheduleConfig::default()
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
        assert!(timesteps(&ScheduleConfig::default(), 0).is_err());
        assert!(timesteps(&ScheduleConfig::default(), 1001).is_err());
        assert_eq!(
            timesteps(&with(TimestepSpacing::Linspace), 1).unwrap(),
            vec![0]
        );
    }
}
