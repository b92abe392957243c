//! [`KRun`]: one k-diffusion sampling run, evaluation by evaluation (see the
//! module docs of `crate::ksampler`). Each arm cites its `sample_*` function
//! of ComfyUI's `comfy/k_diffusion/sampling.py` and repeats its operations in
//! order.
use super::sde::{self, History, Multistep};
use super::steps::{ancestral, second_evaluation, sigma_fn, t_fn, to_d};
use super::Method;
use crate::brownian::BrownianNoise;
use crate::noise::NoiseStream;
use crate::quadrature::lms_coefficient;
use diffgraph_diffusion::comfy::scalar0::{t0, val};
use diffgraph_diffusion::comfy::DiscreteSampling;
use diffgraph_diffusion::Result;
use diffgraph_sdk::tch::Tensor;

/// What the second evaluation of a two-evaluation step needs.
enum Second {
    /// `sample_heun`: the first derivative and the step size.
    Heun { d: Tensor, dt: Tensor },
    /// `sample_dpm_2`: the full step size.
    Dpm2 { dt2: Tensor },
    /// `sample_dpm_2_ancestral`: the step to sigma_down and the noise to add.
    Dpm2Ancestral { dt2: Tensor, up: Tensor },
    /// `sample_dpmpp_2s_ancestral`: sigma_fn(t_next) / sigma_fn(t),
    /// expm1(−h) and the noise to add.
    Dpmpp2s {
        ratio: Tensor,
        em1: Tensor,
        up: Tensor,
    },
    /// `sample_dpmpp_sde`: the first denoised prediction.
    DpmppSde { den: Tensor },
}

/// Inpainting (`comfy/samplers.py` `KSamplerX0Inpaint`): where the mask is
/// 0 the model sees the original latent noised to the current sigma, and the
/// denoised prediction there is the original latent.
pub struct Inpaint {
    /// 1 where the sampler denoises, 0 where the latent is kept; the
    /// latent's shape (ComfyUI's `prepare_mask`).
    pub mask: Tensor,
    pub latent: Tensor,
    /// The run's noise (`KSAMPLER.sample`'s `model_k.noise`).
    pub noise: Tensor,
}

impl Inpaint {
    fn shallow(&self) -> Inpaint {
        Inpaint {
            mask: self.mask.shallow_clone(),
            latent: self.latent.shallow_clone(),
            noise: self.noise.shallow_clone(),
        }
    }

    /// 1 − mask (`latent_mask = 1. - denoise_mask`).
    fn keep(&self) -> Result<Tensor> {
        Ok(self.mask.f_neg()?.f_add_scalar(1.0)?)
    }
}

struct Pending {
    x2: Tensor,
    sigma2: f32,
    second: Second,
}

/// A sampling run between two model evaluations. Immutable once made:
/// [`KRun::feed`] returns the next one (graphs stay cacheable).
pub struct KRun {
    method: Method,
    ms: DiscreteSampling,
    sigmas: Vec<f32>,
    noise: NoiseStream,
    /// The step (index into `sigmas`) under way.
    i: usize,
    /// x at the start of step `i`.
    x: Tensor,
    pending: Option<Pending>,
    /// LMS: the last derivatives; DPM++ 2M: the previous denoised.
    history: Vec<Tensor>,
    /// The multistep SDE samplers' h and denoised history.
    sde: History,
    /// Noise draws made so far.
    draws: usize,
    /// The denoised prediction of the last step's first evaluation (what
    /// k-diffusion's callback reports, SamplerCustom's `denoised_output`).
    x0: Option<Tensor>,
    inpaint: Option<Inpaint>,
}

fn shallow(t: &Tensor) -> Tensor {
    t.shallow_clone()
}

