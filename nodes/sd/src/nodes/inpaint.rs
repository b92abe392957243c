//! Inpainting's encoder: ComfyUI's `VAEEncodeForInpaint` (`nodes.py`,
//! `VAEEncodeForInpaint.encode`). The masked pixels are set to grey (0.5)
//! before encoding, so the model sees no trace of what it is to replace, and
//! the latent carries a `noise_mask` grown by a few pixels (a box filter of
//! the rounded mask, clamped) that the sampler (`KSamplerStart`'s `mask`)
//! denoises. Images are diffgraph's [B, C, H, W]; ComfyUI's "x" is the
//! height and "y" the width.
use super::component::Component;
use super::loader::VAE;
use crate::vae::Vae;
use diffgraph_sdk::prelude::*;

pub struct VAEEncodeForInpaint;

impl Node for VAEEncodeForInpaint {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEEncodeForInpaint", "latent")
            .description(
                "ComfyUI's VAEEncodeForInpaint: the mask resized bilinearly to the image, image and mask \
                 cropped (centred) to multiples of the VAE's scale factor, the pixels where the rounded \
                 mask is 1 set to 0.5, encoded (posterior mean times the scaling factor, as VAEEncode); \
                 noise_mask = round(clamp(box filter of size grow_mask_by over the rounded mask, 0, 1)), \
                 [B, 1, H, W] at pixel resolution (the sampler resizes it to the latent).",
            )
            .input(InputSpec::new("vae", PortType::object(VAE)))
            .input(InputSpec::new("image", PortType::Image))
            .input(InputSpec::tensor("mask").doc("[.., H, W], 1 = repaint (ComfyUI's MASK)"))
            .input(InputSpec::int("grow_mask_by").default(6).range(0.0, 64.0))
            .output(OutputSpec::new("latent", PortType::Latent))
            .output(OutputSpec::new("noise_mask", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let vae = inputs.object::<Component<Vae>>("vae")?.lock()?;
        let factor = 1i64 << (vae.config.block_out_channels.len().saturating_sub(1));
        let grow = inputs.int("grow_mask_by")?;
        if !(0..=64).contains(&grow) {
            return Err(format!("input `grow_mask_by`: expected 0..=64, got {grow}").into());
        }
        let (pixels, mask) = prepare(
            inputs.tensor("image")?,
            inputs.tensor("mask")?,
            factor,
            grow,
        )?;
        let image = pixels * 2.0 - 1.0;
        let latent =
            diffgraph_sdk::interrupt::catch(|| tch::no_grad(|| vae.encode_latents(&image, None)))?
                .map_err(NodeError::new)?;
        Ok(vec![latent.to_kind(Kind::Float).into(), mask.into()])
    }
}

/// The pixels to encode and the noise mask (both cropped to multiples of
/// `factor`), as `VAEEncodeForInpaint.encode` computes them.
pub fn prepare(
    image: &Tensor,
    mask: &Tensor,
    factor: i64,
    grow: i64,
) -> Result<(Tensor, Tensor), NodeError> {
    let (is, ms) = (image.size(), mask.size());
    if is.len() != 4 || is[1] < 3 || ms.len() < 2 {
        return Err(format!(
            "expected an image [B, C>=3, H, W] and a mask [.., H, W], got {is:?} and {ms:?}"
        )
        .into());
    }
    let (h, w) = (is[2], is[3]);
    let (x, y) = (h / factor * factor, w / factor * factor);
    if x == 0 || y == 0 {
        return Err(
            format!("the image ({h}x{w}) is smaller than the VAE's scale factor {factor}").into(),
        );
    }
    let mask = mask
        .f_to_kind(Kind::Float)?
        .f_to_device(image.device())?
        .f_reshape([-1, 1, ms[ms.len() - 2], ms[ms.len() - 1]])?
        .f_upsample_bilinear2d([h, w], false, None, None)?;
    let b = mask.size()[0];
    if b != 1 && b != is[0] {
        return Err(format!(
            "the mask's batch {b} is neither 1 nor the image's {}",
            is[0]
        )
        .into());
    }
    let (xo, yo) = ((h % factor) / 2, (w % factor) / 2);
    let pixels = image
        .f_narrow(1, 0, 3)?
        .f_narrow(2, xo, x)?
        .f_narrow(3, yo, y)?
        .f_to_kind(Kind::Float)?;
    let mask = mask.f_narrow(2, xo, x)?.f_narrow(3, yo, y)?;
    let rounded = mask.f_round()?;
    let grown = if grow == 0 {
        mask.shallow_clone()
    } else {
        let kernel = Tensor::f_ones([1, 1, grow, grow], (Kind::Float, mask.device()))?;
        // padding = ceil((grow - 1) / 2)
        let pad = grow / 2;
        rounded
            .f_conv2d(&kernel, None::<Tensor>, [1, 1], [pad, pad], [1, 1], 1)?
            .f_clamp(0.0, 1.0)?
    };
    let noise_mask = grown.f_narrow(2, 0, x)?.f_narrow(3, 0, y)?.f_round()?;
    // (p - 0.5) * (1 - round(mask)) + 0.5, channel by channel in ComfyUI.
    let keep = rounded.f_neg()?.f_add_scalar(1.0)?;
    let pixels = pixels.f_sub_scalar(0.5)?.f_mul(&keep)?.f_add_scalar(0.5)?;
    Ok((pixels, noise_mask.f_contiguous()?))
}

/// Parity with ComfyUI's `VAEEncodeForInpaint.encode` (the VAE replaced
/// by one returning its input): tests/fixtures/comfy/inpaint.safetensors,
/// made by scripts/fixtures/make_comfy_inpaint_fixtures.py. Tolerance 0: the
/// same libtorch ops in the same order.
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn pixels_and_noise_mask_equal_comfyuis() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/comfy/inpaint.safetensors");
        let f: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .unwrap()
            .into_iter()
            .collect();
        let mut cases = 0;
        for ratio in [8, 2] {
            for grow in [0, 1, 4, 6, 7] {
                let (pixels, mask) = prepare(&f["image"], &f["mask"], ratio, grow).unwrap();
                for (name, got) in [("pixels", pixels), ("noise_mask", mask)] {
                    let want = &f[&format!("{name}/{ratio}/{grow}")];
                    assert_eq!(got.size(), want.size(), "{name}/{ratio}/{grow}");
                    let d = (&got - want).abs().max().double_value(&[]);
                    assert_eq!(d, 0.0, "{name}/{ratio}/{grow}");
                }
                cases += 1;
            }
        }
        assert_eq!(cases, 10);
        // The masked pixels are grey, the mask's holes not (it is random).
        let n = f["noise_mask/8/0"].sum(Kind::Float).double_value(&[]);
        assert!(n > 10.0 && n < 200.0, "{n}");
    }
}
