//! Prompt encoding: CLIP tokenizer + text encoder into a conditioning tensor
//! (diffusers' `encode_prompt`; a negative prompt is just another encode).
use super::component::Component;
use super::loader::{Clip, CLIP};
use crate::family::sdxl::text::SdxlText;
use diffgraph_sdk::prelude::*;

pub struct CLIPTextEncode;

impl Node for CLIPTextEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncode", "conditioning")
            .description(
                "Tokenizes (77 tokens, end-of-text kept last) and encodes a prompt: the last hidden state \
                 after the final layer norm, or with clip_skip n the hidden state n layers earlier through \
                 the final layer norm, as diffusers does. SDXL: each encoder's penultimate hidden state \
                 (clip_skip n: n layers earlier) concatenated, pooled from the second. Use it for the \
                 negative prompt too.",
            )
            .input(InputSpec::new("clip", PortType::object(CLIP)))
            .input(InputSpec::string("text").default(""))
            .input(InputSpec::int("clip_skip").default(0).min(0.0))
            .output(OutputSpec::new("conditioning", PortType::Conditioning).doc("[1, 77, hidden], float32"))
            .output(OutputSpec::new("pooled", PortType::Tensor).doc(
                "[1, dim]: the pooled text embedding (SDXL: the second encoder's, projected; UNetStep's `pooled`)",
            ))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        if let Ok(xl) = inputs.object::<Component<SdxlText>>("clip") {
            return encode_sdxl(xl, inputs);
        }
        let clip: &Component<Clip> = inputs.object("clip")?;
        let clip = clip.lock()?;
        let ids = clip.tokenizer.encode_padded(inputs.str("text")?);
        let ids = crate::clip::ids_tensor(&[ids], ctx.device())?;
        let skip = inputs.int("clip_skip")? as usize;
        let hidden = tch::no_grad(|| clip.model.forward(&ids, skip))?;
        let pooled = crate::family::sdxl::text::pooled_sd(&clip.model, &ids, &hidden, skip)?;
        Ok(vec![hidden.to_kind(Kind::Float).into(), pooled.into()])
    }
}

/// SDXL: both encoders' penultimate hidden states concatenated, and the
/// pooled embedding (`family::sdxl::text`).
fn encode_sdxl(xl: &Component<SdxlText>, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
    let text = xl.lock()?;
    let out = text.encode(inputs.str("text")?, inputs.int("clip_skip")? as usize)?;
    Ok(vec![out.context.into(), out.pooled.into()])
}
