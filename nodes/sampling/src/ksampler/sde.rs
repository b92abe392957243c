//! k-diffusion's SDE samplers (`comfy/k_diffusion/sampling.py`:
//! `sample_dpmpp_sde`, `sample_dpmpp_2m_sde` with both solver types,
//! `sample_dpmpp_3m_sde`) with ComfyUI's KSampler defaults eta = 1,
//! s_noise = 1, r = 1/2, on a discrete (non-CONST) model: half-log-SNR
//! lambda = −log(sigma), sigma = exp(−lambda), first sigma not offset.
//! Operations in the reference's order, on 0-d float32 tensors; Python
//! scalars as libtorch scalar operands. The noise is
//! [`crate::brownian::BrownianNoise`].
use super::steps::{ancestral, sigma_fn, t_fn};
use crate::brownian::BrownianNoise;
use diffgraph_diffusion::comfy::scalar0::val;
use diffgraph_diffusion::Result;
use diffgraph_sdk::tch::Tensor;

const ETA: f64 = 1.0;
const S_NOISE: f64 = 1.0;
/// `sample_dpmpp_sde`'s r.
const R: f64 = 0.5;

/// `sample_dpmpp_sde`'s step-1 quantities for the step s → n.
struct SdeStep {
    lambda_s: Tensor,
    lambda_t: Tensor,
    lambda_s_1: Tensor,
    sigma_s_1: Tensor,
    alpha_s: Tensor,
    alpha_s_1: Tensor,
    alpha_t: Tensor,
}

fn sde_step(s: &Tensor, n: &Tensor) -> Result<SdeStep> {
    let (lambda_s, lambda_t) = (t_fn(s)?, t_fn(n)?);
    let h = lambda_t.f_sub(&lambda_s)?;
    let lambda_s_1 = lambda_s.f_add(&h.f_mul_scalar(R)?)?;
    let sigma_s_1 = sigma_fn(&lambda_s_1)?;
    Ok(SdeStep {
        alpha_s: s.f_mul(&lambda_s.f_exp()?)?,
        alpha_s_1: sigma_s_1.f_mul(&lambda_s_1.f_exp()?)?,
        alpha_t: n.f_mul(&lambda_t.f_exp()?)?,
        lambda_s,
        lambda_t,
        lambda_s_1,
        sigma_s_1,
    })
}

/// get_ancestral_step(exp(−lambda_from), exp(−lambda_to), eta) on tensors,
/// then h_ = −log(sigma_down) − lambda_s: (h_, sigma_up).
fn ancestral_h(lambda_s: &Tensor, lambda_to: &Tensor) -> Result<(Tensor, Tensor)> {
    let from = val(&lambda_s.f_neg()?.f_exp()?)?;
    let to = val(&lambda_to.f_neg()?.f_exp()?)?;
    let (down, up) = ancestral(from, to)?;
    Ok((down.f_log()?.f_neg()?.f_sub(lambda_s)?, up))
}

/// `(alpha_to / alpha_s) * exp(−h_) * x − alpha_to * expm1(−h_) * den`.
fn exp_step(
    x: &Tensor,
    den: &Tensor,
    alpha_s: &Tensor,
    alpha_to: &Tensor,
    h_: &Tensor,
) -> Result<Tensor> {
    let neg = h_.f_neg()?;
    let a = alpha_to.f_div(alpha_s)?.f_mul(&neg.f_exp()?)?.f_mul(x)?;
    Ok(a.f_sub(&alpha_to.f_mul(&neg.f_expm1()?)?.f_mul(den)?)?)
}

/// `sample_dpmpp_sde`, step 1 (sigmas[i + 1] > 0): where the model is
/// evaluated a second time, (x_2, sigma_s_1).
pub fn dpmpp_sde_first(
    x: &Tensor,
    den: &Tensor,
    s: &Tensor,
    n: &Tensor,
    noise: &BrownianNoise,
) -> Result<(Tensor, f32)> {
    let st = sde_step(s, n)?;
    let (h_, su) = ancestral_h(&st.lambda_s, &st.lambda_s_1)?;
    let x2 = exp_step(x, den, &st.alpha_s, &st.alpha_s_1, &h_)?;
    let w = noise.noise(s, &st.sigma_s_1, x.device())?;
    let x2 = x2.f_add(&st.alpha_s_1.f_mul(&w)?.f_mul_scalar(S_NOISE)?.f_mul(&su)?)?;
    Ok((x2, val(&st.sigma_s_1)?))
}

/// `sample_dpmpp_sde`, step 2: x after the step, from the step's x, both
/// denoised predictions and the noise.
pub fn dpmpp_sde_second(
    x: &Tensor,
    den: &Tensor,
    den2: &Tensor,
    s: &Tensor,
    n: &Tensor,
    noise: &BrownianNoise,
) -> Result<Tensor> {
    let st = sde_step(s, n)?;
    let (h_, su) = ancestral_h(&st.lambda_s, &st.lambda_t)?;
    let fac = 1.0 / (2.0 * R);
    let den_d = den
        .f_mul_scalar(1.0 - fac)?
        .f_add(&den2.f_mul_scalar(fac)?)?;
    let x = exp_step(x, &den_d, &st.alpha_s, &st.alpha_t, &h_)?;
    let w = noise.noise(s, n, x.device())?;
    Ok(x.f_add(&st.alpha_t.f_mul(&w)?.f_mul_scalar(S_NOISE)?.f_mul(&su)?)?)
}

/// Which multistep SDE solver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multistep {
    /// `sample_dpmpp_2m_sde(solver_type='midpoint')`.
    Midpoint,
    /// `sample_dpmpp_2m_sde(solver_type='heun')`.
    Heun,
    /// `sample_dpmpp_3m_sde`.
    ThreeM,
}

