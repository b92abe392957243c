//! The original CompVis latent-diffusion checkpoints (`.ckpt`, a Lightning
//! checkpoint of `ldm.models.diffusion.ddpm.LatentDiffusion`) with the
//! model's YAML (CompVis `configs/latent-diffusion/*.yaml`): the parts of
//! the state dict and the configurations the loaders build from.
//!
//! - The denoiser is CompVis' `openaimodel.UNetModel`, which is
//!   guided-diffusion's `UNetModel` (CompVis copied it and added the
//!   spatial transformer): its `model.diffusion_model.*` keys are the ADM
//!   family's names one for one, so it loads there ([`crate::family::adm`],
//!   [`unet_arch`] maps the YAML's `unet_config`), without a key conversion.
//!   diffusers' `scripts/convert_ldm_original_checkpoint_to_diffusers.py`
//!   renames the same weights to `UNet2DModel`; both compute the same
//!   network.
//! - The text-to-image model (`conditioning_key: crossattn` with a
//!   `BERTEmbedder`): its U-Net has the spatial transformer
//!   (`use_spatial_transformer`), which is Stable Diffusion's U-Net, so
//!   it is renamed to diffusers' `UNet2DConditionModel` by
//!   [`super::unet::convert`] and configured from the YAML
//!   ([`super::ldm_crossattn::unet_reference`], checked against the shapes); the
//!   `BERTEmbedder` becomes LDMBert ([`super::ldm_bert`]). The ImageNet
//!   model (`crossattn` with a `ClassEmbedder`) has the same U-Net; its
//!   `cond_stage_model.embedding.weight` goes to
//!   [`crate::family::class_embedder`]. Concat conditioning is refused by
//!   name.
//! - The autoencoder (`first_stage_model.*`, ldm `Encoder`/`Decoder` and
//!   taming's `VectorQuantizer2`) is renamed to diffusers' `VQModel` /
//!   `AutoencoderKL` names by [`super::vae::convert`] (diffusers'
//!   `convert_ldm_vae_checkpoint`), configured from `first_stage_config`
//!   ([`vae_config`]).
//! - The schedule ([`scheduler_config`]): CompVis' DDIM sampler
//!   (`ldm/models/diffusion/ddim.py`: timesteps `range(0, T, T/n) + 1`,
//!   `alphas_prev[0] = alphas_cumprod[0]`) is diffusers' DDIM with
//!   `leading` spacing, `steps_offset` 1 and `set_alpha_to_one` false; its
//!   `linear` betas (`make_beta_schedule`: `linspace(sqrt(start), sqrt(end))**2`)
//!   are diffusers' `scaled_linear`.
//!
//! Skipped keys: the DDPM buffers (`super::IGNORED_KEYS`), `model_ema.*` (the
//! EMA copy; CompVis' sampling scripts and diffusers' conversion use the
//! model's own weights), `logvar`. Any other key is an error, listed with
//! every missing and mis-shaped one.
use super::ldm_bert::BertArch;
use super::yaml::{boolean, float, get, int, ints, object, target};
use super::IGNORED_KEYS;
use crate::family::adm::config::Arch;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use tch::Tensor;

pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const FIRST_STAGE_PREFIX: &str = "first_stage_model.";
pub const COND_STAGE_PREFIX: &str = "cond_stage_model.";

/// A LatentDiffusion state dict split by part.
pub struct Parts {
    /// `model.diffusion_model.*`, prefix removed.
    pub unet: BTreeMap<String, Tensor>,
    /// `first_stage_model.*`, prefix removed.
    pub first_stage: BTreeMap<String, Tensor>,
    /// `cond_stage_model.*`, prefix removed (the text encoder).
    pub cond_stage: BTreeMap<String, Tensor>,
    /// `scale_factor` when stored (`scale_by_std`).
    pub scale_factor: Option<f64>,
    /// Keys of no part this loader builds.
    pub unexpected: Vec<String>,
}

