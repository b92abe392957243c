//! VAE nodes: latents to pixels (txt2img's last step) and pixels to latents
//! (img2img's first), with the scaling factor of the model's config.
use super::loader::VAE;
use crate::vae::{to_pixels, Vae};
use diffgraph_sdk::prelude::*;
use std::sync::Mutex;

fn lock(vae: &Mutex<Vae>) -> Result<std::sync::MutexGuard<'_, Vae>, NodeError> {
    vae.lock().map_err(|_| NodeError::new("the VAE was poisoned by an earlier panic"))
}

pub struct VAEDecode;

impl Node for VAEDecode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEDecode", "latent")
            .description(
                "Decodes latents (divided by the VAE's scaling_factor first) to an image in [0, 1]: \
                 (x * 0.5 + 0.5).clamp(0, 1), as diffusers' image processor; SaveImage then rounds to 8 bits.",
            )
            .input(InputSpec::new("vae", PortType::object(VAE)))
            .input(InputSpec::new("latent", PortType::Latent))
            .output(OutputSpec::new("image", PortType::Image))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let vae = lock(inputs.object("vae")?)?;
        let decoded = tch::no_grad(|| vae.decode(inputs.tensor("latent")?).map_err(NodeError::new))?;
        Ok(vec![to_pixels(&decoded).into()])
    }
}

pub struct VAEEncode;

impl Node for VAEEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEEncode", "latent")
            .description(
                "Encodes an image in [0, 1] to latents (times the scaling_factor): the posterior's sample \
                 mean + std * noise when `noise` is given (diffusers' img2img), else its mean.",
            )
            .input(InputSpec::new("vae", PortType::object(VAE)))
            .input(InputSpec::new("image", PortType::Image))
            .input(InputSpec::new("noise", PortType::Latent).optional().doc("standard normal, latent-shaped"))
            .output(OutputSpec::new("latent", PortType::Latent))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let vae = lock(inputs.object("vae")?)?;
        let image = inputs.tensor("image")? * 2.0 - 1.0;
        let noise = inputs.opt_tensor("noise")?;
        let latent = tch::no_grad(|| vae.encode_latents(&image, noise).map_err(NodeError::new))?;
        Ok(vec![latent.to_kind(Kind::Float).into()])
    }
}
