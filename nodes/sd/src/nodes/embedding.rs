//! `LoadTextualInversion`: attaches a textual-inversion embedding to a CLIP
//! handle under a token, diffusers' `load_textual_inversion(path, token=...)`
//! form: the prompt writes the token (`a photo of <cat-toy>`). ComfyUI's
//! `embedding:name` form needs no node (CLIPTextEncode's `embeddings` folder).
use super::component::Component;
use super::loader::{Clip, CLIP};
use crate::embeddings;
use diffgraph_sdk::prelude::*;
use std::path::Path;

pub struct LoadTextualInversion;

impl Node for LoadTextualInversion {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadTextualInversion", "loaders")
            .description(
                "Attaches a textual-inversion embedding (.safetensors: A1111, diffusers learned_embeds, SDXL \
                 clip_l/clip_g) to the text encoder under `token`; prompts encoded with the returned CLIP \
                 (weighting comfyui) put its vectors where the token is written.",
            )
            .input(InputSpec::new("clip", PortType::object(CLIP)))
            .input(InputSpec::string("path").file().doc("a textual-inversion .safetensors file"))
            .input(InputSpec::string("token").doc("the word that stands for it, e.g. <cat-toy>"))
            .output(OutputSpec::new("clip", PortType::object(CLIP)))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let clip = inputs.object::<Component<Clip>>("clip")?.lock()?;
        let token = inputs.str("token")?.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(NodeError::new(format!(
                "input `token`: {token:?} must be one word without spaces"
            )));
        }
        let width = clip.model.lock()?.model.config.hidden_size;
        let embedding = embeddings::read(Path::new(inputs.str("path")?), width)?;
        let mut attached = clip.embeddings.clone();
        attached.insert(token.to_string(), embedding);
        let clip = Clip {
            tokenizer: clip.tokenizer.clone(),
            model: clip.model.clone(),
            embeddings: attached,
        };
        Ok(vec![Object::new(
            CLIP,
            Component::new("text encoder", Ok(clip)),
        )
        .into()])
    }
}
