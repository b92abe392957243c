//! The plugin's node types.
pub mod denoise;
