//! The sampling nodes (category "sampling").
pub mod add_noise;
pub mod adm;
pub mod area;
pub mod ksampler;
pub mod scheduler;
pub mod step;

pub use add_noise::{AddNoise, SchedulerAlphaBar};
pub use adm::{ADMSchedule, ADMStep, SplitVariance};
pub use area::{AreaAccumulate, AreaCrop, AreaMean};
pub use ksampler::{
    CFGDenoise, KModelInput, KSamplerStart, KSamplerStep, KSchedule, KSigmas, SplitSigmas,
};
pub use scheduler::Scheduler;
pub use step::{ScaleModelInput, SchedulerStep};
