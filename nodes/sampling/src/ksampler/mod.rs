//! ComfyUI's samplers (`comfy/k_diffusion/sampling.py` `sample_*`, chosen as
//! `comfy/samplers.py` `sampler_object` does) as a state machine over model
//! evaluations, so that the graph's Loop calls the U-Net once per iteration:
//! [`KRun::model_input`] says where to evaluate the model next,
//! [`KRun::feed`] takes the (guided) denoised prediction there and returns
//! the run after it. A two-evaluation step (Heun, DPM-2, DPM++ 2S) is two
//! iterations. [`evaluations`] counts them beforehand (the Loop's `over`).
//!
//! The arithmetic is k-diffusion's, op for op, on libtorch tensors: sigmas
//! and step sizes are 0-d float32 tensors there, so they are here
//! (`diffgraph_diffusion::comfy::scalar0`). Ancestral noise comes from
//! `default_noise_sampler`: a CPU generator seeded with the sampler's seed,
//! one `randn(x.shape)` per call ([`crate::noise::NoiseStream`]); the SDE
//! samplers' from torchsde's Brownian tree ([`crate::brownian`]).
#[cfg(test)]
mod parity_tests;
#[cfg(test)]
mod sde_parity_tests;

#[test]
fn the_method_table_is_the_shared_name_list() {
    let names: Vec<&str> = SAMPLERS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, diffgraph_diffusion::comfy::names::SAMPLERS);
}
mod run;
mod sde;
mod steps;

pub use run::{Inpaint, KRun};

/// The k-diffusion methods diffgraph implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Euler,
    EulerAncestral,
    Heun,
    Dpm2,
    Dpm2Ancestral,
    Lms,
    Dpmpp2sAncestral,
    Dpmpp2m,
    Ddpm,
    Lcm,
    /// `sample_dpmpp_sde` (two evaluations per step).
    DpmppSde,
    /// `sample_dpmpp_2m_sde`, solver_type `midpoint`.
    Dpmpp2mSde,
    /// `sample_dpmpp_2m_sde`, solver_type `heun`.
    Dpmpp2mSdeHeun,
    Dpmpp3mSde,
}

/// ComfyUI `sampler_name`s diffgraph runs, with their method. `ddim` is
/// ComfyUI's `ksampler("euler", inpaint_options={"random": True})`: Euler,
/// with its own noise only for inpainting's masked-out region. The `_gpu`
/// SDE forms are the same samplers with the Brownian tree on the sample's
/// device (`cpu=False`); diffgraph draws it on the CPU, which is ComfyUI's
/// stream on a CPU (on CUDA ComfyUI's own draws differ).
pub const SAMPLERS: &[(&str, Method)] = &[
    ("euler", Method::Euler),
    ("euler_ancestral", Method::EulerAncestral),
    ("heun", Method::Heun),
    ("dpm_2", Method::Dpm2),
    ("dpm_2_ancestral", Method::Dpm2Ancestral),
    ("lms", Method::Lms),
    ("dpmpp_2s_ancestral", Method::Dpmpp2sAncestral),
    ("dpmpp_2m", Method::Dpmpp2m),
    ("ddpm", Method::Ddpm),
    ("lcm", Method::Lcm),
    ("ddim", Method::Euler),
    ("dpmpp_sde", Method::DpmppSde),
    ("dpmpp_sde_gpu", Method::DpmppSde),
    ("dpmpp_2m_sde", Method::Dpmpp2mSde),
    ("dpmpp_2m_sde_gpu", Method::Dpmpp2mSde),
    ("dpmpp_2m_sde_heun", Method::Dpmpp2mSdeHeun),
    ("dpmpp_2m_sde_heun_gpu", Method::Dpmpp2mSdeHeun),
    ("dpmpp_3m_sde", Method::Dpmpp3mSde),
    ("dpmpp_3m_sde_gpu", Method::Dpmpp3mSde),
];

pub use diffgraph_diffusion::comfy::names::COMFY_SAMPLER_NAMES;

/// The method of a `sampler_name`, or an error naming what diffgraph has.
pub fn method(name: &str) -> Result<Method, String> {
    SAMPLERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| *m)
        .ok_or_else(|| {
            let known = SAMPLERS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ");
            if COMFY_SAMPLER_NAMES.contains(&name) {
                format!(
                    "ComfyUI's sampler `{name}` is not implemented in diffgraph (it has {known})"
                )
            } else {
                format!("unknown sampler `{name}` (expected one of {known})")
            }
        })
}

/// ComfyUI's `prepare_mask` (`comfy/utils.py` `reshape_mask`): a mask
/// ([H, W], [B, H, W] or [B, 1, H, W]) resized bilinearly to the latent's
/// height and width, repeated over its channels and batch.
pub fn prepare_mask(
    mask: &diffgraph_sdk::tch::Tensor,
    shape: &[i64],
) -> diffgraph_diffusion::Result<diffgraph_sdk::tch::Tensor> {
    use diffgraph_sdk::tch::Kind;
    if shape.len() != 4 || mask.dim() < 2 {
        return Err(format!(
            "a mask [.., H, W] for a latent [B, C, H, W], got {:?} for {:?}",
            mask.size(),
            shape
        )
        .into());
    }
    let ms = mask.size();
    let (h, w) = (ms[ms.len() - 2], ms[ms.len() - 1]);
    let m = mask.f_to_kind(Kind::Float)?.f_reshape([-1, 1, h, w])?;
    let m = m.f_upsample_bilinear2d([shape[2], shape[3]], false, None, None)?;
    let m = m.f_repeat([1, shape[1], 1, 1])?;
    // repeat_to_batch_size.
    let n = m.size()[0];
    let b = shape[0];
    Ok(if n > b {
        m.f_narrow(0, 0, b)?
    } else if n < b {
        m.f_repeat([(b + n - 1) / n, 1, 1, 1])?.f_narrow(0, 0, b)?
    } else {
        m
    })
}

/// How many model evaluations a run of `method` over `sigmas` makes.
pub fn evaluations(method: Method, sigmas: &[f32]) -> Result<usize, String> {
    let mut n = 0;
    for i in 0..sigmas.len().saturating_sub(1) {
        n += 1 + usize::from(steps::second_evaluation(method, sigmas[i], sigmas[i + 1])?);
    }
    Ok(n)
}
