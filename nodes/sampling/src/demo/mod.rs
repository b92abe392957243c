//! Demo nodes (category "demo"): a procedural data set and the exact
//! denoiser for it, so that sampling can be shown and tested without
//! weights, and a synthetic model for scheduler parity tests.
pub mod denoiser;
pub mod procedural;
pub mod synthetic;

pub use denoiser::ExactDenoiser;
pub use procedural::ProceduralImages;
pub use synthetic::SyntheticModel;
