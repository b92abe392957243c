//! The samplers, one file each. Every file declares its sampler with a
//! [`SamplerInfo`] (`INFO`): its names, the diffusers class defaults of the
//! shared config keys, what it supports, and its constructor, which reads
//! the class's own config keys. [`SAMPLERS`] registers them; [`build`] makes
//! one from a config file and the node's typed inputs.
//!
//! | name | diffusers class | file |
//! |---|---|---|
//! | ddim | DDIMScheduler | [`ddim`] |
//! | ddpm | DDPMScheduler | [`ddpm`] |
//! | pndm | PNDMScheduler (PLMS) | [`pndm`] |
//! | lms | LMSDiscreteScheduler | [`lms`] |
//! | euler | EulerDiscreteScheduler | [`euler`] |
//! | euler_ancestral | EulerAncestralDiscreteScheduler | [`euler_ancestral`] |
//! | heun | HeunDiscreteScheduler | [`heun`] |
//! | dpmpp_2m | DPMSolverMultistepScheduler | [`dpmpp_2m`] |
//!
//! Adding a sampler touches one new file and one line of [`SAMPLERS`]:
//!
//! ```ignore
//! // samplers/my_sampler.rs
//! pub const INFO: SamplerInfo = SamplerInfo {
//!     name: "my_sampler",                // ComfyUI's sampler_name
//!     class_name: "MySamplerScheduler", // the diffusers class, an alias
//!     karras: true,                      // what differs from COMMON
//!     build: |s| {
//!         // The class's own keys: node input, else config file, else class default.
//!         let karras = s.flag("use_karras_sigmas", false)?;
//!         Ok(Box::new(MySampler::new(s.schedule.clone(), karras, s.steps)?))
//!     },
//!     ..COMMON
//! };
//! pub struct MySampler { /* ... */ }
//! impl Sampler for MySampler { /* name, schedule, timesteps, step, ... */ }
//!
//! // samplers/mod.rs
//! pub mod my_sampler;
//! pub const SAMPLERS: &[&SamplerInfo] = &[/* ... */, &my_sampler::INFO];
//! ```
pub mod ddim;
pub mod ddpm;
pub mod dpmpp_2m;
pub mod euler;
pub mod euler_ancestral;
pub mod heun;
pub mod lms;
pub mod pndm;
pub mod sigma_common;

use crate::config::{ConfigFile, Overrides};
use crate::sampler::Sampler;
use diffgraph_diffusion::{
    ConfigName, Error, PredictionType, Result, ScheduleConfig, VarianceType,
};
use std::cell::RefCell;

/// Every sampler, in the order the node lists them.
pub const SAMPLERS: &[&SamplerInfo] = &[
    &ddim::INFO,
    &ddpm::INFO,
    &pndm::INFO,
    &lms::INFO,
    &euler::INFO,
    &euler_ancestral::INFO,
    &heun::INFO,
    &dpmpp_2m::INFO,
];

/// Every prediction type, for samplers that take them all.
pub const ALL_PREDICTION_TYPES: [PredictionType; 3] = [
    PredictionType::Epsilon,
    PredictionType::VPrediction,
    PredictionType::Sample,
];

/// The usual declaration, for `..COMMON` in a sampler's `INFO`: diffusers'
/// shared class defaults, every prediction type, no Karras, eta or
/// variance_type. `name`, `class_name` and `build` are always given.
pub const COMMON: SamplerInfo = SamplerInfo {
    name: "",
    class_name: "",
    defaults: ScheduleConfig::default,
    karras: false,
    eta: false,
    prediction_types: &ALL_PREDICTION_TYPES,
    variance_types: &[],
    build: |_| Err("a sampler's INFO must give its constructor".into()),
};

/// What a sampler declares about itself.
pub struct SamplerInfo {
    /// Our name: ComfyUI's `sampler_name` where ComfyUI has the sampler.
    pub name: &'static str,
    /// The diffusers class it reproduces: an alias, and a config file's `_class_name`.
    pub class_name: &'static str,
    /// The class's `__init__` defaults of the shared keys.
    pub defaults: fn() -> ScheduleConfig,
    /// Whether the class has `use_karras_sigmas`.
    pub karras: bool,
    /// Whether it takes DDIM's `eta`.
    pub eta: bool,
    pub prediction_types: &'static [PredictionType],
    /// The `variance_type` values it accepts; empty: the class has no such key.
    pub variance_types: &'static [VarianceType],
    /// The constructor; reads the class's own keys through the [`Setup`].
    pub build: fn(&Setup) -> Result<Box<dyn Sampler>>,
}

