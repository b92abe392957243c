//! Prompt encoding: CLIP tokenizer + text encoder into a conditioning tensor.
//! `weighting` comfyui (default): ComfyUI's `(word:1.2)` weights, 77-token
//! chunks for long prompts and `embedding:name` ([`crate::prompt_weights`]);
//! diffusers: diffusers' `encode_prompt` (text taken literally, cut to 77
//! tokens, with a warning when it cuts). A negative prompt is another encode.
use super::component::Component;
use super::loader::{Clip, CLIP};
use crate::clip::SkipEncoder;
use crate::family::sdxl::text::SdxlText;
use crate::prompt_weights;
use diffgraph_sdk::prelude::*;

pub struct CLIPTextEncode;

impl Node for CLIPTextEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncode", "conditioning")
            .description(
                "Encodes a prompt: the last hidden state after the final layer norm, or with clip_skip n the \
                 hidden state n layers earlier through the final layer norm. weighting comfyui: `(word)` = 1.1, \
                 `(word:1.3)`, nested, `\\(` literal, as ComfyUI; a prompt longer than 75 tokens becomes several \
                 77-token chunks, concatenated (never cut); `embedding:name` inserts a textual-inversion \
                 embedding from `embeddings`. weighting diffusers: the text as diffusers' encode_prompt \
                 tokenizes it (cut to 77 tokens, warned). SDXL: each encoder's penultimate hidden state \
                 (clip_skip n: n layers earlier), weighted per encoder, concatenated, pooled from the second's \
                 first chunk (ComfyUI's sdxl_clip; diffusers: encode_prompt). Use it for the negative prompt too.",
            )
            .input(InputSpec::new("clip", PortType::object(CLIP)))
            .input(InputSpec::string("text").default(""))
            .input(InputSpec::int("clip_skip").default(0).min(0.0))
            .input(InputSpec::string("weighting").default("comfyui").choices(&["comfyui", "diffusers"]))
            .input(
                InputSpec::string("embeddings")
                    .optional()
                    .doc("a folder of textual-inversion embeddings (name.safetensors) for `embedding:name`"),
            )
            .output(
                OutputSpec::new("conditioning", PortType::Conditioning)
                    .doc("[1, 77·chunks, hidden], float32"),
            )
            .output(OutputSpec::new("pooled", PortType::Tensor).doc(
                "[1, dim]: the pooled text embedding (SDXL: the second encoder's, projected; UNetStep's `pooled`; \
                 SD 1/2: of the first 77-token chunk, unweighted)",
            ))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        if let Ok(xl) = inputs.object::<Component<SdxlText>>("clip") {
            return encode_sdxl(xl, inputs);
        }
        let clip: &Component<Clip> = inputs.object("clip")?;
        let clip = clip.lock()?;
        let text = inputs.str("text")?;
        let skip = inputs.int("clip_skip")? as usize;
        let model = clip.model.lock()?;
        if inputs.str("weighting")? == "diffusers" {
            let tokens = clip.tokenizer.encode(text).len();
            let room = clip.tokenizer.max_length - 2;
            if tokens > room {
                eprintln!(
                    "warning: CLIPTextEncode (weighting diffusers): the prompt has {tokens} tokens; \
                     diffusers keeps the first {room}"
                );
            }
            let ids = clip.tokenizer.encode_padded(text);
            let ids = crate::clip::ids_tensor(&[ids], ctx.device())?;
            let hidden = tch::no_grad(|| model.model.forward(&ids, skip))?;
            let pooled = crate::family::sdxl::text::pooled_sd(&model.model, &ids, &hidden, skip)?;
            return Ok(vec![hidden.to_kind(Kind::Float).into(), pooled.into()]);
        }
        let folder = inputs.opt_str("embeddings")?.filter(|f| !f.is_empty());
        let width = model.model.config.hidden_size;
        let lookup = |name: &str| crate::embeddings::find(folder, &clip.embeddings, name, width);
        let text = crate::embeddings::rewrite_tokens(text, &clip.embeddings);
        let chunks = prompt_weights::tokenize(&clip.tokenizer, &text, &lookup);
        if !chunks.missing.is_empty() {
            // ComfyUI warns and encodes the rest; so do we, loudly.
            eprintln!(
                "warning: CLIPTextEncode: no embedding {} (looked in {})",
                chunks.missing.join(", "),
                folder.unwrap_or("no folder: set `embeddings`")
            );
        }
        let encoder = SkipEncoder {
            model: &model.model,
            clip_skip: skip,
        };
        let hidden = tch::no_grad(|| prompt_weights::encode(&encoder, &clip.tokenizer, &chunks))?;
        // ComfyUI's pooled output is the first chunk's, without the weights.
        let first = chunks.ids(clip.tokenizer.pad).swap_remove(0);
        let first = crate::clip::ids_tensor(&[first], ctx.device())?;
        let last = tch::no_grad(|| model.model.forward(&first, 0))?;
        let pooled = crate::family::sdxl::text::pooled_sd(&model.model, &first, &last, 0)?;
        Ok(vec![hidden.into(), pooled.into()])
    }
}

/// SDXL: both encoders' penultimate hidden states concatenated, and the
/// pooled embedding (`family::sdxl::text`); weighting comfyui as ComfyUI's
/// `sdxl_clip.py`, diffusers as `encode_prompt`.
fn encode_sdxl(xl: &Component<SdxlText>, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
    let text = xl.lock()?;
    let prompt = inputs.str("text")?;
    let skip = inputs.int("clip_skip")? as usize;
    if inputs.str("weighting")? == "diffusers" {
        let out = text.encode(prompt, skip)?;
        return Ok(vec![out.context.into(), out.pooled.into()]);
    }
    let folder = inputs.opt_str("embeddings")?.filter(|f| !f.is_empty());
    let none = std::collections::BTreeMap::new();
    let lookup = |name: &str, width: i64| crate::embeddings::find(folder, &none, name, width);
    let out = text.encode_weighted(prompt, skip, &lookup)?;
    if !out.missing.is_empty() {
        eprintln!(
            "warning: CLIPTextEncode: no embedding {} (looked in {})",
            out.missing.join(", "),
            folder.unwrap_or("no folder: set `embeddings`")
        );
    }
    Ok(vec![out.context.into(), out.pooled.into()])
}
