//! VAE nodes: latents to pixels (txt2img's last step) and pixels to latents
//! (img2img's first), with the scaling factor of the model's config.
use super::component::Component;
use super::loader::VAE;
use crate::vae::{to_pixels, Vae};
use diffgraph_sdk::prelude::*;

fn lock<'a>(inputs: &Inputs<'a>) -> Result<std::sync::MutexGuard<'a, Vae>, NodeError> {
    inputs.object::<Component<Vae>>("vae")?.lock()
}

pub struct VAEDecode;

impl Node for VAEDecode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEDecode", "latent")
            .description(
                "Decodes latents (divided by the VAE's scaling_factor first) to an image in [0, 1]: \
                 (x * 0.5 + 0.5).clamp(0, 1), as diffusers' image processor; SaveImage then rounds to 8 bits. \
                 KL (Stable Diffusion) and VQ (latent diffusion's VQModel) autoencoders alike.",
            )
            .input(InputSpec::new("vae", PortType::object(VAE)))
            .input(InputSpec::new("latent", PortType::Latent))
            .input(InputSpec::bool("force_not_quantize").default(false).doc(
                "VQ autoencoders: decode the latents as they are (the CompVis LDM sampler) instead of                  their nearest codebook entries (diffusers' VQModel.decode, LDMPipeline)",
            ))
            .output(OutputSpec::new("image", PortType::Image))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let vae = lock(inputs)?;
        let latent = inputs.tensor("latent")?;
        let raw = inputs.bool("force_not_quantize")?;
        // `catch`: a Ctrl-C between blocks ends the call without poisoning the lock.
        let decoded =
            diffgraph_sdk::interrupt::catch(|| tch::no_grad(|| vae.decode_with(latent, raw)))?
                .map_err(NodeError::new)?;
        Ok(vec![to_pixels(&decoded).into()])
    }
}

pub struct VAEEncode;

impl Node for VAEEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEEncode", "latent")
            .description(
                "Encodes an image in [0, 1] to latents (times the scaling_factor): the posterior's sample \
                 mean + std * noise when `noise` is given (diffusers' img2img), else its mean. A VQ \
                 autoencoder's latents are VQModel.encode's, unquantized (`noise` unused).",
            )
            .input(InputSpec::new("vae", PortType::object(VAE)))
            .input(InputSpec::new("image", PortType::Image))
            .input(InputSpec::new("noise", PortType::Latent).optional().doc("standard normal, latent-shaped"))
            .output(OutputSpec::new("latent", PortType::Latent))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let vae = lock(inputs)?;
        let image = inputs.tensor("image")? * 2.0 - 1.0;
        let noise = inputs.opt_tensor("noise")?;
        let latent =
            diffgraph_sdk::interrupt::catch(|| tch::no_grad(|| vae.encode_latents(&image, noise)))?
                .map_err(NodeError::new)?;
        Ok(vec![latent.to_kind(Kind::Float).into()])
    }
}

/// The latent shape for an image size: diffusers' `vae_scale_factor` is
/// 2^(number of VAE blocks - 1) (8 for Stable Diffusion).
pub struct LatentShape;

impl Node for LatentShape {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentShape", "latent")
            .description("[batch, latent channels, height / f, width / f] for GaussianNoise, f = the VAE's scale factor (8 for SD)")
            .input(InputSpec::new("vae", PortType::object(VAE)))
            .input(InputSpec::int("width").default(512).min(1.0))
            .input(InputSpec::int("height").default(512).min(1.0))
            .input(InputSpec::int("batch").default(1).range(1.0, 4096.0))
            .output(OutputSpec::new("shape", PortType::list(PortType::Int)))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let vae = lock(inputs)?;
        let factor = 1i64 << (vae.config.block_out_channels.len().saturating_sub(1));
        let (w, h) = (inputs.int("width")?, inputs.int("height")?);
        if w % factor != 0 || h % factor != 0 {
            return Err(NodeError::new(format!(
                "width {w} and height {h} must be multiples of the VAE's scale factor {factor}"
            )));
        }
        let shape = vec![
            inputs.int("batch")?,
            vae.config.diffusion_channels(),
            h / factor,
            w / factor,
        ];
        Ok(vec![shape.into()])
    }
}