pub fn split(tensors: BTreeMap<String, Tensor>) -> Parts {
    let mut p = Parts {
        unet: BTreeMap::new(),
        first_stage: BTreeMap::new(),
        cond_stage: BTreeMap::new(),
        scale_factor: None,
        unexpected: Vec::new(),
    };
    for (k, t) in tensors {
        if let Some(r) = k.strip_prefix(UNET_PREFIX) {
            p.unet.insert(r.to_string(), t);
        } else if let Some(r) = k.strip_prefix(FIRST_STAGE_PREFIX) {
            p.first_stage.insert(r.to_string(), t);
        } else if let Some(r) = k.strip_prefix(COND_STAGE_PREFIX) {
            p.cond_stage.insert(r.to_string(), t);
        } else if k == "scale_factor" && t.numel() == 1 {
            p.scale_factor = Some(t.double_value(&[]));
        } else if !(IGNORED_KEYS.contains(&k.as_str()) || k.starts_with("model_ema.")) {
            p.unexpected.push(k);
        }
    }
    p
}

/// What a LatentDiffusion model is conditioned on.
#[derive(Debug, Clone, PartialEq)]
pub enum Conditioning {
    Unconditional,
    /// `conditioning_key: adm`: labels into the U-Net's class embedding.
    ClassLabels,
    /// `crossattn` with a BERTEmbedder: the text-to-image model.
    Text(BertArch),
    /// `crossattn` with a ClassEmbedder: the ImageNet model, each label a
    /// one-token context.
    ClassEmbedder {
        n_classes: i64,
        embed_dim: i64,
    },
}

/// The YAML's `model` section, checked to be a `LatentDiffusion`.
pub struct LdmConfig {
    pub params: Map<String, Value>,
}

impl LdmConfig {
    /// Parses the YAML text of a CompVis model config.
    pub fn parse(text: &str) -> Result<LdmConfig, String> {
        let v: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        let model = v
            .get("model")
            .and_then(Value::as_object)
            .ok_or("no `model` section (expected a CompVis latent-diffusion config)")?;
        let (t, params) = target(model, "model")?;
        if t != "ldm.models.diffusion.ddpm.LatentDiffusion" {
            return Err(format!(
                "model.target is `{t}`; .ckpt loading builds ldm.models.diffusion.ddpm.LatentDiffusion"
            ));
        }
        Ok(LdmConfig { params })
    }

    /// `parameterization` (ddpm.py: "eps" or "x0").
    pub fn x0(&self) -> Result<bool, String> {
        match get(&self.params, "parameterization").and_then(Value::as_str) {
            None | Some("eps") => Ok(false),
            Some("x0") => Ok(true),
            Some(p) => Err(format!(
                "model.params.parameterization `{p}`: expected eps or x0"
            )),
        }
    }

    pub fn timesteps(&self) -> Result<i64, String> {
        int(&self.params, "timesteps", Some(1000), "model.params")
    }

    /// What the model is conditioned on (LatentDiffusion's
    /// `conditioning_key`, which defaults to `concat`, and its cond stage).
    pub fn conditioning(&self) -> Result<Conditioning, String> {
        let uncond = get(&self.params, "cond_stage_config").and_then(Value::as_str)
            == Some("__is_unconditional__");
        let key = get(&self.params, "conditioning_key").and_then(Value::as_str);
        match (uncond, key) {
            (true, _) => Ok(Conditioning::Unconditional),
            (false, Some("adm")) => Ok(Conditioning::ClassLabels),
            (false, Some("crossattn")) => super::ldm_crossattn::cond_stage(&self.params),
            (false, k) => Err(format!(
                "model.params.conditioning_key `{}`: from .ckpt files unconditional models, `adm` (class labels \
                 into the U-Net's num_classes embedding) and `crossattn` (with a BERTEmbedder: text to image; with \
                 a ClassEmbedder: the ImageNet model) are built; concat and hybrid conditioning (inpainting, \
                 super-resolution, layout) are not",
                k.unwrap_or("concat (LatentDiffusion's default)")
            )),
        }
    }

