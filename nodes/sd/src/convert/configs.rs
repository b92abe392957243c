//! Assembling each component's config: SD defaults, then a reference
//! config of the same architecture, then what the weights show; and the
//! scheduler config of single-file checkpoints (diffusers
//! `loaders/single_file_utils.py`: `SCHEDULER_DEFAULT_CONFIG`,
//! `_legacy_load_scheduler`'s prediction-type guess).
use super::keys::equivalent;
use diffgraph_diffusion::{ConfigName, PredictionType};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Configs of a model with the same architecture, for the fields the
/// weights cannot tell. `prediction_type` overrides the family's guess.
#[derive(Default, Clone)]
pub struct ReferenceConfigs {
    pub unet: Option<Value>,
    pub vae: Option<Value>,
    pub text_encoder: Option<Value>,
    pub scheduler: Option<Value>,
    pub prediction_type: Option<String>,
}

impl ReferenceConfigs {
    /// Reads `{unet,vae,text_encoder}/config.json` and
    /// `scheduler/scheduler_config.json` of a diffusers folder (each optional).
    pub fn from_diffusers_folder(dir: &Path) -> Result<ReferenceConfigs, String> {
        if !dir.is_dir() {
            return Err(format!("{} is not a folder", dir.display()));
        }
        let read = |rel: &str| -> Result<Option<Value>, String> {
            let path = dir.join(rel);
            if !path.exists() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        Ok(ReferenceConfigs {
            unet: read("unet/config.json")?,
            vae: read("vae/config.json")?,
            text_encoder: read("text_encoder/config.json")?,
            scheduler: read("scheduler/scheduler_config.json")?,
            prediction_type: None,
        })
    }
}

/// defaults < reference < inferred; a reference value contradicting an
/// inferred one is an error. Assumed defaults the reference replaces are
/// dropped from `assumed`.
pub fn merge(
    component: &str,
    (defaults, default_notes): (Map<String, Value>, Vec<String>),
    inferred: Map<String, Value>,
    reference: Option<&Value>,
    assumed: &mut Vec<String>,
) -> Result<Value, String> {
    let mut config = defaults;
    let empty = Map::new();
    let reference = match reference {
        Some(Value::Object(r)) => r,
        Some(_) => {
            return Err(format!(
                "{component}: the reference config is not a JSON object"
            ))
        }
        None => &empty,
    };
    for (k, v) in reference {
        if k == "_class_name" || !k.starts_with('_') && k != "transformers_version" {
            config.insert(k.clone(), v.clone());
        }
    }
    for note in default_notes {
        let field = note.split(" = ").next().unwrap_or_default();
        if !reference.contains_key(field) {
            assumed.push(format!("{component}.{note}"));
        }
    }
    let mut conflicts = Vec::new();
    for (k, v) in inferred {
        if let Some(r) = reference
            .get(&k)
            .filter(|r| !r.is_null() && !equivalent(r, &v))
        {
            conflicts.push(format!("{component}.{k}: reference {r}, checkpoint {v}"));
        }
        config.insert(k, v);
    }
    if conflicts.is_empty() {
        Ok(Value::Object(config))
    } else {
        Err(conflicts.join("; "))
    }
}

/// diffusers' `SCHEDULER_DEFAULT_CONFIG` with the family's prediction type,
/// or the reference scheduler config.
pub fn scheduler(
    sd2: bool,
    reference: &ReferenceConfigs,
    assumed: &mut Vec<String>,
) -> (Value, String) {
    let mut config = match &reference.scheduler {
        Some(Value::Object(r)) => Value::Object(r.clone()),
        _ => {
            let guess = if sd2 {
                PredictionType::VPrediction
            } else {
                PredictionType::Epsilon
            }
            .name();
            assumed.push(format!("scheduler.prediction_type = {guess}"));
            json!({
                "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": guess,
                "sample_max_value": 1.0, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
                "timestep_spacing": "leading", "clip_sample": false
            })
        }
    };
    if let Some(p) = &reference.prediction_type {
        assumed.retain(|a| !a.starts_with("scheduler.prediction_type"));
        config["prediction_type"] = json!(p);
    }
    let prediction = config["prediction_type"]
        .as_str()
        .unwrap_or(PredictionType::Epsilon.name())
        .to_string();
    (config, prediction)
}
