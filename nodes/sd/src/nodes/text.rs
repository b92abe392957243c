//! Prompt encoding: CLIP tokenizer + text encoder into a conditioning tensor
//! (diffusers' `encode_prompt`; a negative prompt is just another encode).
use super::component::Component;
use super::loader::{Clip, CLIP};
use diffgraph_sdk::prelude::*;

pub struct CLIPTextEncode;

impl Node for CLIPTextEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPTextEncode", "conditioning")
            .description(
                "Tokenizes (77 tokens, end-of-text kept last) and encodes a prompt: the last hidden state \
                 after the final layer norm, or with clip_skip n the hidden state n layers earlier through \
                 the final layer norm, as diffusers does. Use it for the negative prompt too.",
            )
            .input(InputSpec::new("clip", PortType::object(CLIP)))
            .input(InputSpec::string("text").default(""))
            .input(InputSpec::int("clip_skip").default(0).min(0.0))
            .output(OutputSpec::new("conditioning", PortType::Conditioning).doc("[1, 77, hidden], float32"))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let clip: &Component<Clip> = inputs.object("clip")?;
        let clip = clip.lock()?;
        let ids = clip.tokenizer.encode_padded(inputs.str("text")?);
        let ids = crate::clip::ids_tensor(&[ids], ctx.device())?;
        let skip = inputs.int("clip_skip")? as usize;
        let model = clip.model.lock()?;
        let hidden = tch::no_grad(|| model.model.forward(&ids, skip))?;
        Ok(vec![hidden.to_kind(Kind::Float).into()])
    }
}
