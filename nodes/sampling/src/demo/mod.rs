//! Demo nodes (category "demo"): a procedural data set and the exact
//! denoiser for it, so that sampling can be shown and tested without weights.
pub mod denoiser;
pub mod procedural;

pub use denoiser::ExactDenoiser;
pub use procedural::ProceduralImages;
