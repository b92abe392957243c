//! `ExactDenoiser`: the exact, closed-form epsilon-prediction model for a
//! finite data set, a real "model" that needs no weights.
//!
//! Under the DDPM forward process x_t = sqrt(a)·x0 + sqrt(1-a)·eps with
//! eps ~ N(0, I) and a = alphas_cumprod[t] (diffusers
//! `schedulers/scheduling_ddim.py`, `add_noise`), and x0 drawn uniformly from
//! K images x_1..x_K, the posterior over which image produced x_t is
//!
//!   w_k = softmax_k( -||x_t - sqrt(a)·x_k||² / (2(1-a)) ),
//!
//! the MMSE estimate of x0 is x0_hat = Σ_k w_k·x_k, and the MMSE noise
//! prediction is eps_hat = (x_t - sqrt(a)·x0_hat) / sqrt(1-a). This is the
//! minimiser of the DDPM training loss over all functions, so it is what a
//! perfectly trained network would output on this data set. Sampling with it
//! (DDIM, from Gaussian noise) therefore lands on one of the K images: as the
//! noise level falls the posterior concentrates on a single image.
//!
//! Computed per batch element in float64 (the logits span hundreds of
//! thousands near t = 0), on the sample's device; returned in the sample's dtype.
use diffgraph_sdk::prelude::*;

/// eps_hat for `sample` [B, ...] at cumulative alpha `alpha`, given `images` [K, ...].
pub fn exact_epsilon(sample: &Tensor, alpha: f64, images: &Tensor) -> Result<Tensor, NodeError> {
    let shape = sample.size();
    let image_shape = images.size();
    if shape.len() < 2 || image_shape.len() != shape.len() || shape[1..] != image_shape[1..] {
        return Err(format!(
            "sample has shape {shape:?} and images {image_shape:?}: expected [B, ...] and [K, ...] with the same \
             trailing dimensions"
        )
        .into());
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(format!(
            "alphas_cumprod at this timestep is {alpha}; the denoiser needs 0 < a < 1"
        )
        .into());
    }
    let (b, k) = (shape[0], image_shape[0]);
    if k == 0 {
        return Err("images is an empty batch".into());
    }
    let x = sample.f_to_kind(Kind::Double)?.f_reshape([b, -1])?;
    let data = images
        .f_to_device(sample.device())?
        .f_to_kind(Kind::Double)?
        .f_reshape([k, -1])?;
    let (sqrt_a, sqrt_one_minus_a) = (alpha.sqrt(), (1.0 - alpha).sqrt());

    // ||x - sqrt(a)·x_k||² = |x|² - 2·sqrt(a)·x·x_k + a·|x_k|², as [B, K].
    let x_sq = x.f_square()?.f_sum_dim_intlist(1, true, Kind::Double)?;
    let data_sq = data
        .f_square()?
        .f_sum_dim_intlist(1, false, Kind::Double)?
        .f_unsqueeze(0)?;
    let cross = x.f_matmul(&data.f_transpose(0, 1)?)?;
    let dist = x_sq
        .f_sub(&cross.f_mul_scalar(2.0 * sqrt_a)?)?
        .f_add(&data_sq.f_mul_scalar(alpha)?)?;
    let weights = dist
        .f_mul_scalar(-0.5 / (1.0 - alpha))?
        .f_softmax(1, Kind::Double)?;

    let x0_hat = weights.f_matmul(&data)?;
    let eps = x
        .f_sub(&x0_hat.f_mul_scalar(sqrt_a)?)?
        .f_div_scalar(sqrt_one_minus_a)?;
    Ok(eps.f_reshape(shape.as_slice())?.f_to_kind(sample.kind())?)
}

pub struct ExactDenoiser;

impl Node for ExactDenoiser {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ExactDenoiser", "demo")
            .description(
                "The exact (MMSE, closed-form) epsilon-prediction model for the empirical distribution of \
                 `images` under the DDPM forward process: what a perfectly trained network would output. \
                 Sampling with it lands on one of the images.",
            )
            .input(InputSpec::new("sample", PortType::Latent).doc("x_t, [B, C, H, W]"))
            .input(InputSpec::float("timestep").optional().min(0.0).doc("an integer timestep into alphas_cumprod"))
            .input(InputSpec::tensor("alphas_cumprod").optional().doc("the scheduler's alphas_cumprod"))
            .input(
                InputSpec::float("alpha_bar")
                    .optional()
                    .doc("the input's cumulative alpha (SchedulerAlphaBar), instead of timestep + alphas_cumprod"),
            )
            .input(InputSpec::tensor("images").doc("the data set, [K, C, H, W]"))
            .output(OutputSpec::new("model_output", PortType::Tensor).doc("the predicted noise, like `sample`"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let alpha = if inputs.has("alpha_bar") {
            inputs.float("alpha_bar")?
        } else {
            let (Some(alphas), true) =
                (inputs.opt_tensor("alphas_cumprod")?, inputs.has("timestep"))
            else {
                return Err("give either alpha_bar or timestep and alphas_cumprod".into());
            };
            let t = inputs.float("timestep")?;
            let n = alphas.numel() as f64;
            if alphas.dim() != 1 || t.fract() != 0.0 || !(0.0..n).contains(&t) {
                return Err(format!(
                    "timestep {t} is not an index into alphas_cumprod {:?} (for fractional timesteps \
                     give alpha_bar from SchedulerAlphaBar)",
                    alphas.size()
                )
                .into());
            }
            alphas.f_double_value(&[t as i64])?
        };
        let eps = exact_epsilon(inputs.tensor("sample")?, alpha, inputs.tensor("images")?)?;
        Ok(vec![eps.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_noise_of_a_noised_image() {
        let images = crate::demo::procedural::procedural_images(16, 16).unwrap();
        let a = 0.7f64;
        // Deterministic stand-in for noise (no global RNG: tests run in parallel).
        let eps = Tensor::arange(768, (Kind::Float, Device::Cpu))
            .f_mul_scalar(12.9898)
            .unwrap()
            .sin()
            .view([1, 3, 16, 16])
            * 1.5;
        let x = images.get(4).unsqueeze(0) * a.sqrt() + &eps * (1.0 - a).sqrt();
        let pred = exact_epsilon(&x, a, &images).unwrap();
        let err = (&pred - &eps).abs().max().double_value(&[]);
        assert!(
            err < 1e-4,
            "posterior should be one-hot at this noise level: {err}"
        );
        // Pure noise (a -> 0): eps_hat ~ x.
        let pred = exact_epsilon(&eps, 1e-6, &images).unwrap();
        assert!((&pred - &eps).abs().max().double_value(&[]) < 1e-2);
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let images = Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let sample = Tensor::zeros([1, 3, 4, 5], (Kind::Float, Device::Cpu));
        assert!(exact_epsilon(&sample, 0.5, &images).is_err());
        assert!(exact_epsilon(&images, 1.0, &images).is_err());
    }
}
