//! SDXL's text side: two CLIP text encoders, OpenAI CLIP ViT-L
//! (`text_encoder`, padded with `<|endoftext|>`) and OpenCLIP ViT-bigG
//! (`text_encoder_2`, padded with `!`, with `text_projection`). Following
//! diffusers `pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py`
//! `encode_prompt`: each encoder's penultimate hidden state (no final layer
//! norm; `hidden_states[-(clip_skip + 2)]`), concatenated on the feature
//! axis, and the pooled output of the second: its final-normed last hidden
//! state at the end-of-text token (transformers `CLIPTextTransformer`: the
//! first end-of-text position, which for CLIP's vocabulary is also
//! `argmax(ids)`), through `text_projection` (no bias). The refiner has the
//! second encoder only.
use crate::clip::{ids_tensor, ClipConfig, ClipTextModel};
use crate::layers::Linear;
use crate::tokenizer::ClipTokenizer;
use crate::weights::Weights;
use std::path::Path;
use tch::{Device, Kind, TchError, Tensor};

/// One tokenizer + text encoder (+ projection for the second).
pub struct Encoder {
    pub tokenizer: ClipTokenizer,
    pub model: ClipTextModel,
    pub projection: Option<Linear>,
}

impl Encoder {
    /// The model's parameters from `w` (prefix `text_model.` when the keys
    /// have it), `text_projection.weight` when `projection`; every key must be
    /// used.
    pub fn from_weights(
        tokenizer: ClipTokenizer,
        mut w: Weights,
        config: &ClipConfig,
        projection: bool,
    ) -> Result<Encoder, String> {
        let prefix = if w.keys().any(|k| k.starts_with("text_model.")) {
            "text_model."
        } else {
            ""
        };
        let model = ClipTextModel::load(&mut w, prefix, config);
        let projection = projection.then(|| {
            let d = config.hidden_size;
            let out = w
                .shape("text_projection.weight")
                .and_then(|s| s.first().copied())
                .unwrap_or(d);
            Linear::load(&mut w, "text_projection", d, out, false)
        });
        w.finish()?;
        Ok(Encoder {
            tokenizer,
            model,
            projection,
        })
    }

    /// A diffusers `text_encoder*/` folder and its `tokenizer*/` folder.
    pub fn from_folders(
        encoder: &Path,
        tokenizer: &Path,
        projection: bool,
        kind: Kind,
        device: Device,
    ) -> Result<Encoder, String> {
        let config_path = encoder.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
        let json =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", config_path.display()))?;
        let config = ClipConfig::from_json(&json)?;
        let file = ["model.safetensors", "model.fp16.safetensors"]
            .iter()
            .map(|f| encoder.join(f))
            .find(|p| p.exists())
            .ok_or_else(|| format!("{} has no model.safetensors", encoder.display()))?;
        let w = Weights::new(
            Weights::read_safetensors(&file)?,
            kind,
            device,
            &file.display().to_string(),
        );
        Encoder::from_weights(
            ClipTokenizer::from_folder(tokenizer)?,
            w,
            &config,
            projection,
        )
    }

    /// (context [1, 77, hidden], final-normed last hidden state [1, 77, hidden], ids).
    fn run(&self, text: &str, skip: usize) -> Result<(Tensor, Tensor, Tensor), TchError> {
        // On the CPU: the encoder moves them to its device.
        let ids = ids_tensor(&[self.tokenizer.encode_padded(text)], Device::Cpu)?;
        let (context, last) = self.model.penultimate_and_last(&ids, skip)?;
        Ok((context, last, ids))
    }
}

/// The text encoders of an SDXL base (both) or refiner (the second alone).
pub struct SdxlText {
    pub first: Option<Encoder>,
    pub second: Encoder,
}

/// What encoding a prompt gives: the cross-attention context and the pooled
/// embedding, float32.
pub struct Encoded {
    pub context: Tensor,
    pub pooled: Tensor,
}

impl SdxlText {
    /// Encodes `text` with each encoder's tokenizer and pad rule (77 tokens,
    /// truncated as diffusers does). `clip_skip` as diffusers' SDXL
    /// pipelines: 0 is the penultimate layer, k the layer k before it.
    pub fn encode(&self, text: &str, clip_skip: usize) -> Result<Encoded, TchError> {
        let _guard = tch::no_grad_guard();
        let (second, last, ids) = self.second.run(text, clip_skip)?;
        let context = match &self.first {
            Some(first) => {
                let (c, _, _) = first.run(text, clip_skip)?;
                Tensor::f_cat(
                    &[c.f_to_kind(Kind::Float)?, second.f_to_kind(Kind::Float)?],
                    -1,
                )?
            }
            None => second.f_to_kind(Kind::Float)?,
        };
        let pooled = pool(&last, &ids)?;
        let pooled = match &self.second.projection {
            Some(p) => p.forward(&pooled),
            None => pooled,
        };
        Ok(Encoded {
            context,
            pooled: pooled.f_to_kind(Kind::Float)?,
        })
    }
}

/// transformers' `pooler_output`: the final-normed last hidden state [B, L,
/// D] at the end-of-text position, i.e. the largest id (CLIP's vocabulary
/// ends with <|endoftext|>), first occurrence (`input_ids.argmax(-1)`).
pub fn pool(last: &Tensor, ids: &Tensor) -> Result<Tensor, TchError> {
    let eos = ids.f_argmax(-1, false)?.f_to_device(last.device())?;
    let rows = Tensor::f_arange(ids.size()[0], (Kind::Int64, last.device()))?;
    last.f_index(&[Some(rows), Some(eos)])
}

/// The SD 1.x/2.x text encoder's pooled output (`CLIPTextModel`'s
/// `pooler_output`, from the last layer whatever the clip_skip), float32:
/// `conditioning` is the forward output at `skip`, reused when 0.
pub fn pooled_sd(
    model: &ClipTextModel,
    ids: &Tensor,
    conditioning: &Tensor,
    skip: usize,
) -> Result<Tensor, TchError> {
    let _guard = tch::no_grad_guard();
    let last = if skip == 0 {
        conditioning.shallow_clone()
    } else {
        model.forward(ids, 0)?
    };
    pool(&last, ids)?.f_to_kind(Kind::Float)
}