/// The sampler called `name` (our name or the diffusers class name).
pub fn find(what: &str, name: &str) -> Result<&'static SamplerInfo> {
    SAMPLERS
        .iter()
        .copied()
        .find(|i| i.name == name || i.class_name == name)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{what} `{name}` is not supported; use one of: {}",
                names().join(", ")
            ))
        })
}

/// Every accepted sampler name: ours, then the diffusers class names.
pub fn names() -> Vec<&'static str> {
    let ours = SAMPLERS.iter().map(|i| i.name);
    ours.chain(SAMPLERS.iter().map(|i| i.class_name)).collect()
}

/// The class names of the samplers for which `has` holds, for messages.
fn classes_with(has: impl Fn(&SamplerInfo) -> bool) -> String {
    let v: Vec<&str> = SAMPLERS
        .iter()
        .filter(|i| has(i))
        .map(|i| i.class_name)
        .collect();
    v.join(", ")
}

/// What a sampler's constructor reads: the resolved shared config, the step
/// count and eta, and its own keys through [`Setup::flag`] and friends.
pub struct Setup<'a> {
    pub schedule: ScheduleConfig,
    pub steps: i64,
    pub eta: f64,
    pub file: &'a ConfigFile,
    overrides: &'a Overrides,
    /// The class keys the constructor read, to refuse inputs it has no use for.
    read: RefCell<Vec<&'static str>>,
}

impl Setup<'_> {
    /// A class flag: the node's input, else the file's value, else `default`.
    pub fn flag(&self, key: &'static str, default: bool) -> Result<bool> {
        self.read.borrow_mut().push(key);
        let given = self.overrides.class_flags().into_iter();
        match given.filter(|(k, _)| *k == key).find_map(|(_, v)| v) {
            Some(v) => Ok(v),
            None => Ok(self.file.flag(key)?.unwrap_or(default)),
        }
    }

    pub fn num(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.file.num(key)?.unwrap_or(default))
    }

    pub fn int(&self, key: &str, default: i64) -> Result<i64> {
        Ok(self.file.int(key)?.unwrap_or(default))
    }

    pub fn name<T: ConfigName>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.file.name(key)?.unwrap_or(default))
    }
}

impl SamplerInfo {
    /// Refuses what this sampler cannot do, before it is built.
    fn check(
        &self,
        schedule: &ScheduleConfig,
        file: &ConfigFile,
        o: &Overrides,
        eta: f64,
    ) -> Result<()> {
        let class = self.class_name;
        if o.use_karras_sigmas == Some(true) && !self.karras {
            return Err(format!(
                "the karras schedule is not available for {class} (diffusers offers it for {})",
                classes_with(|i| i.karras)
            )
            .into());
        }
        if eta != 0.0 && !self.eta {
            return Err(format!("eta is a DDIM option; {class} has none").into());
        }
        if !self.prediction_types.contains(&schedule.prediction_type) {
            let names: Vec<&str> = self.prediction_types.iter().map(|p| p.name()).collect();
            return Err(format!(
                "{class} supports the prediction types {}",
                names.join(" and ")
            )
            .into());
        }
        if !self.variance_types.is_empty() {
            if let Some(v) = file.name::<VarianceType>("variance_type")? {
                if !self.variance_types.contains(&v) {
                    let names: Vec<&str> = self.variance_types.iter().map(|v| v.name()).collect();
                    return Err(format!(
                        "variance_type {} is not supported by {class}; use one of: {}",
                        v.name(),
                        names.join(", ")
                    )
                    .into());
                }
            }
        }
        file.refuse_unsupported()
    }
}

/// The sampler `info` with `steps` inference steps (`set_timesteps(steps)`):
/// its class defaults, then `file` (a `scheduler_config.json`), then the
/// node's `overrides`; `eta` is DDIM's (0 elsewhere).
pub fn build(
    info: &SamplerInfo,
    file: &ConfigFile,
    overrides: &Overrides,
    steps: i64,
    eta: f64,
) -> Result<Box<dyn Sampler>> {
    // `schedule: normal` asks nothing of a sampler without Karras sigmas.
    let mut overrides = overrides.clone();
    if !info.karras && overrides.use_karras_sigmas == Some(false) {
        overrides.use_karras_sigmas = None;
    }
    let schedule = overrides.apply(file.schedule((info.defaults)())?);
    info.check(&schedule, file, &overrides, eta)?;
    let setup = Setup {
        schedule,
        steps,
        eta,
        file,
        overrides: &overrides,
        read: RefCell::new(Vec::new()),
    };
    let sampler = (info.build)(&setup)?;
    let read = setup.read.into_inner();
    for (key, given) in overrides.class_flags() {
        if given.is_some() && !read.contains(&key) {
            return Err(format!("{key} is not an option of {}", info.class_name).into());
        }
    }
    Ok(sampler)
}

