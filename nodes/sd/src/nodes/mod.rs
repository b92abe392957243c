//! The plugin's node types.
pub mod adm;
pub mod autoencoder;
pub mod component;
pub mod denoise;
pub mod embedding;
pub mod inpaint;
pub mod labels;
pub mod ldm;
pub mod ldm_ckpt;
pub mod loader;
pub mod lora;
pub mod sdxl_loader;
pub mod sdxl_single_file;
pub mod sdxl_time_ids;
pub mod text;
pub mod torchscript;
pub mod vae_loader;
