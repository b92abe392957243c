//! `LoadTextualInversion`: attaches a textual-inversion embedding to a CLIP
//! handle under a token, diffusers' `load_textual_inversion(path, token=...)`
//! form: the prompt writes the token (`a photo of <cat-toy>`). ComfyUI's
//! `embedding:name` form needs no node (CLIPTextEncode's `embeddings` folder).
use super::component::Component;
use super::loader::{Clip, CLIP};
use crate::embeddings;
use crate::family::sdxl::text::SdxlText;
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
        let token = inputs.str("token")?.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(NodeError::new(format!(
                "input `token`: {token:?} must be one word without spaces"
            )));
        }
        if let Ok(xl) = inputs.object::<Component<SdxlText>>("clip") {
            return attach_sdxl(&*xl.lock()?, Path::new(inputs.str("path")?), token);
        }
        let clip = inputs.object::<Component<Clip>>("clip")?.lock()?;
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

/// SDXL: the file's vectors for each encoder (`clip_l` / `clip_g`, or
/// whatever tensor is as wide as the encoder); an encoder the file has no
/// vectors for leaves the token out of its tokens, as ComfyUI does for a
/// missing embedding.
fn attach_sdxl(text: &SdxlText, path: &Path, token: &str) -> Result<Vec<Value>, NodeError> {
    let mut found = Vec::new();
    let mut why = Vec::new();
    for width in text.widths()? {
        match embeddings::read(path, width) {
            Ok(e) => found.push(e),
            Err(e) => why.push(e),
        }
    }
    if found.is_empty() {
        return Err(NodeError::new(format!("input `path`: {}", why.join("; "))));
    }
    let mut text = text.clone();
    text.embeddings.insert(token.to_string(), found);
    Ok(vec![Object::new(
        CLIP,
        Component::new("text encoder", Ok(text)),
    )
    .into()])
}
