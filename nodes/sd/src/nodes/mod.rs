//! The plugin's node types.
pub mod adm;
pub mod autoencoder;
pub mod component;
pub mod denoise;
pub mod embedding;
pub mod labels;
pub mod loader;
pub mod lora;
pub mod text;
pub mod torchscript;
pub mod vae_loader;
