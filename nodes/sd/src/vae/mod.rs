//! The autoencoders of latent diffusion (Rombach et al. 2022), both
//! regularizations: AutoencoderKL, the Stable Diffusion VAE (diffusers
//! `models/autoencoders/autoencoder_kl.py`): encoder + `quant_conv` to a
//! diagonal Gaussian posterior, `post_quant_conv` + decoder back to pixels;
//! and VQModel (`vq_model.py`, the paper's VQ-reg, chosen by the config's
//! `_class_name`): encoder + `quant_conv` to latents, quantized to the
//! nearest codebook entries ([`vq`]) by the decoding side;
//! plus the pipeline's latent scaling and diffusers' `VaeImageProcessor`
//! pixel conversion (`image_processor.py`).
//!
//! - [`blocks`]: resnet, down/upsampler, mid-block attention.
//! - [`coder`]: `Encoder` and `Decoder`.
pub mod blocks;
pub mod coder;
pub mod vq;

use crate::layers::Conv2d;
use crate::weights::Weights;
use coder::{Decoder, Encoder};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};
use vq::VectorQuantizer;

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
    /// "AutoencoderKL" or "VQModel" (absent: KL).
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// VQModel: codebook entries, their width (default: latent_channels)
    /// and the decoder's norm ("group"; "spatial" is MoVQ's, not built).
    pub num_vq_embeddings: i64,
    pub vq_embed_dim: Option<i64>,
    pub norm_type: String,
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
            class_name: None,
            num_vq_embeddings: 256,
            vq_embed_dim: None,
            norm_type: "group".into(),
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
            // VQModel's own default (AutoencoderKL's is 4).
            if map.get("_class_name").and_then(|v| v.as_str()) == Some("VQModel") {
                map.entry("latent_channels").or_insert(3.into());
            }
        }
        serde_json::from_value(value).map_err(|e| format!("invalid VAE config: {e}"))
    }

    /// Whether this is a VQModel (else an AutoencoderKL).
    pub fn is_vq(&self) -> bool {
        self.class_name.as_deref() == Some("VQModel")
    }

    /// The channels of the latents the diffusion model works on: the KL
    /// posterior's, or the VQ codebook's width (`vq_embed_dim`).
    pub fn diffusion_channels(&self) -> i64 {
        match self.is_vq() {
            true => self.vq_embed_dim.unwrap_or(self.latent_channels),
            false => self.latent_channels,
        }
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
        match self.class_name.as_deref() {
            None | Some("AutoencoderKL") | Some("VQModel") => {}
            Some(other) => errors.push(format!(
                "unsupported autoencoder class {other:?} (AutoencoderKL or VQModel)"
            )),
        }
        if self.is_vq() && self.norm_type != "group" {
            errors.push(format!(
                "unsupported norm_type {:?} (only group)",
                self.norm_type
            ));
        }
        if self.is_vq() && (self.num_vq_embeddings < 1 || self.diffusion_channels() < 1) {
            errors.push("num_vq_embeddings and vq_embed_dim must be positive".to_string());
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
    quantizer: Option<VectorQuantizer>,
    kind: Kind,
    device: Device,
}

impl Vae {
    /// Takes every parameter by its diffusers name from `w` (in `w.kind` on
    /// `w.device`). Missing keys and shape mismatches are recorded in `w`:
    /// call `w.finish()` afterwards (or use [`Vae::from_weights`]).
    pub fn load(config: &VaeConfig, w: &mut Weights) -> Result<Vae, String> {
        config.validate()?;
        let l = config.latent_channels;
        // KL: the moments (2 x latent) in and out of quant_conv; VQ: latent
        // to the codebook width and back (VQModel has both convs always).
        let (enc_out, quant_out) = match config.is_vq() {
            true => (l, config.diffusion_channels()),
            false => (2 * l, 2 * l),
        };
        let vq = config.is_vq();
        Ok(Vae {
            encoder: Encoder::load(w, "encoder", config),
            decoder: Decoder::load(w, "decoder", config),
            quant_conv: (vq || config.use_quant_conv)
                .then(|| Conv2d::load(w, "quant_conv", enc_out, quant_out, 1, 1, 0)),
            post_quant_conv: (vq || config.use_post_quant_conv).then(|| {
                Conv2d::load(
                    w,
                    "post_quant_conv",
                    config.diffusion_channels(),
                    l,
                    1,
                    1,
                    0,
                )
            }),
            quantizer: vq.then(|| {
                VectorQuantizer::load(
                    w,
                    "quantize",
                    config.num_vq_embeddings,
                    config.diffusion_channels(),
                )
            }),
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
    /// unscaled latents; `VQModel.decode(z)`: quantized first (as diffusers'
    /// LDMPipeline decodes), unless `force_not_quantize` (as the CompVis
    /// LDM sampler decodes). Output in [-1, 1] (roughly), model dtype.
    pub fn decode_raw(&self, z: &Tensor) -> Result<Tensor, String> {
        self.decode_raw_with(z, false)
    }

    /// [`Vae::decode_raw`], choosing whether a VQ autoencoder quantizes.
    pub fn decode_raw_with(&self, z: &Tensor, force_not_quantize: bool) -> Result<Tensor, String> {
        let z = self.check_input(z, self.config.diffusion_channels(), "decode")?;
        if force_not_quantize && self.quantizer.is_none() {
            return Err(
                "force_not_quantize applies to VQ autoencoders only; this one is KL".into(),
            );
        }
        let _guard = tch::no_grad_guard();
        let z = match (&self.quantizer, force_not_quantize) {
            (Some(quantizer), false) => quantizer.quantize(&z),
            _ => z,
        };
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(&z),
            None => z,
        };
        Ok(self.decoder.forward(&z))
    }

    /// What the pipelines decode: `vae.decode(latents / scaling_factor)`.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor, String> {
        self.decode_with(latents, false)
    }

    /// [`Vae::decode`], choosing whether a VQ autoencoder quantizes.
    pub fn decode_with(
        &self,
        latents: &Tensor,
        force_not_quantize: bool,
    ) -> Result<Tensor, String> {
        let latents = self.check_input(latents, self.config.diffusion_channels(), "decode")?;
        self.decode_raw_with(&(latents / self.config.scaling_factor), force_not_quantize)
    }

    /// `VQModel.encode(x).latents`: encoder then quant_conv, not quantized.
    pub fn encode_vq(&self, image: &Tensor) -> Result<Tensor, String> {
        if self.quantizer.is_none() {
            return Err("encode_vq: this autoencoder is KL".into());
        }
        let x = self.check_input(image, self.config.in_channels, "encode")?;
        let _guard = tch::no_grad_guard();
        let h = self.encoder.forward(&x);
        Ok(match &self.quant_conv {
            Some(conv) => conv.forward(&h),
            None => h,
        })
    }

    /// `VectorQuantizer.forward`'s quantized latents (VQ only).
    pub fn quantize(&self, z: &Tensor) -> Result<Tensor, String> {
        let quantizer = self
            .quantizer
            .as_ref()
            .ok_or("quantize: this autoencoder is KL")?;
        let z = self.check_input(z, self.config.diffusion_channels(), "quantize")?;
        let _guard = tch::no_grad_guard();
        Ok(quantizer.quantize(&z))
    }

    /// `AutoencoderKL.encode(x).latent_dist` for images in [-1, 1] (KL only).
    pub fn encode(&self, image: &Tensor) -> Result<Posterior, String> {
        if self.quantizer.is_some() {
            return Err("a VQ autoencoder has no posterior: use encode_vq".into());
        }
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
    /// A VQ autoencoder's latents are deterministic: `noise` is not used.
    pub fn encode_latents(&self, image: &Tensor, noise: Option<&Tensor>) -> Result<Tensor, String> {
        if self.quantizer.is_some() {
            return Ok(self.encode_vq(image)? * self.config.scaling_factor);
        }
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
