//! Which sampler, and its config as diffusers would build it.
//!
//! diffusers builds a scheduler with `SchedulerClass.from_config(config)`:
//! the keys of `scheduler_config.json` that the class accepts, the class's
//! `__init__` defaults for the rest. The defaults differ between classes
//! (DDIM clips x0 and sets alpha to one; Euler, LMS, Heun and DPM-Solver
//! default to "linspace" spacing; Heun's betas differ), so [`resolve`] merges
//! three layers the same way: the class defaults ([`class_defaults`], from the
//! `__init__` signatures of diffusers 0.42), then the config file or, without
//! one, Stable Diffusion's single-file defaults ([`sd_defaults`]), then the
//! node's explicit inputs.
//!
//! One deliberate deviation: PNDM's class default is `skip_prk_steps=False`
//! (Runge-Kutta warm-up), which is not implemented; a config that does not
//! mention it gets `true`, as every Stable Diffusion config has, and a config
//! that asks for `false` is refused.
use crate::schedule::{ConfigName, ScheduleConfig, SolverType, VarianceType};
use diffgraph_sdk::NodeError;
use serde_json::{json, Map, Value as Json};

/// The diffusers scheduler classes implemented here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    Ddim,
    Ddpm,
    Pndm,
    Lms,
    Euler,
    EulerAncestral,
    Heun,
    DpmSolverMultistep,
}

impl ConfigName for SamplerKind {
    /// Our names (ComfyUI's `sampler_name` where ComfyUI has the sampler),
    /// then the diffusers class names as aliases.
    const ALL: &'static [(&'static str, Self)] = &[
        ("ddim", SamplerKind::Ddim),
        ("ddpm", SamplerKind::Ddpm),
        ("pndm", SamplerKind::Pndm),
        ("lms", SamplerKind::Lms),
        ("euler", SamplerKind::Euler),
        ("euler_ancestral", SamplerKind::EulerAncestral),
        ("heun", SamplerKind::Heun),
        ("dpmpp_2m", SamplerKind::DpmSolverMultistep),
        ("DDIMScheduler", SamplerKind::Ddim),
        ("DDPMScheduler", SamplerKind::Ddpm),
        ("PNDMScheduler", SamplerKind::Pndm),
        ("LMSDiscreteScheduler", SamplerKind::Lms),
        ("EulerDiscreteScheduler", SamplerKind::Euler),
        (
            "EulerAncestralDiscreteScheduler",
            SamplerKind::EulerAncestral,
        ),
        ("HeunDiscreteScheduler", SamplerKind::Heun),
        (
            "DPMSolverMultistepScheduler",
            SamplerKind::DpmSolverMultistep,
        ),
    ];
}

impl SamplerKind {
    /// The diffusers class this sampler reproduces.
    pub fn class_name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(n, k)| *k == self && n.ends_with("Scheduler"))
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Whether diffusers offers `use_karras_sigmas` for this class.
    pub fn supports_karras(self) -> bool {
        matches!(
            self,
            SamplerKind::Lms
                | SamplerKind::Euler
                | SamplerKind::Heun
                | SamplerKind::DpmSolverMultistep
        )
    }
}

/// The `__init__` defaults of the diffusers class (the keys handled here).
pub fn class_defaults(kind: SamplerKind) -> Map<String, Json> {
    let mut m = json!({
        "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
        "beta_schedule": "linear", "trained_betas": null, "prediction_type": "epsilon",
        "steps_offset": 0, "timestep_spacing": "linspace",
    });
    let extra = match kind {
        SamplerKind::Ddim => json!({"clip_sample": true, "set_alpha_to_one": true,
            "clip_sample_range": 1.0, "timestep_spacing": "leading"}),
        SamplerKind::Ddpm => json!({"variance_type": "fixed_small", "clip_sample": true,
            "clip_sample_range": 1.0, "timestep_spacing": "leading"}),
        // skip_prk_steps: see the module documentation.
        SamplerKind::Pndm => json!({"skip_prk_steps": true, "set_alpha_to_one": false,
            "timestep_spacing": "leading"}),
        SamplerKind::Lms | SamplerKind::Heun => json!({"use_karras_sigmas": false}),
        SamplerKind::Euler => json!({"use_karras_sigmas": false, "interpolation_type": "linear",
            "timestep_type": "discrete", "final_sigmas_type": "zero", "sigma_min": null,
            "sigma_max": null}),
        SamplerKind::EulerAncestral => json!({}),
        SamplerKind::DpmSolverMultistep => json!({"solver_order": 2,
            "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": true,
            "euler_at_final": false, "use_karras_sigmas": false, "final_sigmas_type": "zero",
            "variance_type": null, "lambda_min_clipped": null}),
    };
    let m = m.as_object_mut().expect("object");
    m.extend(extra.as_object().expect("object").clone());
    if kind == SamplerKind::Heun {
        m.insert("beta_start".into(), json!(0.00085));
        m.insert("beta_end".into(), json!(0.012));
        m.insert("clip_sample".into(), json!(false));
        m.insert("clip_sample_range".into(), json!(1.0));
    }
    m.clone()
}

