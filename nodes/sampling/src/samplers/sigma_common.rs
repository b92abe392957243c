//! What the sigma samplers (Euler, Euler ancestral, LMS, Heun) share,
//! following diffusers `schedulers/scheduling_euler_discrete.py`: the sigma
//! table, `init_noise_sigma`, `scale_model_input`, and `final_sigmas_type`
//! (Euler and DPM-Solver).
use diffgraph_diffusion::sigmas::{self, SigmaTable};
use diffgraph_diffusion::{
    scalar, timesteps, ConfigName, Error, PredictionType, Result, Schedule, ScheduleConfig,
    TimestepSpacing,
};
use diffgraph_sdk::tch::Tensor;
use std::sync::Arc;

/// `final_sigmas_type` of the Euler and DPM-Solver schedulers: the sigma
/// after the last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalSigmas {
    Zero,
    SigmaMin,
}

impl ConfigName for FinalSigmas {
    const ALL: &'static [(&'static str, Self)] = &[
        ("zero", FinalSigmas::Zero),
        ("sigma_min", FinalSigmas::SigmaMin),
    ];
}

/// The schedule and sigma table of a sigma sampler (shared by its clones).
#[derive(Clone)]
pub struct SigmaSchedule {
    pub schedule: Arc<Schedule>,
    pub table: Arc<SigmaTable>,
}

impl SigmaSchedule {
    /// `set_timesteps(steps)`: spaced float32 timesteps, their sigmas
    /// (Karras when `use_karras`), and the last sigma: 0, or
    /// `((1 - a_0) / a_0) ** 0.5` when `sigma_min_last`.
    pub fn new(
        config: ScheduleConfig,
        steps: i64,
        use_karras: bool,
        sigma_min_last: bool,
    ) -> Result<SigmaSchedule> {
        let timesteps = timesteps::sigma_timesteps(&config, steps)?;
        let schedule = Schedule::new(config)?;
        let last = if sigma_min_last {
            sigmas::sigma_min_final(&schedule)?
        } else {
            0.0
        };
        let table = sigmas::euler_table(&schedule, timesteps, use_karras, last)?;
        Ok(SigmaSchedule {
            schedule: Arc::new(schedule),
            table: Arc::new(table),
        })
    }

    /// A schedule with an explicit table (Heun's duplicated one).
    pub fn with_table(&self, table: SigmaTable) -> SigmaSchedule {
        SigmaSchedule {
            schedule: self.schedule.clone(),
            table: Arc::new(table),
        }
    }

    pub fn prediction_type(&self) -> PredictionType {
        self.schedule.config.prediction_type
    }

    /// `sigmas[i]`.
    pub fn sigma(&self, i: usize) -> Result<f32> {
        self.table.sigmas.get(i).copied().ok_or_else(|| {
            Error::Invalid(format!(
                "step {i} is past the end of the schedule ({} sigmas)",
                self.table.sigmas.len()
            ))
        })
    }

    /// `init_noise_sigma`: max sigma for linspace/trailing spacing,
    /// `(max**2 + 1) ** 0.5` for leading.
    pub fn init_noise_sigma(&self) -> Result<f32> {
        let leading = self.schedule.config.timestep_spacing == TimestepSpacing::Leading;
        sigmas::init_noise_sigma(&self.table.sigmas, leading)
    }

    /// The cumulative alpha the model's (scaled) input has at step `i`.
    pub fn alpha_bar(&self, i: usize) -> Result<f64> {
        Ok(sigmas::alpha_bar_at(self.sigma(i)?))
    }
}

/// `scale_model_input`: `sample / ((sigma**2 + 1) ** 0.5)`, float32.
pub fn scale_by_sigma(sample: &Tensor, sigma: f32) -> Result<Tensor> {
    Ok(sample.f_div_scalar(f64::from(scalar::sqrt(sigma * sigma + 1.0)?))?)
}

/// The [`crate::sampler::Sampler`] methods every sigma sampler implements the
/// same way from its `s: SigmaSchedule` field (schedule, timesteps, sigmas,
/// `init_noise_sigma`, `scale_model_input`, sigma-form `add_noise`,
/// `alpha_bar`): expanded inside each sampler's `impl Sampler`, so that the
/// samplers' files hold only what differs (`name`, `step`, `box_clone`, ...).
macro_rules! sigma_sampler_methods {
    () => {
        fn schedule(&self) -> &diffgraph_diffusion::Schedule {
            &self.s.schedule
        }

        fn timesteps(&self) -> &[f32] {
            &self.s.table.timesteps
        }

        fn sigmas(&self) -> &[f32] {
            &self.s.table.sigmas
        }

        fn init_noise_sigma(&self) -> diffgraph_diffusion::Result<f32> {
            self.s.init_noise_sigma()
        }

        fn scale_model_input(
            &self,
            sample: &Tensor,
            index: usize,
        ) -> diffgraph_diffusion::Result<Tensor> {
            $crate::samplers::sigma_common::scale_by_sigma(sample, self.s.sigma(index)?)
        }

        fn add_noise(
            &self,
            original: &Tensor,
            noise: &Tensor,
            index: usize,
            _timestep: f32,
        ) -> diffgraph_diffusion::Result<Tensor> {
            $crate::sampler::add_noise_sigma(original, noise, self.s.sigma(index)?)
        }

        fn alpha_bar(&self, index: usize, _timestep: f32) -> diffgraph_diffusion::Result<f64> {
            self.s.alpha_bar(index)
        }
    };
}
pub(crate) use sigma_sampler_methods;