    pub fn unet(&self) -> Result<Map<String, Value>, String> {
        let (t, p) = target(
            object(&self.params, "unet_config", "model.params")?,
            "unet_config",
        )?;
        if t != "ldm.modules.diffusionmodules.openaimodel.UNetModel" {
            return Err(format!(
                "unet_config.target is `{t}`, not ldm.modules.diffusionmodules.openaimodel.UNetModel"
            ));
        }
        Ok(p)
    }

    /// `scale_factor` (LatentDiffusion's default 1.0), or the stored buffer
    /// when `scale_by_std`.
    pub fn scale_factor(&self, stored: Option<f64>) -> Result<f64, String> {
        if boolean(&self.params, "scale_by_std", false, "model.params")? {
            return stored.ok_or_else(|| {
                "model.params.scale_by_std is set but the checkpoint has no scale_factor"
                    .to_string()
            });
        }
        float(&self.params, "scale_factor", 1.0, "model.params")
    }
}

/// CompVis `openaimodel.UNetModel.__init__`'s arguments (and defaults) as
/// the ADM architecture. `attention_resolutions` are already downsampling
/// factors there.
pub fn unet_arch(u: &Map<String, Value>) -> Result<Arch, String> {
    let at = "unet_config.params";
    // `use_fp16` and `use_checkpoint` are ignored: LoadLDM's dtype chooses.
    if boolean(u, "use_spatial_transformer", false, at)? {
        return Err(format!(
            "{at}.use_spatial_transformer: the spatial transformer (cross-attention) is built for the \
             text-to-image model only (conditioning_key crossattn with a BERTEmbedder)"
        ));
    }
    if get(u, "n_embed").is_some() {
        return Err(format!(
            "{at}.n_embed (codebook-id prediction) is not built"
        ));
    }
    if int(u, "dims", Some(2), at)? != 2 || !boolean(u, "conv_resample", true, at)? {
        return Err(format!(
            "{at}: only dims 2 with conv_resample true are built"
        ));
    }
    let num_heads = int(u, "num_heads", Some(-1), at)?;
    let num_head_channels = int(u, "num_head_channels", Some(-1), at)?;
    if num_heads == -1 && num_head_channels == -1 {
        return Err(format!("{at}: set num_heads or num_head_channels"));
    }
    let mut num_heads_upsample = int(u, "num_heads_upsample", Some(-1), at)?;
    if num_heads_upsample == -1 {
        num_heads_upsample = num_heads;
    }
    // openaimodel.py: without `legacy`, a head count becomes
    // `num_head_channels = ch // num_heads` for every block, so the decoder
    // uses num_heads as well.
    if !boolean(u, "legacy", true, at)? && num_head_channels == -1 {
        num_heads_upsample = num_heads;
    }
    let in_channels = int(u, "in_channels", None, at)?;
    Ok(Arch {
        image_size: int(u, "image_size", None, at)?,
        in_channels,
        model_channels: int(u, "model_channels", None, at)?,
        out_channels: int(u, "out_channels", None, at)?,
        num_res_blocks: int(u, "num_res_blocks", None, at)?,
        attention_ds: ints(u, "attention_resolutions", &[], at)?,
        channel_mult: ints(u, "channel_mult", &[1, 2, 4, 8], at)?
            .into_iter()
            .map(|m| m as f64)
            .collect(),
        num_classes: get(u, "num_classes")
            .map(|_| int(u, "num_classes", None, at))
            .transpose()?,
        num_heads,
        num_head_channels,
        num_heads_upsample,
        use_scale_shift_norm: boolean(u, "use_scale_shift_norm", false, at)?,
        resblock_updown: boolean(u, "resblock_updown", false, at)?,
        use_new_attention_order: boolean(u, "use_new_attention_order", false, at)?,
    })
}

