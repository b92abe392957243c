//! The plugin's node types.
pub mod adm;
pub mod autoencoder;
pub mod component;
pub mod denoise;
pub mod labels;
pub mod ldm;
pub mod loader;
pub mod text;
pub mod torchscript;
