//! AutoencoderKL, the Stable Diffusion VAE (diffusers
//! `models/autoencoders/autoencoder_kl.py`): encoder + `quant_conv` to a
//! diagonal Gaussian posterior, `post_quant_conv` + decoder back to pixels;
//! plus the pipeline's latent scaling and diffusers' `VaeImageProcessor`
//! pixel conversion (`image_processor.py`).
//!
//! - [`blocks`]: resnet, down/upsampler, mid-block attention.
//! - [`coder`]: `Encoder` and `Decoder`.
pub mod blocks;
pub mod coder;

use crate::layers::Conv2d;
use crate::weights::Weights;
use coder::{Decoder, Encoder};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The fields of a diffusers `vae/config.json` that the SD VAE uses, with
/// `AutoencoderKL.__init__`'s defaults. Other fields (`sample_size`,
/// `force_upcast`, `shift_factor`, ...) are ignored: the SD 1.x/2.x
/// pipelines do not use `shift_factor` either.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: i64,
    pub act_fn: String,
    pub latent_channels: i64,
    pub norm_num_groups: i64,
    pub scaling_factor: f64,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl Default for VaeConfig {
    fn default() -> VaeConfig {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl VaeConfig {
    /// Parses a `config.json`; fields set to `null` take their defaults.
    pub fn from_json(text: &str) -> Result<VaeConfig, String> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("invalid VAE config: {e}"))?;
        if let Some(map) = value.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        serde_json::from_value(value).map_err(|e| format!("invalid VAE config: {e}"))
    }

    pub fn from_file(path: &Path) -> Result<VaeConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        VaeConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Rejects what this implementation does not build (other block types or
    /// activations, channel counts the group norm cannot split).
    pub fn validate(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        let mut errors = Vec::new();
        if n == 0 {
            errors.push("block_out_channels is empty".to_string());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            errors.push(format!(
                "{} down and {} up block types for {n} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        for t in self
            .down_block_types
            .iter()
            .filter(|t| *t != "DownEncoderBlock2D")
        {
            errors.push(format!(
                "unsupported down block type {t:?} (only DownEncoderBlock2D)"
            ));
        }
        for t in self
            .up_block_types
            .iter()
            .filter(|t| *t != "UpDecoderBlock2D")
        {
            errors.push(format!(
                "unsupported up block type {t:?} (only UpDecoderBlock2D)"
            ));
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            errors.push(format!("unsupported act_fn {:?} (only silu)", self.act_fn));
        }
        let g = self.norm_num_groups;
        if g <= 0
            || self
                .block_out_channels
                .iter()
                .any(|&c| c <= 0 || c % g != 0)
        {
            errors.push(format!(
                "norm_num_groups {g} does not divide block_out_channels {:?}",
                self.block_out_channels
            ));
        }
        if self.layers_per_block < 1
            || self.latent_channels < 1
            || self.in_channels < 1
            || self.out_channels < 1
        {
            errors.push("layers_per_block and channel counts must be positive".to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("unsupported VAE config: {}", errors.join("; ")))
        }
    }
}

/// The encoder's posterior `DiagonalGaussianDistribution` (`vae.py`):
/// the two halves of the moments, log-variance clamped to [-30, 20].
pub struct Posterior {
    pub mean: Tensor,
    pub logvar: Tensor,
}

impl Posterior {
    pub fn std(&self) -> Tensor {
        (&self.logvar * 0.5).exp()
    }
    /// `mode()`: the mean.
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }
    /// `sample()` with the standard normal `noise` given instead of drawn:
    /// mean + std * noise.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor, String> {
        let noise = noise
            .to_kind(self.mean.kind())
            .to_device(self.mean.device());
        let scaled = self
            .std()
            .f_mul(&noise)
            .map_err(|e| format!("VAE posterior sample: {e}"))?;
        Ok(&self.mean + scaled)
    }
}

/// A loaded AutoencoderKL.
pub struct Vae {
    pub config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    kind: Kind,
    device: Device,
}

impl Vae {
    /// Takes every parameter by its diffusers name from `w` (in `w.kind` on
    /// `w.device`). Missing keys and shape mismatches are recorded in `w`:
    /// call `w.finish()` afterwards (or use [`Vae::from_weights`]).
    pub fn load(config: &VaeConfig, w: &mut Weights) -> Result<Vae, String> {
        config.validate()?;
        let l2 = 2 * config.latent_channels;
        let l = config.latent_channels;
        Ok(Vae {
            encoder: Encoder::load(w, "encoder", config),
            decoder: Decoder::load(w, "decoder", config),
            quant_conv: config
                .use_quant_conv
                .then(|| Conv2d::load(w, "quant_conv", l2, l2, 1, 1, 0)),
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| Conv2d::load(w, "post_quant_conv", l, l, 1, 1, 0)),
            config: config.clone(),
            kind: w.kind,
            device: w.device,
        })
    }

    /// [`Vae::load`] followed by the complete key report of `Weights::finish`.
    pub fn from_weights(config: &VaeConfig, mut w: Weights) -> Result<Vae, String> {
        let vae = Vae::load(config, &mut w)?;
        w.finish()?;
        Ok(vae)
    }

    /// Loads a diffusers `vae/` folder (config.json +
    /// diffusion_pytorch_model.safetensors).
    pub fn from_folder(dir: &Path, kind: Kind, device: Device) -> Result<Vae, String> {
        let config = VaeConfig::from_file(&dir.join("config.json"))?;
        let file = dir.join("diffusion_pytorch_model.safetensors");
        let tensors: BTreeMap<String, Tensor> = Weights::read_safetensors(&file)?;
        Vae::from_weights(
            &config,
            Weights::new(tensors, kind, device, &file.display().to_string()),
        )
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn device(&self) -> Device {
        self.device
    }

    fn check_input(&self, x: &Tensor, channels: i64, what: &str) -> Result<Tensor, String> {
        let size = x.size();
        if size.len() != 4 || size[1] != channels || size.iter().any(|&d| d < 1) {
            return Err(format!(
                "VAE {what}: expected a [B, {channels}, H, W] tensor with no zero dimension, got {size:?}"
            ));
        }
        x.f_to_kind(self.kind)
            .and_then(|x| x.f_to_device(self.device))
            .map_err(|e| format!("VAE {what}: {e}"))
    }

    /// `AutoencoderKL.decode(z)`: post_quant_conv then the decoder, on
    /// unscaled latents. Output in [-1, 1] (roughly), model dtype.
    pub fn decode_raw(&self, z: &Tensor) -> Result<Tensor, String> {
        let z = self.check_input(z, self.config.latent_channels, "decode")?;
        let _guard = tch::no_grad_guard();
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(&z),
            None => z,
        };
        Ok(self.decoder.forward(&z))
    }

    /// What the SD pipelines decode: `vae.decode(latents / scaling_factor)`.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor, String> {
        let latents = self.check_input(latents, self.config.latent_channels, "decode")?;
        self.decode_raw(&(latents / self.config.scaling_factor))
    }

    /// `AutoencoderKL.encode(x).latent_dist` for images in [-1, 1].
    pub fn encode(&self, image: &Tensor) -> Result<Posterior, String> {
        let x = self.check_input(image, self.config.in_channels, "encode")?;
        let _guard = tch::no_grad_guard();
        let h = self.encoder.forward(&x);
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(&h),
            None => h,
        };
        let halves = moments.chunk(2, 1);
        Ok(Posterior {
            mean: halves[0].shallow_clone(),
            logvar: halves[1].clamp(-30.0, 20.0),
        })
    }

    /// Latents for the diffusion model, as the img2img pipeline makes them:
    /// `posterior.sample(noise) * scaling_factor`, or with no noise the mode
    /// (`mean * scaling_factor`, `sample_mode="argmax"`).
    pub fn encode_latents(&self, image: &Tensor, noise: Option<&Tensor>) -> Result<Tensor, String> {
        let posterior = self.encode(image)?;
        let z = match noise {
            Some(noise) => posterior.sample(noise)?,
            None => posterior.mean,
        };
        Ok(z * self.config.scaling_factor)
    }
}

/// `VaeImageProcessor.denormalize` then `pt_to_numpy`'s `.float()`:
/// (x * 0.5 + 0.5).clamp(0, 1) in the decoder's dtype, then float32.
/// Layout stays [B, C, H, W] (diffgraph's IMAGE convention).
pub fn to_pixels(decoded: &Tensor) -> Tensor {
    (decoded * 0.5 + 0.5).clamp(0.0, 1.0).to_kind(Kind::Float)
}

/// `numpy_to_pil`'s `(images * 255).round().astype("uint8")` on the output
/// of [`to_pixels`] (round half to even, like numpy), [B, C, H, W] u8.
pub fn to_pixels_u8(decoded: &Tensor) -> Tensor {
    (to_pixels(decoded) * 255.0).round().to_kind(Kind::Uint8)
}
