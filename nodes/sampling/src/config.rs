//! Reading a sampler's config as diffusers' `SchedulerClass.from_config`
//! does: the keys of `scheduler_config.json` that the class accepts, the
//! class's `__init__` defaults for the rest. The defaults differ between
//! classes (DDIM clips x0 and sets alpha to one; Euler, LMS, Heun and
//! DPM-Solver default to "linspace" spacing; Heun's betas differ), so three
//! layers are merged, highest last: the class defaults (each sampler
//! declares them, `crate::samplers`), the config file ([`ConfigFile`]) or,
//! without one, Stable Diffusion's ([`ConfigFile::stable_diffusion`]), then
//! the node's typed inputs ([`Overrides`]). The file is read as JSON once;
//! the typed inputs override the typed config directly.
use diffgraph_diffusion::{
    BetaSchedule, ConfigName, Error, PredictionType, Result, ScheduleConfig, TimestepSpacing,
};
use serde_json::{Map, Value as Json};

/// Stable Diffusion's scheduler config when no file is given: diffusers'
/// `SCHEDULER_DEFAULT_CONFIG` (`loaders/single_file_utils.py`) plus
/// `clip_sample: false`, which every SD repository's `scheduler_config.json`
/// sets (DDIM's and DDPM's class default would clamp the latents to ±1).
const STABLE_DIFFUSION: &str = r#"{
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
    "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "set_alpha_to_one": false, "skip_prk_steps": true,
    "steps_offset": 1, "timestep_spacing": "leading", "clip_sample": false
}"#;

/// Options diffusers has that are not implemented: only `false` or `null`
/// (unset) is accepted for them, whatever the class.
const UNSUPPORTED: &[&str] = &[
    "thresholding",
    "rescale_betas_zero_snr",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "use_flow_sigmas",
    "sigma_min",
    "sigma_max",
    "lambda_min_clipped",
];

/// A `scheduler_config.json`, with typed getters: `None` when a key is
/// absent or `null`, an error when it has the wrong type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigFile(pub Map<String, Json>);

impl ConfigFile {
    /// Reads a `scheduler_config.json` (a file, or a diffusers model folder
    /// with `scheduler/scheduler_config.json` or `scheduler_config.json`),
    /// or takes the config itself when `path` is a JSON object's text (what
    /// a loader that derives the config, as `LoadLDM` from a CompVis YAML,
    /// hands over).
    pub fn read(path: &str) -> Result<ConfigFile> {
        if path.trim_start().starts_with('{') {
            return ConfigFile::parse(path).map_err(|e| {
                Error::Invalid(format!("the scheduler config given as JSON text: {e}"))
            });
        }
        let p = std::path::Path::new(path);
        let file = if p.is_dir() {
            ["scheduler/scheduler_config.json", "scheduler_config.json"]
                .iter()
                .map(|f| p.join(f))
                .find(|f| f.is_file())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "{path} is a folder without scheduler/scheduler_config.json or scheduler_config.json"
                    ))
                })?
        } else {
            p.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", file.display())))?;
        ConfigFile::parse(&text).map_err(|e| Error::Invalid(format!("{}: {e}", file.display())))
    }

    /// A config from JSON text (Python's non-finite numbers allowed).
    pub fn parse(text: &str) -> Result<ConfigFile> {
        match serde_json::from_str(&nonfinite_to_null(text)) {
            Ok(Json::Object(m)) => Ok(ConfigFile(m)),
            Ok(_) => Err("expected a JSON object".into()),
            Err(e) => Err(e.to_string().into()),
        }
    }

    /// Stable Diffusion's config, used when no file is given.
    pub fn stable_diffusion() -> ConfigFile {
        ConfigFile::parse(STABLE_DIFFUSION).expect("the built-in config is JSON")
    }

    /// The file's `_class_name` (the diffusers scheduler class it was saved from).
    pub fn class_name(&self) -> Option<&str> {
        self.0.get("_class_name").and_then(Json::as_str)
    }

    fn get(&self, key: &str) -> Option<&Json> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn num(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| format!("config `{key}` must be a number, got {v}").into())
            })
            .transpose()
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>> {
        self.get(key)
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| format!("config `{key}` must be an integer, got {v}").into())
            })
            .transpose()
    }

    pub fn flag(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| format!("config `{key}` must be true or false, got {v}").into())
            })
            .transpose()
    }

    pub fn name<T: ConfigName>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(Json::String(s)) => T::parse(key, s).map(Some),
            Some(v) => Err(format!("config `{key}` must be a string, got {v}").into()),
        }
    }

    /// Refuses a string option whose value is not one of `ok` (diffusers
    /// options of which only the default is implemented).
    pub fn expect(&self, key: &str, ok: &[&str]) -> Result<()> {
        match self.get(key) {
            Some(Json::String(s)) if !ok.contains(&s.as_str()) => {
                Err(format!("{key}={s:?} is not supported; supported: {ok:?}").into())
            }
            _ => Ok(()),
        }
    }

    /// Refuses the options of [`UNSUPPORTED`] unless `false` or unset.
    pub fn refuse_unsupported(&self) -> Result<()> {
        for key in UNSUPPORTED {
            if let Some(v) = self.get(key) {
                if *v != Json::Bool(false) {
                    return Err(format!("{key}={v} is not supported").into());
                }
            }
        }
        Ok(())
    }

    fn trained_betas(&self) -> Result<Option<Vec<f64>>> {
        match self.get("trained_betas") {
            None => Ok(None),
            Some(Json::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| "trained_betas must be numbers".into())
                })
                .collect::<Result<Vec<f64>>>()
                .map(Some),
            Some(v) => Err(format!("trained_betas must be a list, got {v}").into()),
        }
    }

    /// The shared keys over a class's `defaults` (every class has them).
    pub fn schedule(&self, defaults: ScheduleConfig) -> Result<ScheduleConfig> {
        let d = defaults;
        Ok(ScheduleConfig {
            num_train_timesteps: self
                .int("num_train_timesteps")?
                .unwrap_or(d.num_train_timesteps),
            beta_start: self.num("beta_start")?.unwrap_or(d.beta_start),
            beta_end: self.num("beta_end")?.unwrap_or(d.beta_end),
            beta_schedule: self.name("beta_schedule")?.unwrap_or(d.beta_schedule),
            trained_betas: self.trained_betas()?.or(d.trained_betas),
            steps_offset: self.int("steps_offset")?.unwrap_or(d.steps_offset),
            timestep_spacing: self.name("timestep_spacing")?.unwrap_or(d.timestep_spacing),
            prediction_type: self.name("prediction_type")?.unwrap_or(d.prediction_type),
        })
    }
}

