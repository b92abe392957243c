//! `LoadVAE` (ComfyUI's `VAELoader`): a separate VAE file replacing the
//! checkpoint's, wired to VAEDecode/VAEEncode instead of the loader's `vae`.
//!
//! Takes a diffusers `vae/` folder, or a `.safetensors` file with either the
//! original (ldm) names the VAE files people download use
//! (`encoder.down.0.block.0...`, optionally under `first_stage_model.`;
//! converted as `convert::vae`, diffusers' `convert_ldm_vae_checkpoint`) or
//! diffusers `AutoencoderKL` names. A file carries no config: the
//! architecture comes from the shapes, the rest (32 norm groups, scaling
//! factor 0.18215) from SD's defaults unless `scaling_factor` says otherwise.
use super::component::Component;
use super::loader::{dtype, VAE};
use crate::convert::{self, configs::merge, vae as vae_keys};
use crate::vae::{Vae, VaeConfig};
use crate::weights::Weights;
use diffgraph_sdk::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

/// Loads a VAE folder or file; `reference`: a diffusers `vae/` folder (or
/// its config.json) for what a file's shapes cannot tell (norm groups,
/// scaling factor); `scaling_factor` overrides the config's.
pub fn load_vae(
    path: &Path,
    reference: Option<&Path>,
    scaling_factor: Option<f64>,
    kind: Kind,
    device: Device,
) -> Result<Vae, String> {
    let (config, tensors, source) = if path.is_dir() {
        let config = VaeConfig::from_file(&path.join("config.json"))?;
        let file = path.join("diffusion_pytorch_model.safetensors");
        (
            config,
            Weights::read_safetensors(&file)?,
            file.display().to_string(),
        )
    } else {
        let source = path.display().to_string();
        let reference = match reference {
            Some(r) => Some(read_config(r)?),
            None => None,
        };
        let (config, tensors) = file_config(convert::read_checkpoint(path)?, reference.as_ref())
            .map_err(|e| format!("{source}: {e}"))?;
        (config, tensors, source)
    };
    let mut config = config;
    if let Some(s) = scaling_factor {
        config.scaling_factor = s;
    }
    Vae::from_weights(&config, Weights::new(tensors, kind, device, &source))
}

/// A `vae/` folder's config.json, or the file itself.
fn read_config(r: &Path) -> Result<serde_json::Value, String> {
    let file = if r.is_dir() {
        r.join("config.json")
    } else {
        r.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
}

/// A single VAE file's tensors under diffusers names, and its config.
fn file_config(
    tensors: BTreeMap<String, Tensor>,
    reference: Option<&serde_json::Value>,
) -> Result<(VaeConfig, BTreeMap<String, Tensor>), String> {
    let strip = |k: &str| k.strip_prefix(vae_keys::PREFIX).unwrap_or(k).to_string();
    let tensors: BTreeMap<String, Tensor> =
        tensors.into_iter().map(|(k, t)| (strip(&k), t)).collect();
    let diffusers = tensors
        .keys()
        .any(|k| k.starts_with("encoder.down_blocks."));
    let conversion = if diffusers {
        vae_keys::VaeConversion {
            tensors,
            origin: BTreeMap::new(),
            unrecognised: Vec::new(),
        }
    } else {
        vae_keys::convert(tensors)
    };
    if !conversion.unrecognised.is_empty() {
        return Err(format!(
            "not a VAE: unrecognised keys ({}): {}",
            conversion.unrecognised.len(),
            convert::keys::list(&conversion.unrecognised)
        ));
    }
    let inferred = vae_keys::infer_config(&conversion)?;
    let config = merge(
        "vae",
        vae_keys::defaults(false),
        inferred,
        reference,
        &mut Vec::new(),
    )?;
    Ok((
        VaeConfig::from_json(&config.to_string())?,
        conversion.tensors,
    ))
}

pub struct LoadVAE;

impl Node for LoadVAE {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadVAE", "loaders")
            .description(
                "Loads a VAE on its own (ComfyUI's VAELoader), to replace a checkpoint's: a diffusers vae/ \
                 folder or a .safetensors file with original (encoder.down.N...) or diffusers names; a file's \
                 architecture is read from its shapes. Every missing or unexpected key is listed.",
            )
            .input(InputSpec::string("path").file().doc("a VAE .safetensors file or diffusers vae/ folder"))
            .input(
                InputSpec::string("config")
                    .optional()
                    .doc("files: a diffusers vae/ folder or config.json of the same architecture"),
            )
            .input(InputSpec::string("dtype").default("fp32").choices(&["fp32", "fp16", "bf16"]).doc("compute dtype"))
            .input(
                InputSpec::float("scaling_factor")
                    .optional()
                    .min(1e-6)
                    .doc("overrides the config's (files: SD's 0.18215)"),
            )
            .output(OutputSpec::new("vae", PortType::object(VAE)))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let vae = load_vae(
            Path::new(inputs.str("path")?),
            inputs
                .opt_str("config")?
                .filter(|c| !c.is_empty())
                .map(Path::new),
            inputs.opt_float("scaling_factor")?,
            dtype(inputs.str("dtype")?)?,
            ctx.device(),
        )?;
        Ok(vec![Object::new(VAE, Component::new("VAE", Ok(vae))).into()])
    }
}