/// The multistep samplers' memory: the loop variable `h` (kept, not reset,
/// across a denoising step, as in Python), h_1, h_2 and the last two
/// denoised predictions.
#[derive(Default)]
pub struct History {
    pub h: Option<Tensor>,
    pub h1: Option<Tensor>,
    pub h2: Option<Tensor>,
    pub d1: Option<Tensor>,
    pub d2: Option<Tensor>,
}

impl History {
    pub fn shallow(&self) -> History {
        let s = |t: &Option<Tensor>| t.as_ref().map(Tensor::shallow_clone);
        History {
            h: s(&self.h),
            h1: s(&self.h1),
            h2: s(&self.h2),
            d1: s(&self.d1),
            d2: s(&self.d2),
        }
    }
}

fn need(t: &Option<Tensor>) -> Result<&Tensor> {
    t.as_ref()
        .ok_or_else(|| "the multistep history is incomplete".into())
}

/// One step of `sample_dpmpp_2m_sde` / `sample_dpmpp_3m_sde` from x with
/// the denoised prediction `den` at s to n; updates `hist` as the loop's
/// last line does.
pub fn multistep(
    kind: Multistep,
    x: &Tensor,
    den: &Tensor,
    s: &Tensor,
    n: &Tensor,
    hist: &mut History,
    noise: &BrownianNoise,
) -> Result<Tensor> {
    let x = if val(n)? == 0.0 {
        den.shallow_clone()
    } else {
        let (lambda_s, lambda_t) = (t_fn(s)?, t_fn(n)?);
        let h = lambda_t.f_sub(&lambda_s)?;
        let h_eta = h.f_mul_scalar(ETA + 1.0)?;
        let alpha_t = n.f_mul(&lambda_t.f_exp()?)?;
        let decay = h.f_neg()?.f_mul_scalar(ETA)?.f_exp()?;
        let neg_expm1 = h_eta.f_neg()?.f_expm1()?.f_neg()?;
        let mut x = n
            .f_div(s)?
            .f_mul(&decay)?
            .f_mul(x)?
            .f_add(&alpha_t.f_mul(&neg_expm1)?.f_mul(den)?)?;
        // phi_2 = expm1(−h_eta) / h_eta + 1.
        let phi_2 =
            || -> Result<Tensor> { Ok(h_eta.f_neg()?.f_expm1()?.f_div(&h_eta)?.f_add_scalar(1)?) };
        match kind {
            Multistep::Midpoint | Multistep::Heun => {
                if let Some(old) = &hist.d1 {
                    let r = need(&hist.h1)?.f_div(&h)?;
                    let inv_r = r.f_reciprocal()?.f_mul_scalar(1)?;
                    let coeff = if kind == Multistep::Heun {
                        let neg_h_eta = h_eta.f_neg()?;
                        alpha_t.f_mul(
                            &neg_h_eta
                                .f_expm1()?
                                .f_neg()?
                                .f_div(&neg_h_eta)?
                                .f_add_scalar(1)?,
                        )?
                    } else {
                        alpha_t.f_mul_scalar(0.5)?.f_mul(&neg_expm1)?
                    };
                    x = x.f_add(&coeff.f_mul(&inv_r)?.f_mul(&den.f_sub(old)?)?)?;
                }
            }
            Multistep::ThreeM => {
                if let (Some(h_2), Some(d1), Some(d2)) = (&hist.h2, &hist.d1, &hist.d2) {
                    let r0 = need(&hist.h1)?.f_div(&h)?;
                    let r1 = h_2.f_div(&h)?;
                    let d1_0 = den.f_sub(d1)?.f_div(&r0)?;
                    let d1_1 = d1.f_sub(d2)?.f_div(&r1)?;
                    let r_sum = r0.f_add(&r1)?;
                    let diff = d1_0.f_sub(&d1_1)?;
                    let dd1 = d1_0.f_add(&diff.f_mul(&r0)?.f_div(&r_sum)?)?;
                    let dd2 = diff.f_div(&r_sum)?;
                    let phi_2 = phi_2()?;
                    let phi_3 = phi_2.f_div(&h_eta)?.f_sub_scalar(0.5)?;
                    x = x
                        .f_add(&alpha_t.f_mul(&phi_2)?.f_mul(&dd1)?)?
                        .f_sub(&alpha_t.f_mul(&phi_3)?.f_mul(&dd2)?)?;
                } else if let (Some(h_1), Some(d1)) = (&hist.h1, &hist.d1) {
                    let r = h_1.f_div(&h)?;
                    let d = den.f_sub(d1)?.f_div(&r)?;
                    x = x.f_add(&alpha_t.f_mul(&phi_2()?)?.f_mul(&d)?)?;
                }
            }
        }
        let w = noise.noise(s, n, x.device())?;
        let amp = h
            .f_mul_scalar(-2)?
            .f_mul_scalar(ETA)?
            .f_expm1()?
            .f_neg()?
            .f_sqrt()?;
        x = x.f_add(&w.f_mul(n)?.f_mul(&amp)?.f_mul_scalar(S_NOISE)?)?;
        hist.h = Some(h);
        x
    };
    // denoised_1, denoised_2 = denoised, denoised_1; h_1, h_2 = h, h_1.
    hist.d2 = hist.d1.take();
    hist.d1 = Some(den.shallow_clone());
    hist.h2 = hist.h1.take();
    hist.h1 = hist.h.as_ref().map(Tensor::shallow_clone);
    Ok(x)
}