/// Python's json writes `-Infinity`, `Infinity` and `NaN` (DPM-Solver's
/// `lambda_min_clipped` is `-Infinity` by default), which JSON does not
/// have: they become `null` (unset) outside strings.
fn nonfinite_to_null(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The node's typed config inputs: each replaces the key of the same name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub num_train_timesteps: Option<i64>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<BetaSchedule>,
    pub steps_offset: Option<i64>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub prediction_type: Option<PredictionType>,
    /// Keys only some classes have (see `crate::samplers::Setup::flag`).
    pub use_karras_sigmas: Option<bool>,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    pub use_clipped_model_output: Option<bool>,
}

impl Overrides {
    /// `config` with the shared keys given here replaced.
    pub fn apply(&self, mut config: ScheduleConfig) -> ScheduleConfig {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        set(&mut config.num_train_timesteps, &self.num_train_timesteps);
        set(&mut config.beta_start, &self.beta_start);
        set(&mut config.beta_end, &self.beta_end);
        set(&mut config.beta_schedule, &self.beta_schedule);
        set(&mut config.steps_offset, &self.steps_offset);
        set(&mut config.timestep_spacing, &self.timestep_spacing);
        set(&mut config.prediction_type, &self.prediction_type);
        config
    }

    /// The class-specific flags given here, by config key.
    pub fn class_flags(&self) -> [(&'static str, Option<bool>); 4] {
        [
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("set_alpha_to_one", self.set_alpha_to_one),
            ("clip_sample", self.clip_sample),
            ("use_clipped_model_output", self.use_clipped_model_output),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_are_typed_once_and_python_non_finite_numbers_are_unset() {
        let text = r#"{"lambda_min_clipped": -Infinity, "name": "NaN-Infinity", "beta_end": 0.5}"#;
        let f = ConfigFile::parse(text).unwrap();
        assert_eq!(
            f.0,
            json!({"lambda_min_clipped": null, "name": "NaN-Infinity", "beta_end": 0.5})
                .as_object()
                .unwrap()
                .clone()
        );
        assert_eq!(f.num("beta_end").unwrap(), Some(0.5));
        assert!(f.flag("beta_end").is_err());
        assert!(f.refuse_unsupported().is_ok());
        let bad = ConfigFile::parse(r#"{"thresholding": true}"#).unwrap();
        assert!(bad.refuse_unsupported().is_err());
    }

    #[test]
    fn a_config_can_be_given_as_json_text() {
        let f = ConfigFile::read(r#" {"beta_end": 0.0195, "steps_offset": 1}"#).unwrap();
        assert_eq!(f.num("beta_end").unwrap(), Some(0.0195));
        let e = ConfigFile::read("{not json").unwrap_err().to_string();
        assert!(e.contains("given as JSON text"), "{e}");
    }

    #[test]
    fn overrides_replace_the_shared_keys() {
        let sd = ConfigFile::stable_diffusion()
            .schedule(ScheduleConfig::default())
            .unwrap();
        assert_eq!(sd.beta_schedule, BetaSchedule::ScaledLinear);
        assert_eq!((sd.steps_offset, sd.beta_end), (1, 0.012));
        let o = Overrides {
            prediction_type: Some(PredictionType::VPrediction),
            steps_offset: Some(0),
            ..Overrides::default()
        };
        let c = o.apply(sd);
        assert_eq!(c.prediction_type, PredictionType::VPrediction);
        assert_eq!((c.steps_offset, c.beta_end), (0, 0.012));
    }
}