/// Stable Diffusion's scheduler config when no file is given: diffusers'
/// `SCHEDULER_DEFAULT_CONFIG` (`loaders/single_file_utils.py`) plus
/// `clip_sample: false`, which every SD repository's `scheduler_config.json`
/// sets (DDIM's and DDPM's class default would clamp the latents to ±1).
pub fn sd_defaults() -> Map<String, Json> {
    json!({
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
        "interpolation_type": "linear", "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "set_alpha_to_one": false, "skip_prk_steps": true,
        "steps_offset": 1, "timestep_spacing": "leading", "clip_sample": false,
    })
    .as_object()
    .expect("object")
    .clone()
}

/// Reads a `scheduler_config.json` (a file, or a diffusers model folder with
/// `scheduler/scheduler_config.json` or `scheduler_config.json` in it).
pub fn read_config_file(path: &str) -> Result<Map<String, Json>, NodeError> {
    let p = std::path::Path::new(path);
    let file = if p.is_dir() {
        ["scheduler/scheduler_config.json", "scheduler_config.json"]
            .iter()
            .map(|f| p.join(f))
            .find(|f| f.is_file())
            .ok_or_else(|| {
                NodeError::new(format!(
                    "{path} is a folder without scheduler/scheduler_config.json or scheduler_config.json"
                ))
            })?
    } else {
        p.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| NodeError::new(format!("cannot read {}: {e}", file.display())))?;
    match serde_json::from_str(&nonfinite_to_null(&text)) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(format!("{}: expected a JSON object", file.display()).into()),
        Err(e) => Err(format!("{}: {e}", file.display()).into()),
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

/// The config `kind` gets from `file` (or the SD defaults) with `overrides` on top.
pub fn resolve(
    kind: SamplerKind,
    file: Option<&Map<String, Json>>,
    overrides: &Map<String, Json>,
) -> Result<ScheduleConfig, NodeError> {
    let mut m = class_defaults(kind);
    let base = file.cloned().unwrap_or_else(sd_defaults);
    if kind == SamplerKind::Pndm && base.get("skip_prk_steps") == Some(&json!(false)) {
        return Err(
            "PNDM with skip_prk_steps=false (Runge-Kutta warm-up) is not supported; \
                    Stable Diffusion uses skip_prk_steps=true"
                .into(),
        );
    }
    // Only keys the class accepts (or that we refuse explicitly) are taken.
    for (k, v) in base.into_iter().chain(overrides.clone()) {
        if m.contains_key(&k) || UNSUPPORTED.contains(&k.as_str()) {
            m.insert(k, v);
        }
    }
    refuse_unsupported(&m)?;
    parse(&m)
}

/// Options diffusers has that are not implemented: only `false` or `null`
/// (unset) is accepted for them.
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

fn refuse_unsupported(m: &Map<String, Json>) -> Result<(), NodeError> {
    for key in UNSUPPORTED {
        if let Some(v) = m.get(*key) {
            if !v.is_null() && *v != Json::Bool(false) {
                return Err(format!("{key}={v} is not supported").into());
            }
        }
    }
    let expect = |key: &str, ok: &[&str]| -> Result<(), NodeError> {
        match m.get(key) {
            Some(Json::String(s)) if !ok.contains(&s.as_str()) => {
                Err(format!("{key}={s:?} is not supported; supported: {ok:?}").into())
            }
            _ => Ok(()),
        }
    };
    expect("interpolation_type", &["linear"])?;
    expect("timestep_type", &["discrete"])?;
    expect("algorithm_type", &["dpmsolver++"])?;
    if let Some(v) = m.get("variance_type").filter(|v| !v.is_null()) {
        let s = v.as_str().unwrap_or_default();
        if VarianceType::parse("variance_type", s).is_err() {
            return Err(format!(
                "variance_type {v} is not supported; use one of: {}",
                VarianceType::names().join(", ")
            )
            .into());
        }
    }
    Ok(())
}

fn parse(m: &Map<String, Json>) -> Result<ScheduleConfig, NodeError> {
    let d = ScheduleConfig::default();
    let num = |k: &str, default: f64| -> Result<f64, NodeError> {
        match m.get(k) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| NodeError::new(format!("config `{k}` must be a number, got {v}"))),
        }
    };
    let int = |k: &str, default: i64| -> Result<i64, NodeError> {
        match m.get(k) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| NodeError::new(format!("config `{k}` must be an integer, got {v}"))),
        }
    };
    let flag = |k: &str, default: bool| -> Result<bool, NodeError> {
        match m.get(k) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                NodeError::new(format!("config `{k}` must be true or false, got {v}"))
            }),
        }
    };
    fn name<T: ConfigName + PartialEq>(
        m: &Map<String, Json>,
        k: &str,
        default: T,
    ) -> Result<T, NodeError> {
        match m.get(k) {
            None | Some(Json::Null) => Ok(default),
            Some(Json::String(s)) => T::parse(k, s),
            Some(v) => Err(format!("config `{k}` must be a string, got {v}").into()),
        }
    }
    let trained_betas = match m.get("trained_betas") {
        None | Some(Json::Null) => None,
        Some(Json::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_f64().ok_or("trained_betas must be numbers"))
                .collect::<Result<Vec<f64>, _>>()?,
        ),
        Some(v) => return Err(format!("trained_betas must be a list, got {v}").into()),
    };
    Ok(ScheduleConfig {
        num_train_timesteps: int("num_train_timesteps", d.num_train_timesteps)?,
        beta_start: num("beta_start", d.beta_start)?,
        beta_end: num("beta_end", d.beta_end)?,
        beta_schedule: name(m, "beta_schedule", d.beta_schedule)?,
        trained_betas,
        steps_offset: int("steps_offset", d.steps_offset)?,
        set_alpha_to_one: flag("set_alpha_to_one", d.set_alpha_to_one)?,
        timestep_spacing: name(m, "timestep_spacing", d.timestep_spacing)?,
        prediction_type: name(m, "prediction_type", d.prediction_type)?,
        clip_sample: flag("clip_sample", d.clip_sample)?,
        clip_sample_range: num("clip_sample_range", d.clip_sample_range)?,
        skip_prk_steps: flag("skip_prk_steps", d.skip_prk_steps)?,
        use_karras_sigmas: flag("use_karras_sigmas", d.use_karras_sigmas)?,
        variance_type: name(m, "variance_type", d.variance_type)?,
        final_sigmas_type: name(m, "final_sigmas_type", d.final_sigmas_type)?,
        solver_order: int("solver_order", d.solver_order)?,
        solver_type: name::<SolverType>(m, "solver_type", d.solver_type)?,
        lower_order_final: flag("lower_order_final", d.lower_order_final)?,
        euler_at_final: flag("euler_at_final", d.euler_at_final)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{BetaSchedule, FinalSigmas, PredictionType, TimestepSpacing};

    #[test]
    fn class_defaults_fill_what_the_file_lacks() {
        // SD 1.5's scheduler_config.json (PNDM) has no timestep_spacing: Euler gets linspace.
        let file = json!({"_class_name": "PNDMScheduler", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
            "trained_betas": null, "clip_sample": false});
        let file = file.as_object().unwrap();
        let euler = resolve(SamplerKind::Euler, Some(file), &Map::new()).unwrap();
        assert_eq!(euler.timestep_spacing, TimestepSpacing::Linspace);
        assert_eq!(euler.beta_schedule, BetaSchedule::ScaledLinear);
        let pndm = resolve(SamplerKind::Pndm, Some(file), &Map::new()).unwrap();
        assert_eq!(pndm.timestep_spacing, TimestepSpacing::Leading);
        // Without a file: SD's single-file defaults.
        let ddim = resolve(SamplerKind::Ddim, None, &Map::new()).unwrap();
        assert_eq!(ddim, ScheduleConfig::default());
        let heun = resolve(SamplerKind::Heun, None, &Map::new()).unwrap();
        assert_eq!(heun.timestep_spacing, TimestepSpacing::Leading);
    }

    #[test]
    fn overrides_win_and_unsupported_options_are_refused() {
        let o = json!({"prediction_type": "v_prediction", "use_karras_sigmas": true});
        let c = resolve(
            SamplerKind::DpmSolverMultistep,
            None,
            o.as_object().unwrap(),
        )
        .unwrap();
        assert_eq!(c.prediction_type, PredictionType::VPrediction);
        assert!(c.use_karras_sigmas);
        assert_eq!(c.final_sigmas_type, FinalSigmas::Zero);
        for bad in [
            json!({"thresholding": true}),
            json!({"algorithm_type": "sde-dpmsolver++"}),
            json!({"rescale_betas_zero_snr": true}),
        ] {
            let f = bad.as_object().unwrap();
            assert!(resolve(SamplerKind::DpmSolverMultistep, Some(f), &Map::new()).is_err());
        }
        let text = r#"{"lambda_min_clipped": -Infinity, "name": "NaN-Infinity"}"#;
        let parsed: Json = serde_json::from_str(&nonfinite_to_null(text)).unwrap();
        assert_eq!(
            parsed,
            json!({"lambda_min_clipped": null, "name": "NaN-Infinity"})
        );
        let prk = json!({"skip_prk_steps": false});
        assert!(resolve(
            SamplerKind::Pndm,
            Some(prk.as_object().unwrap()),
            &Map::new()
        )
        .is_err());
        assert_eq!(
            SamplerKind::parse("", "EulerDiscreteScheduler").unwrap(),
            SamplerKind::Euler
        );
        assert_eq!(SamplerKind::Heun.class_name(), "HeunDiscreteScheduler");
    }
}
