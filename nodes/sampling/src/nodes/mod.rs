//! The sampling nodes (category "sampling").
pub mod scheduler;
pub mod step;

pub use scheduler::{DdimScheduler, SchedulerState, SCHEDULER};
pub use step::{ScaleModelInput, SchedulerStep};