/// The diffusers `config.json` of the first stage (`first_stage_config`):
/// `VQModelInterface`/`VQModel` a VQModel, `AutoencoderKL` an AutoencoderKL;
/// ldm's Encoder/Decoder always normalize with 32 groups and SiLU.
pub fn vae_config(c: &LdmConfig, scale_factor: f64) -> Result<Value, String> {
    let (t, p) = target(
        object(&c.params, "first_stage_config", "model.params")?,
        "first_stage_config",
    )?;
    let at = "first_stage_config.params";
    let vq = match t {
        "ldm.models.autoencoder.VQModelInterface" | "ldm.models.autoencoder.VQModel" => true,
        "ldm.models.autoencoder.AutoencoderKL" => false,
        t => {
            return Err(format!(
            "first_stage_config.target `{t}`: expected an ldm VQModelInterface or AutoencoderKL"
        ))
        }
    };
    let dd = object(&p, "ddconfig", at)?;
    let dat = "first_stage_config.params.ddconfig";
    if !ints(dd, "attn_resolutions", &[], dat)?.is_empty() {
        return Err(format!(
            "{dat}.attn_resolutions: attention inside the encoder's and decoder's blocks is not built \
             (diffusers' DownEncoderBlock2D/UpDecoderBlock2D have none)"
        ));
    }
    let attention = match get(dd, "attn_type")
        .and_then(Value::as_str)
        .unwrap_or("vanilla")
    {
        "vanilla" => true,
        "none" => false,
        a => return Err(format!("{dat}.attn_type `{a}`: expected vanilla or none")),
    };
    for k in ["give_pre_end", "tanh_out", "use_linear_attn"] {
        if boolean(dd, k, false, dat)? {
            return Err(format!("{dat}.{k} is not built"));
        }
    }
    if boolean(dd, "double_z", true, dat)? == vq {
        return Err(format!("{dat}.double_z must be {} for {t}", !vq));
    }
    let z = int(dd, "z_channels", None, dat)?;
    let embed = int(&p, "embed_dim", None, at)?;
    let ch = int(dd, "ch", None, dat)?;
    let blocks: Vec<i64> = ints(dd, "ch_mult", &[1, 2, 4, 8], dat)?
        .iter()
        .map(|m| m * ch)
        .collect();
    let mut m = json!({
        "in_channels": int(dd, "in_channels", None, dat)?,
        "out_channels": int(dd, "out_ch", None, dat)?,
        "latent_channels": z,
        "block_out_channels": blocks,
        "down_block_types": vec!["DownEncoderBlock2D"; blocks.len()],
        "up_block_types": vec!["UpDecoderBlock2D"; blocks.len()],
        "layers_per_block": int(dd, "num_res_blocks", None, dat)?,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "scaling_factor": scale_factor,
        "mid_block_add_attention": attention,
        "use_quant_conv": true,
        "use_post_quant_conv": true,
    });
    if vq {
        if get(&p, "remap").is_some() {
            return Err(format!(
                "{at}.remap (codebook index remapping) is not built"
            ));
        }
        m["_class_name"] = json!("VQModel");
        m["num_vq_embeddings"] = json!(int(&p, "n_embed", None, at)?);
        m["vq_embed_dim"] = json!(embed);
    } else {
        if embed != z {
            return Err(format!(
                "{at}.embed_dim {embed} differs from ddconfig.z_channels {z}: diffusers' AutoencoderKL has one latent width"
            ));
        }
        m["_class_name"] = json!("AutoencoderKL");
    }
    Ok(m)
}

