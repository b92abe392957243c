//! The sampling nodes (category "sampling").
pub mod add_noise;
pub mod ddim_scheduler;
pub mod scheduler;
pub mod step;

pub use add_noise::{AddNoise, SchedulerAlphaBar};
pub use ddim_scheduler::DdimScheduler;
pub use scheduler::Scheduler;
pub use step::{ScaleModelInput, SchedulerStep};