impl KRun {
    /// A run from `x` (the noised start, KSAMPLER's `noise_scaling`) over
    /// `sigmas`; `seed` seeds the ancestral noise (`extra_args["seed"]`).
    pub fn new(
        method: Method,
        ms: DiscreteSampling,
        sigmas: Vec<f32>,
        seed: i64,
        x: Tensor,
    ) -> KRun {
        KRun {
            method,
            ms,
            sigmas,
            noise: NoiseStream::new(seed, 0),
            i: 0,
            x,
            pending: None,
            history: Vec::new(),
            sde: History::default(),
            draws: 0,
            x0: None,
            inpaint: None,
        }
    }

    /// The run with inpainting's masking (see [`Inpaint`]).
    pub fn with_inpaint(mut self, inpaint: Inpaint) -> Result<KRun> {
        for (name, t) in [
            ("mask", &inpaint.mask),
            ("latent", &inpaint.latent),
            ("noise", &inpaint.noise),
        ] {
            if t.size() != self.x.size() {
                return Err(format!(
                    "the inpainting {name} has shape {:?}, the sample {:?}",
                    t.size(),
                    self.x.size()
                )
                .into());
            }
        }
        self.inpaint = Some(inpaint);
        Ok(self)
    }

    pub fn sampling(&self) -> &DiscreteSampling {
        &self.ms
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The current sample (between steps: the sampler's x).
    pub fn x(&self) -> &Tensor {
        &self.x
    }

    /// The denoised prediction of the last step's first evaluation, if any.
    pub fn x0(&self) -> Option<&Tensor> {
        self.x0.as_ref()
    }

    /// True when every step has run.
    pub fn done(&self) -> bool {
        self.pending.is_none() && self.i + 1 >= self.sigmas.len()
    }

    /// How many model evaluations are left.
    pub fn remaining(&self) -> Result<usize> {
        let rest = super::evaluations(self.method, &self.sigmas[self.i.min(self.sigmas.len())..])?;
        Ok(if self.pending.is_some() {
            rest.saturating_sub(1)
        } else {
            rest
        })
    }

    /// Where the model is evaluated next: (x, sigma).
    pub fn model_input(&self) -> Result<(Tensor, f32)> {
        if self.done() {
            return Err("the sampling run has no step left (the Loop runs longer than the run's evaluations)".into());
        }
        let (x, sigma) = match &self.pending {
            Some(p) => (shallow(&p.x2), p.sigma2),
            None => (shallow(&self.x), self.sigmas[self.i]),
        };
        let Some(ip) = &self.inpaint else {
            return Ok((x, sigma));
        };
        // x * denoise_mask + scale_latent_inpaint(x, sigma, noise, latent) * latent_mask.
        let kept = self.ms.noise_scaling(sigma, &ip.noise, &ip.latent, false)?;
        Ok((x.f_mul(&ip.mask)?.f_add(&kept.f_mul(&ip.keep()?)?)?, sigma))
    }

    fn draw(&mut self) -> Result<Tensor> {
        let run_len = self.sigmas.len().saturating_sub(1).max(1);
        let n = self.noise.noise(self.draws, run_len, &self.x)?;
        self.draws += 1;
        Ok(n)
    }

    /// The SDE samplers' `BrownianTreeNoiseSampler` over this run's sigmas
    /// (no tensors: made where needed).
    fn brownian(&self) -> Result<BrownianNoise> {
        BrownianNoise::new(&self.sigmas, &self.x, self.noise.seed())
    }

    /// x + noise · s_noise(1.0) · sigma_up.
    fn add_noise(&mut self, x: Tensor, up: &Tensor) -> Result<Tensor> {
        let n = self.draw()?;
        Ok(x.f_add(&n.f_mul_scalar(1.0)?.f_mul(up)?)?)
    }

    /// The run after the model's denoised prediction at [`Self::model_input`].
    pub fn feed(&self, denoised: &Tensor) -> Result<KRun> {
        if self.done() {
            return Err("the sampling run has no step left".into());
        }
        if denoised.size() != self.x.size() {
            return Err(format!(
                "the denoised prediction has shape {:?} but the sample {:?}",
                denoised.size(),
                self.x.size()
            )
            .into());
        }
        let mut next = KRun {
            method: self.method,
            ms: self.ms.clone(),
            sigmas: self.sigmas.clone(),
            noise: self.noise.clone(),
            i: self.i,
            x: shallow(&self.x),
            pending: None,
            history: self.history.iter().map(shallow).collect(),
            sde: self.sde.shallow(),
            draws: self.draws,
            x0: self.x0.as_ref().map(shallow),
            inpaint: self.inpaint.as_ref().map(Inpaint::shallow),
        };
        // out * denoise_mask + latent_image * latent_mask.
        let denoised = match &self.inpaint {
            Some(ip) => denoised
                .f_mul(&ip.mask)?
                .f_add(&ip.latent.f_mul(&ip.keep()?)?)?,
            None => shallow(denoised),
        };
        match &self.pending {
            Some(p) => next.second(p, &denoised)?,
            None => next.first(&denoised)?,
        }
        Ok(next)
    }

    /// The step's second evaluation: finishes step `i`.
    fn second(&mut self, p: &Pending, den2: &Tensor) -> Result<()> {
        let x = shallow(&self.x);
        let s2 = t0(p.sigma2);
        self.x = match &p.second {
            Second::Heun { d, dt } => {
                let d2 = to_d(&p.x2, &s2, den2)?;
                let d_prime = d.f_add(&d2)?.f_div_scalar(2)?;
                x.f_add(&d_prime.f_mul(dt)?)?
            }
            Second::Dpm2 { dt2 } => x.f_add(&to_d(&p.x2, &s2, den2)?.f_mul(dt2)?)?,
            Second::Dpm2Ancestral { dt2, up } => {
                let x = x.f_add(&to_d(&p.x2, &s2, den2)?.f_mul(dt2)?)?;
                self.add_noise(x, up)?
            }
            Second::Dpmpp2s { ratio, em1, up } => {
                let x = ratio.f_mul(&x)?.f_sub(&em1.f_mul(den2)?)?;
                self.after_2s(x, up)?
            }
            Second::DpmppSde { den } => {
                let (s, n) = (t0(self.sigmas[self.i]), t0(self.sigmas[self.i + 1]));
                sde::dpmpp_sde_second(&x, den, den2, &s, &n, &self.brownian()?)?
            }
        };
        self.i += 1;
        Ok(())
    }

    /// `sample_dpmpp_2s_ancestral`'s noise: only while sigmas[i + 1] > 0.
    fn after_2s(&mut self, x: Tensor, up: &Tensor) -> Result<Tensor> {
        if self.sigmas[self.i + 1] > 0.0 {
            self.add_noise(x, up)
        } else {
            Ok(x)
        }
    }

    /// The step's first evaluation at (x, sigmas[i]); finishes the step
    /// unless it needs a second evaluation.
    fn first(&mut self, den: &Tensor) -> Result<()> {
        self.x0 = Some(shallow(den));
        let i = self.i;
        let (si, sn) = (self.sigmas[i], self.sigmas[i + 1]);
        let (s, n) = (t0(si), t0(sn));
        let x = shallow(&self.x);
        let two = second_evaluation(self.method, si, sn)?;
        let finished: Tensor = match self.method {
            // sample_euler (s_churn = 0: sigma_hat = sigmas[i]).
            Method::Euler => x.f_add(&to_d(&x, &s, den)?.f_mul(&n.f_sub(&s)?)?)?,
            // sample_euler_ancestral.
            Method::EulerAncestral => {
                let (down, up) = ancestral(si, sn)?;
                if val(&down)? == 0.0 {
                    shallow(den)
                } else {
                    let dt = down.f_sub(&s)?;
                    let x = x.f_add(&to_d(&x, &s, den)?.f_mul(&dt)?)?;
                    self.add_noise(x, &up)?
                }
            }
            // sample_heun (sigma_hat = sigmas[i] · (gamma + 1), gamma = 0).
            Method::Heun => {
                let s = s.f_mul_scalar(1)?;
                let d = to_d(&x, &s, den)?;
                let dt = n.f_sub(&s)?;
                if !two {
                    x.f_add(&d.f_mul(&dt)?)?
                } else {
                    let x2 = x.f_add(&d.f_mul(&dt)?)?;
                    return self.wait(x2, sn, Second::Heun { d, dt });
                }
            }
            // sample_dpm_2.
            Method::Dpm2 => {
                let d = to_d(&x, &s, den)?;
                if !two {
                    x.f_add(&d.f_mul(&n.f_sub(&s)?)?)?
                } else {
                    let mid = s.f_log()?.f_lerp(&n.f_log()?, 0.5)?.f_exp()?;
                    let x2 = x.f_add(&d.f_mul(&mid.f_sub(&s)?)?)?;
                    let dt2 = n.f_sub(&s)?;
                    return self.wait(x2, val(&mid)?, Second::Dpm2 { dt2 });
                }
            }
            // sample_dpm_2_ancestral.
            Method::Dpm2Ancestral => {
                let (down, up) = ancestral(si, sn)?;
                let d = to_d(&x, &s, den)?;
                if !two {
                    x.f_add(&d.f_mul(&down.f_sub(&s)?)?)?
                } else {
                    let mid = s.f_log()?.f_lerp(&down.f_log()?, 0.5)?.f_exp()?;
                    let x2 = x.f_add(&d.f_mul(&mid.f_sub(&s)?)?)?;
                    let dt2 = down.f_sub(&s)?;
                    return self.wait(x2, val(&mid)?, Second::Dpm2Ancestral { dt2, up });
                }
            }
            // sample_lms (order 4), coefficients as scipy's quad computes them.
            Method::Lms => {
                self.history.push(to_d(&x, &s, den)?);
                if self.history.len() > 4 {
                    let _oldest = self.history.remove(0);
                }
                if sn == 0.0 {
                    shallow(den)
                } else {
                    let order = (i + 1).min(4);
                    let mut sum: Option<Tensor> = None;
                    for (j, d) in self.history.iter().rev().enumerate().take(order) {
                        let term = d.f_mul_scalar(lms_coefficient(&self.sigmas, order, i, j))?;
                        sum = Some(match sum {
                            None => term.f_add_scalar(0)?,
                            Some(acc) => acc.f_add(&term)?,
                        });
                    }
                    x.f_add(&sum.ok_or("no LMS terms")?)?
                }
            }
            // sample_dpmpp_2s_ancestral.
            Method::Dpmpp2sAncestral => {
                let (down, up) = ancestral(si, sn)?;
                if !two {
                    let x = x.f_add(&to_d(&x, &s, den)?.f_mul(&down.f_sub(&s)?)?)?;
                    self.after_2s(x, &up)?
                } else {
                    let (t, t_next) = (t_fn(&s)?, t_fn(&down)?);
                    let h = t_next.f_sub(&t)?;
                    let mid = t.f_add(&h.f_mul_scalar(0.5)?)?;
                    let ratio = sigma_fn(&mid)?.f_div(&sigma_fn(&t)?)?;
                    let em = h.f_neg()?.f_mul_scalar(0.5)?.f_expm1()?;
                    let x2 = ratio.f_mul(&x)?.f_sub(&em.f_mul(den)?)?;
                    let second = Second::Dpmpp2s {
                        ratio: sigma_fn(&t_next)?.f_div(&sigma_fn(&t)?)?,
                        em1: h.f_neg()?.f_expm1()?,
                        up,
                    };
                    return self.wait(x2, val(&sigma_fn(&mid)?)?, second);
                }
            }
            // sample_dpmpp_2m.
            Method::Dpmpp2m => {
                let (t, t_next) = (t_fn(&s)?, t_fn(&n)?);
                let h = t_next.f_sub(&t)?;
                let ratio = sigma_fn(&t_next)?.f_div(&sigma_fn(&t)?)?;
                let em1 = h.f_neg()?.f_expm1()?;
                let target = match self.history.first() {
                    Some(old) if sn != 0.0 => {
                        let h_last = t.f_sub(&t_fn(&t0(self.sigmas[i - 1]))?)?;
                        let r = h_last.f_div(&h)?;
                        let inv = || -> Result<Tensor> {
                            Ok(r.f_mul_scalar(2)?.f_reciprocal()?.f_mul_scalar(1)?)
                        };
                        inv()?
                            .f_add_scalar(1)?
                            .f_mul(den)?
                            .f_sub(&inv()?.f_mul(old)?)?
                    }
                    _ => shallow(den),
                };
                self.history = vec![shallow(den)];
                ratio.f_mul(&x)?.f_sub(&em1.f_mul(&target)?)?
            }
            // sample_ddpm (generic_step_sampler with DDPMSampler_step).
            Method::Ddpm => {
                let x_in = x.f_div(&s.f_pow_tensor_scalar(2.0)?.f_add_scalar(1.0)?.f_sqrt()?)?;
                let eps = x.f_sub(den)?.f_div(&s)?;
                let acp = s
                    .f_mul(&s)?
                    .f_add_scalar(1)?
                    .f_reciprocal()?
                    .f_mul_scalar(1)?;
                let acp_prev = n
                    .f_mul(&n)?
                    .f_add_scalar(1)?
                    .f_reciprocal()?
                    .f_mul_scalar(1)?;
                let alpha = acp.f_div(&acp_prev)?;
                let one_minus_alpha = alpha.f_neg()?.f_add_scalar(1)?;
                let one_minus_acp = acp.f_neg()?.f_add_scalar(1)?;
                let mut mu = alpha.f_reciprocal()?.f_mul_scalar(1.0)?.f_sqrt()?.f_mul(
                    &x_in.f_sub(
                        &one_minus_alpha
                            .f_mul(&eps)?
                            .f_div(&one_minus_acp.f_sqrt()?)?,
                    )?,
                )?;
                if sn > 0.0 {
                    let var = one_minus_alpha
                        .f_mul(&acp_prev.f_neg()?.f_add_scalar(1.0)?)?
                        .f_div(&one_minus_acp)?
                        .f_sqrt()?;
                    let noise = self.draw()?;
                    mu = mu.f_add(&var.f_mul(&noise)?)?;
                }
                if sn != 0.0 {
                    mu = mu.f_mul(&n.f_pow_tensor_scalar(2.0)?.f_add_scalar(1.0)?.f_sqrt()?)?;
                }
                mu
            }
            // sample_dpmpp_sde.
            Method::DpmppSde => {
                if !two {
                    shallow(den)
                } else {
                    let (x2, sigma_s_1) = sde::dpmpp_sde_first(&x, den, &s, &n, &self.brownian()?)?;
                    return self.wait(x2, sigma_s_1, Second::DpmppSde { den: shallow(den) });
                }
            }
            // sample_dpmpp_2m_sde, sample_dpmpp_3m_sde.
            Method::Dpmpp2mSde | Method::Dpmpp2mSdeHeun | Method::Dpmpp3mSde => {
                let kind = match self.method {
                    Method::Dpmpp2mSde => Multistep::Midpoint,
                    Method::Dpmpp2mSdeHeun => Multistep::Heun,
                    _ => Multistep::ThreeM,
                };
                let noise = self.brownian()?;
                sde::multistep(kind, &x, den, &s, &n, &mut self.sde, &noise)?
            }
            // sample_lcm.
            Method::Lcm => {
                if sn > 0.0 {
                    let noise = self.draw()?;
                    self.ms.noise_scaling(sn, &noise, den, false)?
                } else {
                    shallow(den)
                }
            }
        };
        self.x = finished;
        self.i += 1;
        Ok(())
    }

    fn wait(&mut self, x2: Tensor, sigma2: f32, second: Second) -> Result<()> {
        self.pending = Some(Pending { x2, sigma2, second });
        Ok(())
    }
}
