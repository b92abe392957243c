//! The LMS coefficients of diffusers `schedulers/scheduling_lms_discrete.py`
//! (`get_lms_coefficient`): the integral over [sigma_t, sigma_{t+1}] of the
//! Lagrange basis polynomial of the last `order` sigmas,
//!
//!   coeff_j = ∫ prod_{k != j} (tau - sigma_{t-k}) / (sigma_{t-j} - sigma_{t-k}) dtau,
//!
//! which diffusers evaluates with `scipy.integrate.quad(..., epsrel=1e-4)`.
//!
//! The integrand is a polynomial of degree < 4, and diffusers evaluates it in
//! float32 (the sigmas are 0-d float32 tensors, so `tau - sigma` rounds tau to
//! float32 first). QUADPACK's `qags` starts with one 21-point Gauss-Kronrod
//! rule, which is exact for such polynomials up to that float32 rounding; its
//! error estimate then meets the tolerance and it returns that first estimate
//! (21 evaluations: checked for every case of the fixture script). [`lms_coefficient`]
//! therefore evaluates the same integrand at the same 21 nodes and sums in
//! QUADPACK's order (`qk21`), reproducing scipy's result to the last bit
//! rather than the exact integral (they differ by ~1e-7 relative).

// QUADPACK's constants as written there (33 digits), rounded to f64 by the compiler.
/// QUADPACK `qk21` Kronrod abscissae (positive half, the last is the centre).
#[allow(clippy::excessive_precision)]
const XGK: [f64; 11] = [
    0.995_657_163_025_808_080_735_527_280_689_003,
    0.973_906_528_517_171_720_077_964_012_084_452,
    0.930_157_491_355_708_226_001_207_180_059_508,
    0.865_063_366_688_984_510_732_096_688_423_493,
    0.780_817_726_586_416_897_063_717_578_345_042,
    0.679_409_568_299_024_406_234_327_365_114_874,
    0.562_757_134_668_604_683_339_000_099_272_694,
    0.433_395_394_129_247_190_799_265_943_165_784,
    0.294_392_862_701_460_198_131_126_603_103_866,
    0.148_874_338_981_631_210_884_826_001_129_720,
    0.0,
];
/// Kronrod weights.
#[allow(clippy::excessive_precision)]
const WGK: [f64; 11] = [
    0.011_694_638_867_371_874_278_064_396_062_192,
    0.032_558_162_307_964_727_478_818_972_459_390,
    0.054_755_896_574_351_996_031_381_300_244_580,
    0.075_039_674_810_919_952_767_043_140_916_190,
    0.093_125_454_583_697_605_535_065_465_083_366,
    0.109_387_158_802_297_641_899_210_590_325_805,
    0.123_491_976_262_065_851_077_600_525_603_352,
    0.134_709_217_311_473_325_928_054_001_771_707,
    0.142_775_938_577_060_080_797_094_273_138_717,
    0.147_739_104_901_338_491_374_841_515_972_068,
    0.149_445_554_002_916_905_664_936_468_389_821,
];

/// QUADPACK `qk21`: the 21-point Kronrod estimate of ∫_a^b f, summed in
/// QUADPACK's order (centre, then the Gauss nodes, then the others).
pub fn qk21(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let centr = 0.5 * (a + b);
    let hlgth = 0.5 * (b - a);
    let mut resk = WGK[10] * f(centr);
    for j in (1..10).step_by(2).chain((0..10).step_by(2)) {
        let absc = hlgth * XGK[j];
        let fsum = f(centr - absc) + f(centr + absc);
        resk += WGK[j] * fsum;
    }
    resk * hlgth
}

/// diffusers' `lms_derivative(tau)` for basis `current` of `order` at step
/// `t`, in float32 as the 0-d tensor arithmetic does.
fn basis(sigmas: &[f32], order: usize, t: usize, current: usize, tau: f64) -> f64 {
    let tau = tau as f32;
    let mut prod: Option<f32> = None; // the Python float 1.0 until the first factor
    for k in 0..order {
        if k == current {
            continue;
        }
        let factor = (tau - sigmas[t - k]) / (sigmas[t - current] - sigmas[t - k]);
        prod = Some(prod.map_or(factor, |p| p * factor));
    }
    prod.map_or(1.0, f64::from)
}

/// `get_lms_coefficient(order, t, current_order)` over `sigmas` (the
/// scheduler's float32 sigma table).
pub fn lms_coefficient(sigmas: &[f32], order: usize, t: usize, current: usize) -> f64 {
    let (a, b) = (f64::from(sigmas[t]), f64::from(sigmas[t + 1]));
    qk21(|tau| basis(sigmas, order, t, current, tau), a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qk21_integrates_polynomials() {
        let v = qk21(|x| 3.0 * x * x - 2.0 * x + 1.0, 0.5, 2.0);
        let exact = |x: f64| x * x * x - x * x + x;
        assert!((v - (exact(2.0) - exact(0.5))).abs() < 1e-13);
    }

    #[test]
    fn coefficients_sum_to_the_interval() {
        // The Lagrange basis sums to 1, so the coefficients sum to sigma_{t+1} - sigma_t.
        let sigmas = [14.6f32, 9.7, 6.1, 3.2, 1.4, 0.0];
        for t in 0..5 {
            let order = (t + 1).min(4);
            let sum: f64 = (0..order)
                .map(|c| lms_coefficient(&sigmas, order, t, c))
                .sum();
            let width = f64::from(sigmas[t + 1]) - f64::from(sigmas[t]);
            assert!(
                (sum - width).abs() < 1e-5 * width.abs(),
                "t={t}: {sum} vs {width}"
            );
        }
    }
}
