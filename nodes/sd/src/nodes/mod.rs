//! The plugin's node types.
pub mod autoencoder;
pub mod denoise;
pub mod loader;
pub mod text;
