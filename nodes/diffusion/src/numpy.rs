//! The numpy routines that diffusers' `set_timesteps` uses, reproduced with
//! numpy's own arithmetic so that timesteps and sigmas match bit for bit:
//!
//! - [`linspace`]: `np.linspace(start, stop, num)` (float64, endpoint=True).
//! - [`arange`]: `np.arange(start, stop, step)` for float64 (numpy's fill rule).
//! - [`interp`]: `np.interp(x, arange(len(fp)), fp)` (`compiled_base.c`, `arr_interp`).
//! - [`log_f32`]: `np.log` of a float32 array. numpy does not call libm here:
//!   on x86-64 with AVX2+FMA3 (and AVX512F) it evaluates its own rational
//!   approximation (`numpy/_core/src/umath/loops_exponent_log.dispatch.c.src`,
//!   `simd_log_FLOAT`; up to 3.8 ulp from the true value), which differs from
//!   a correctly rounded logf for ~19% of SD's sigmas. diffusers' `_sigma_to_t`
//!   interpolates in those float32 logs, so Karras timesteps depend on them.
//!
//! `round_ties_even` is `np.round` (half to even).

/// `np.linspace(start, stop, num)`: `arange(num) * step + start`, the last
/// value set to `stop` (numpy `function_base.py`).
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            y[num - 1] = stop;
            y
        }
    }
}

/// `np.arange(start, stop, step)` for float64: `ceil((stop - start) / step)`
/// values; numpy's `DOUBLE_fill` uses `delta = (start + step) - start`, so
/// `a[i] = start + i * delta` for i >= 2.
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let second = start + step;
    let delta = second - start;
    (0..len as usize)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.interp(x, np.arange(0, len(fp)), fp)` for one `x`, in float64.
pub fn interp(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    assert!(n > 0, "interp needs at least one point");
    if x.is_nan() {
        return x;
    }
    let last = (n - 1) as f64;
    if x < 0.0 {
        return f64::from(fp[0]);
    }
    if x >= last {
        return f64::from(fp[n - 1]);
    }
    let j = x.floor() as usize;
    let xj = j as f64;
    if xj == x {
        return f64::from(fp[j]);
    }
    // slope = (dy[j+1] - dy[j]) / (dx[j+1] - dx[j]); dres = slope*(x - dx[j]) + dy[j]
    let slope = (f64::from(fp[j + 1]) - f64::from(fp[j])) / ((j + 1) as f64 - xj);
    slope * (x - xj) + f64::from(fp[j])
}

// numpy/_core/src/common/npy_simd_data.h and npy_math.h, as written there
// (the compiler rounds them to float32 as the C compiler does).
#[allow(clippy::excessive_precision)]
const LOG_P: [f32; 6] = [
    0.000000000000000000000e+00,
    9.999999999999998702752e-01,
    2.112677543073053063722e+00,
    1.480000633576506585156e+00,
    3.808837741388407920751e-01,
    2.589979117907922693523e-02,
];
#[allow(clippy::excessive_precision)]
const LOG_Q: [f32; 6] = [
    1.000000000000000000000e+00,
    2.612677543073109236779e+00,
    2.453006071784736363091e+00,
    9.864942958519418960339e-01,
    1.546476374983906719538e-01,
    5.875095403124574342950e-03,
];
/// `NPY_LOGE2f` (ln 2 rounded to float32).
const LOGE2: f32 = std::f32::consts::LN_2;
/// `NPY_SQRT1_2f` (sqrt(1/2) rounded to float32).
const SQRT1_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// `np.log` of a float32 value as numpy's vectorised float32 loop computes
/// it: x = m·2^e with m in [0.5, 1), moved to [sqrt(1/2), sqrt(2)), then
/// log(x) = e·ln2 + P(m-1)/Q(m-1) with fused multiply-adds.
pub fn log_f32(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return -f32::NAN;
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY {
        return f32::INFINITY;
    }
    // Denormals are scaled by 2^100 first and the exponent corrected.
    let (scaled, correction) = if x < f32::MIN_POSITIVE {
        (x * f32::from_bits(0x7180_0000), 100.0f32)
    } else {
        (x, 0.0)
    };
    let bits = scaled.to_bits();
    let mut exponent = ((bits >> 23) as i32 - 0x7E) as f32 - correction;
    let mut m = f32::from_bits((bits & 0x007F_FFFF) | (126 << 23));
    if m <= SQRT1_2 {
        m = m + m;
        exponent -= 1.0;
    }
    let y = m - 1.0;
    let mut num = LOG_P[5].mul_add(y, LOG_P[4]);
    for p in LOG_P[..4].iter().rev() {
        num = num.mul_add(y, *p);
    }
    let mut den = LOG_Q[5].mul_add(y, LOG_Q[4]);
    for q in LOG_Q[..4].iter().rev() {
        den = den.mul_add(y, *q);
    }
    exponent.mul_add(LOGE2, num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_and_arange_follow_numpy() {
        assert_eq!(linspace(0.0, 999.0, 1), vec![0.0]);
        assert_eq!(*linspace(0.0, 999.0, 7).last().unwrap(), 999.0);
        assert_eq!(arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
        // numpy gives 62 values for arange(1000, 0, -1000/61): a spurious last one.
        assert_eq!(arange(1000.0, 0.0, -1000.0 / 61.0).len(), 62);
    }

    #[test]
    fn interp_clamps_and_interpolates() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(interp(-1.0, &fp), 1.0);
        assert_eq!(interp(5.0, &fp), 7.0);
        assert_eq!(interp(1.0, &fp), 3.0);
        assert_eq!(interp(1.5, &fp), 5.0);
    }

    #[test]
    fn log_is_close_to_libm_and_handles_specials() {
        for x in [1e-30f32, 1e-3, 0.5, 0.70710677, 1.0, 2.0, 14.6, 1e30] {
            let err = (f64::from(log_f32(x)) - f64::from(x).ln()).abs();
            assert!(err <= 4.0 * f64::from(f32::EPSILON) * f64::from(x).ln().abs().max(1.0));
        }
        assert_eq!(log_f32(1.0), 0.0);
        assert_eq!(log_f32(0.0), f32::NEG_INFINITY);
        assert!(log_f32(-1.0).is_nan());
        assert!(log_f32(1e-40).is_finite());
    }
}