#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::sampler::{StepInput, StepOutput};
    use diffgraph_sdk::tch::Tensor;

    /// `info` with Stable Diffusion's config and `overrides`.
    pub fn sd(info: &SamplerInfo, overrides: &Overrides, steps: i64) -> Box<dyn Sampler> {
        build(info, &ConfigFile::stable_diffusion(), overrides, steps, 0.0).unwrap()
    }

    /// The shared config `info` gets from Stable Diffusion's.
    pub fn sd_schedule(info: &SamplerInfo) -> ScheduleConfig {
        ConfigFile::stable_diffusion()
            .schedule((info.defaults)())
            .unwrap()
    }

    /// One deterministic step at `index` (noise requests fail).
    pub fn step_once(
        sampler: &mut dyn Sampler,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
    ) -> Result<StepOutput> {
        let timestep = *sampler.timesteps().get(index).ok_or("index past the end")?;
        let no_noise = |_: &Tensor| -> Result<Tensor> { Err("no noise in this test".into()) };
        sampler.step(StepInput {
            index,
            timestep,
            model_output,
            sample,
            noise: &no_noise,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffgraph_diffusion::{BetaSchedule, TimestepSpacing};
    use serde_json::json;

    fn file(v: serde_json::Value) -> ConfigFile {
        ConfigFile(v.as_object().unwrap().clone())
    }

    #[test]
    fn class_defaults_fill_what_the_file_lacks() {
        // SD 1.5's scheduler_config.json (PNDM) has no timestep_spacing: Euler gets linspace.
        let f = file(json!({"_class_name": "PNDMScheduler", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
            "trained_betas": null, "clip_sample": false}));
        let euler = f.schedule((euler::INFO.defaults)()).unwrap();
        assert_eq!(euler.timestep_spacing, TimestepSpacing::Linspace);
        assert_eq!(euler.beta_schedule, BetaSchedule::ScaledLinear);
        let pndm = f.schedule((pndm::INFO.defaults)()).unwrap();
        assert_eq!(pndm.timestep_spacing, TimestepSpacing::Leading);
        // Without a file: SD's single-file defaults.
        let ddim = testing::sd_schedule(&ddim::INFO);
        assert_eq!((ddim.beta_start, ddim.beta_end), (0.00085, 0.012));
        assert_eq!(
            (ddim.steps_offset, ddim.timestep_spacing),
            (1, TimestepSpacing::Leading)
        );
        let heun = testing::sd_schedule(&heun::INFO);
        assert_eq!(heun.timestep_spacing, TimestepSpacing::Leading);
    }

    #[test]
    fn overrides_win_and_unsupported_options_are_refused() {
        let o = Overrides {
            prediction_type: Some(PredictionType::VPrediction),
            use_karras_sigmas: Some(true),
            ..Overrides::default()
        };
        let dpm = testing::sd(&dpmpp_2m::INFO, &o, 10);
        assert_eq!(
            dpm.schedule().config.prediction_type,
            PredictionType::VPrediction
        );
        let none = Overrides::default();
        for bad in [
            json!({"thresholding": true}),
            json!({"algorithm_type": "sde-dpmsolver++"}),
            json!({"rescale_betas_zero_snr": true}),
        ] {
            assert!(build(&dpmpp_2m::INFO, &file(bad), &none, 10, 0.0).is_err());
        }
        let prk = file(json!({"skip_prk_steps": false}));
        assert!(build(&pndm::INFO, &prk, &none, 10, 0.0).is_err());
        let alpha_one = Overrides {
            set_alpha_to_one: Some(true),
            ..Overrides::default()
        };
        let sd = ConfigFile::stable_diffusion();
        let e = build(&euler::INFO, &sd, &alpha_one, 10, 0.0).err().unwrap();
        assert!(e.to_string().contains("set_alpha_to_one"), "{e}");
        assert!(build(&ddim::INFO, &sd, &alpha_one, 10, 0.0).is_ok());
        let e = build(&euler_ancestral::INFO, &sd, &o, 10, 0.0)
            .err()
            .unwrap();
        assert!(e.to_string().contains("karras"), "{e}");
        assert_eq!(find("", "EulerDiscreteScheduler").unwrap().name, "euler");
        assert_eq!(
            find("", "heun").unwrap().class_name,
            "HeunDiscreteScheduler"
        );
        let learned = file(json!({"variance_type": "learned_range"}));
        assert!(build(&ddpm::INFO, &learned, &none, 10, 0.0).is_err());
    }
}