/// The DDIM config reproducing CompVis' `DDIMSampler` on this model's
/// schedule (see the module docs), with its prediction type.
pub fn scheduler_config(c: &LdmConfig) -> Result<Value, String> {
    let at = "model.params";
    let schedule = match get(&c.params, "beta_schedule")
        .and_then(Value::as_str)
        .unwrap_or("linear")
    {
        "linear" => "scaled_linear",
        "sqrt_linear" => "linear",
        s => {
            return Err(format!(
                "{at}.beta_schedule `{s}`: expected linear or sqrt_linear"
            ))
        }
    };
    Ok(json!({
        "_class_name": "DDIMScheduler",
        "beta_schedule": schedule,
        "beta_start": float(&c.params, "linear_start", 1e-4, at)?,
        "beta_end": float(&c.params, "linear_end", 2e-2, at)?,
        "num_train_timesteps": c.timesteps()?,
        "clip_sample": false,
        "set_alpha_to_one": false,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "prediction_type": if c.x0()? { "sample" } else { "epsilon" },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CompVis config in the shape of configs/latent-diffusion/*.yaml.
    fn yaml(
        unet_extra: &str,
        first_stage: &str,
        ddconfig_extra: &str,
        model_extra: &str,
    ) -> String {
        format!(
            "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    linear_start: 0.0015\n    \
             linear_end: 0.0195\n    cond_stage_config: __is_unconditional__\n{model_extra}    unet_config:\n      \
             target: ldm.modules.diffusionmodules.openaimodel.UNetModel\n      params:\n        image_size: 64\n        \
             in_channels: 3\n        out_channels: 3\n        model_channels: 224\n        attention_resolutions: [8, 4, 2]\n        \
             num_res_blocks: 2\n        channel_mult: [1, 2, 3, 4]\n        num_head_channels: 32\n{unet_extra}    \
             first_stage_config:\n      target: {first_stage}\n      params:\n        embed_dim: 3\n        n_embed: 8192\n        \
             ddconfig:\n          double_z: false\n          z_channels: 3\n          in_channels: 3\n          out_ch: 3\n          \
             ch: 128\n          ch_mult: [1, 2, 4]\n          num_res_blocks: 2\n{ddconfig_extra}"
        )
    }

    const VQ: &str = "ldm.models.autoencoder.VQModelInterface";

    #[test]
    fn celebahq_shaped_config_maps_to_adm_vq_and_compvis_ddim() {
        let c = LdmConfig::parse(&yaml("", VQ, "          attn_resolutions: []\n", "")).unwrap();
        assert_eq!(c.conditioning().unwrap(), Conditioning::Unconditional);
        let a = unet_arch(&c.unet().unwrap()).unwrap();
        assert_eq!(a.attention_ds, [8, 4, 2]);
        assert_eq!(a.channel_mult, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            (a.num_heads, a.num_head_channels, a.num_classes),
            (-1, 32, None)
        );
        assert!(!a.use_scale_shift_norm && !a.resblock_updown);
        let v = vae_config(&c, 1.0).unwrap();
        assert_eq!(v["_class_name"], "VQModel");
        assert_eq!(v["block_out_channels"], serde_json::json!([128, 256, 512]));
        assert_eq!(
            (v["num_vq_embeddings"].as_i64(), v["vq_embed_dim"].as_i64()),
            (Some(8192), Some(3))
        );
        let s = scheduler_config(&c).unwrap();
        assert_eq!(
            (s["beta_schedule"].as_str(), s["prediction_type"].as_str()),
            (Some("scaled_linear"), Some("epsilon"))
        );
    }

    #[test]
    fn what_is_not_built_is_refused_by_name() {
        let st = yaml("        use_spatial_transformer: true\n", VQ, "", "");
        let e = unet_arch(&LdmConfig::parse(&st).unwrap().unet().unwrap()).unwrap_err();
        assert!(e.contains("use_spatial_transformer"), "{e}");
        let attn =
            LdmConfig::parse(&yaml("", VQ, "          attn_resolutions: [32]\n", "")).unwrap();
        assert!(vae_config(&attn, 1.0)
            .unwrap_err()
            .contains("attn_resolutions"));
        let kl =
            LdmConfig::parse(&yaml("", "ldm.models.autoencoder.AutoencoderKL", "", "")).unwrap();
        assert!(vae_config(&kl, 1.0).unwrap_err().contains("double_z"));
        let cos = LdmConfig::parse(&yaml("", VQ, "", "    beta_schedule: cosine\n")).unwrap();
        assert!(scheduler_config(&cos).unwrap_err().contains("cosine"));
        let v = LdmConfig::parse(&yaml("", VQ, "", "    parameterization: v\n")).unwrap();
        assert!(v.x0().unwrap_err().contains("`v`"));
        assert!(
            LdmConfig::parse("model:\n  target: ldm.models.autoencoder.VQModel\n")
                .err()
                .unwrap()
                .contains("LatentDiffusion")
        );
    }
}
