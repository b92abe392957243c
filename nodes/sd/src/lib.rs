//! Stable Diffusion 1.x / 2.x model nodes: CLIP text encoder, U-Net step and
//! VAE, loaded from diffusers folders or single-file checkpoints, with the
//! numerics of Hugging Face diffusers. Model families (what a MODEL holds)
//! are modules of [`family`], behind its `Denoiser` trait.
#![deny(unsafe_code)]
pub mod clip;
pub mod conv;
pub mod convert;
pub mod cpu_kernels;
pub mod cpu_precision;
pub mod embeddings;
pub mod family;
pub mod layers;
pub mod ldmbert;
pub mod lora;
pub mod nodes;
pub mod op_threads;
pub mod prompt_weights;
pub mod safetensors;
pub mod tokenizer;
pub mod unet;
pub mod unet2d;
pub mod vae;
pub mod weights;
pub mod wordpiece;

diffgraph_sdk::export_plugin!(
    "sd",
    [
        nodes::loader::LoadCheckpoint,
        nodes::text::CLIPTextEncode,
        nodes::sdxl_time_ids::SDXLTimeIds,
        nodes::denoise::UNetStep,
        nodes::denoise::Denoise,
        nodes::autoencoder::VAEDecode,
        nodes::autoencoder::VAEEncode,
        nodes::inpaint::VAEEncodeForInpaint,
        nodes::autoencoder::LatentShape,
        nodes::torchscript::LoadTorchScriptDenoiser,
        nodes::adm::LoadADM,
        nodes::adm::LoadADMClassifier,
        nodes::adm::ADMClassifierGradient,
        nodes::adm::ClassLabels,
        nodes::ldm::LoadLDM,
        nodes::ldm::LDMBertTextEncode,
        nodes::lora::LoadLora,
        nodes::lora::LoadLoraModelOnly,
        nodes::vae_loader::LoadVAE,
        nodes::embedding::LoadTextualInversion,
    ]
);
