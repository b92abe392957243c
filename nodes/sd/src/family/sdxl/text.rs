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
//!
//! [`SdxlText::encode_weighted`] is ComfyUI's SDXL encoding instead
//! (`comfy/sdxl_clip.py` `SDXLClipModel.encode_token_weights`): each
//! encoder tokenizes the prompt with its own pad rule into weighted 77-token
//! chunks with `embedding:name` vectors ([`crate::prompt_weights`]), encodes
//! them to its penultimate hidden states with the weights applied per
//! encoder (`sd1_clip.py` `encode_token_weights`), the two concatenated on
//! the feature axis (cut to the shorter); the pooled output is the second
//! encoder's for its first chunk, unweighted.
//!
//! Each encoder's weights are patchable by LoRA files (`lora_te1_` /
//! `text_encoder.` and `lora_te2_` / `text_encoder_2.`, [`crate::lora`]),
//! the second's `text_projection` included.
use crate::clip::{ids_tensor, ClipConfig, ClipTextModel};
use crate::embeddings::Embedding;
use crate::layers::Linear;
use crate::lora::{keys, Patch, PatchedModel};
use crate::prompt_weights::{self, Chunks, Slot, TokenEncoder};
use crate::tokenizer::ClipTokenizer;
use crate::weights::Weights;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Kind, TchError, Tensor};

/// One text encoder and (the second) its projection.
pub struct TextModel {
    pub clip: ClipTextModel,
    pub projection: Option<Linear>,
}

/// One tokenizer + text encoder (+ projection for the second), shared by
/// the handles LoRA loaders make (each with its own patches).
#[derive(Clone)]
pub struct Encoder {
    pub tokenizer: Arc<ClipTokenizer>,
    pub model: PatchedModel<TextModel>,
}

impl Encoder {
    /// The model's parameters from `w` (prefix `text_model.` when the keys
    /// have it), `text_projection.weight` when `projection` (the second
    /// encoder); every key must be used.
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
        let mut clip = ClipTextModel::load(&mut w, prefix, config);
        let projection = projection.then(|| {
            let d = config.hidden_size;
            let out = w
                .shape("text_projection.weight")
                .and_then(|s| s.first().copied())
                .unwrap_or(d);
            Linear::load(&mut w, "text_projection", d, out, false)
        });
        w.finish()?;
        let mut params = std::mem::take(&mut clip.params);
        let rule = match &projection {
            Some(p) => {
                params.insert("text_projection.weight".into(), p.weight.shallow_clone());
                keys::SDXL_TEXT_G
            }
            None => keys::SDXL_TEXT_L,
        };
        Ok(Encoder {
            tokenizer: Arc::new(tokenizer),
            model: PatchedModel::new(TextModel { clip, projection }, params, rule),
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

    /// This handle with `patch` added (or as it is).
    fn with(&self, patch: Option<Patch>) -> Encoder {
        Encoder {
            tokenizer: self.tokenizer.clone(),
            model: match patch {
                Some(p) => self.model.with(p),
                None => self.model.clone(),
            },
        }
    }

    /// diffusers: (context [1, 77, hidden], final-normed last hidden state
    /// [1, 77, hidden], ids), the text cut to 77 tokens.
    fn run(
        &self,
        m: &TextModel,
        text: &str,
        skip: usize,
    ) -> Result<(Tensor, Tensor, Tensor), TchError> {
        // On the CPU: the encoder moves them to its device.
        let ids = ids_tensor(&[self.tokenizer.encode_padded(text)], Device::Cpu)?;
        let (context, last) = m.clip.penultimate_and_last(&ids, skip)?;
        Ok((context, last, ids))
    }

    /// ComfyUI: the weighted penultimate hidden states of `chunks` [1, 77 ·
    /// chunks, hidden] and, when `pooled`, the projected pooled output of
    /// the first chunk (embedding vectors in place, weights not applied) at
    /// its first end token (ComfyUI's `clip_model.py`: the first position
    /// whose token is the end token; embedding slots are not). The first
    /// chunk runs once more for it (ComfyUI takes it from the same batch;
    /// rows are independent).
    fn run_weighted(
        &self,
        m: &TextModel,
        chunks: &Chunks,
        skip: usize,
        pooled: bool,
    ) -> Result<(Tensor, Option<Tensor>), TchError> {
        let encoder = Penultimate {
            model: &m.clip,
            skip,
        };
        let context = prompt_weights::encode(&encoder, &self.tokenizer, chunks)?;
        if !pooled {
            return Ok((context, None));
        }
        let first = vec![chunks.ids(self.tokenizer.pad).swap_remove(0)];
        let eos = self.tokenizer.eos;
        let end = chunks.slots[0]
            .iter()
            .position(|(s, _)| matches!(s, Slot::Token(t) if *t == eos))
            .unwrap_or(0) as i64;
        let embeds = prompt_weights::embed(&encoder, chunks, &first)?;
        let last = m.clip.last_of_embeddings(&embeds)?;
        let pooled = last.f_narrow(1, end, 1)?.f_squeeze_dim(1)?;
        Ok((context, Some(project(m, pooled))))
    }
}

fn project(m: &TextModel, pooled: Tensor) -> Tensor {
    match &m.projection {
        Some(p) => p.forward(&pooled),
        None => pooled,
    }
}

/// A CLIP text encoder's penultimate hidden state (`clip_skip` k: k layers
/// earlier), no final layer norm: SDXL's context, as ComfyUI's
/// `SDClipModel(layer="hidden", layer_idx=-2, layer_norm_hidden_state=False)`.
struct Penultimate<'a> {
    model: &'a ClipTextModel,
    skip: usize,
}

impl TokenEncoder for Penultimate<'_> {
    fn device(&self) -> Device {
        self.model.device()
    }

    fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor, TchError> {
        self.model.token_embeddings(ids)
    }

    fn encode_embeddings(&self, embeddings: &Tensor) -> Result<Tensor, TchError> {
        let n = self.model.config.num_layers;
        let layers = n.checked_sub(self.skip + 1).ok_or_else(|| {
            TchError::Shape(format!(
                "clip_skip {} leaves none of the text encoder's {n} layers",
                self.skip
            ))
        })?;
        self.model.hidden_state_of_embeddings(embeddings, layers)
    }
}

/// The text encoders of an SDXL base (both) or refiner (the second alone).
#[derive(Clone)]
pub struct SdxlText {
    pub first: Option<Encoder>,
    pub second: Encoder,
    /// Textual-inversion embeddings attached by token
    /// (`LoadTextualInversion`): the file's vectors for each encoder width
    /// it has.
    pub embeddings: BTreeMap<String, Vec<Embedding>>,
}

/// What encoding a prompt gives: the cross-attention context and the pooled
/// embedding, float32.
pub struct Encoded {
    pub context: Tensor,
    pub pooled: Tensor,
    /// `embedding:` names an encoder did not find (ComfyUI warns and goes on).
    pub missing: Vec<String>,
}

impl SdxlText {
    /// A base (both encoders) or a refiner (`first` None: its encoder is
    /// named as SD's one text encoder by LoRA files, `keys::SDXL_REFINER_TEXT`).
    pub fn new(first: Option<Encoder>, mut second: Encoder) -> SdxlText {
        if first.is_none() {
            second.model = second.model.with_rule(keys::SDXL_REFINER_TEXT);
        }
        SdxlText {
            first,
            second,
            embeddings: BTreeMap::new(),
        }
    }

    /// The text encoders' widths (first, second).
    pub fn widths(&self) -> Result<Vec<i64>, String> {
        let mut widths = Vec::new();
        if let Some(first) = &self.first {
            widths.push(first.model.lock()?.model.clip.config.hidden_size);
        }
        widths.push(self.second.model.lock()?.model.clip.config.hidden_size);
        Ok(widths)
    }

    /// Encodes `text` with each encoder's tokenizer and pad rule (77 tokens,
    /// truncated as diffusers does). `clip_skip` as diffusers' SDXL
    /// pipelines: 0 is the penultimate layer, k the layer k before it.
    pub fn encode(&self, text: &str, clip_skip: usize) -> Result<Encoded, String> {
        let m2 = self.second.model.lock()?;
        let m1 = match &self.first {
            Some(f) => Some(f.model.lock()?),
            None => None,
        };
        let m1 = m1.as_ref().map(|g| &g.model);
        self.encode_locked(&m2.model, m1, text, clip_skip)
            .map_err(|e| e.to_string())
    }

    fn encode_locked(
        &self,
        m2: &TextModel,
        m1: Option<&TextModel>,
        text: &str,
        clip_skip: usize,
    ) -> Result<Encoded, TchError> {
        let _guard = tch::no_grad_guard();
        let (second, last, ids) = self.second.run(m2, text, clip_skip)?;
        let context = match (&self.first, m1) {
            (Some(first), Some(m1)) => {
                let (c, _, _) = first.run(m1, text, clip_skip)?;
                Tensor::f_cat(
                    &[c.f_to_kind(Kind::Float)?, second.f_to_kind(Kind::Float)?],
                    -1,
                )?
            }
            _ => second.f_to_kind(Kind::Float)?,
        };
        let pooled = project(m2, pool(&last, &ids)?);
        Ok(Encoded {
            context,
            pooled: pooled.f_to_kind(Kind::Float)?,
            missing: Vec::new(),
        })
    }

    /// ComfyUI's weighted, chunked encoding with `embedding:name` (see the
    /// module doc); `embedding(name, width)` finds an embedding for an
    /// encoder `width` wide (SDXL files: the `clip_l` / `clip_g` tensor)
    /// when no attached token has that name.
    pub fn encode_weighted(
        &self,
        text: &str,
        clip_skip: usize,
        embedding: &dyn Fn(&str, i64) -> Option<Tensor>,
    ) -> Result<Encoded, String> {
        let m2 = self.second.model.lock()?;
        let m1 = match &self.first {
            Some(f) => Some(f.model.lock()?),
            None => None,
        };
        let m1 = m1.as_ref().map(|g| &g.model);
        // Attached tokens first (diffusers' form, written as `embedding:token`).
        let text = crate::embeddings::rewrite_tokens(text, &self.embeddings);
        let lookup = |name: &str, width: i64| {
            self.embeddings
                .get(name)
                .and_then(|v| v.iter().find(|e| e.width == width))
                .map(Embedding::tensor)
                .or_else(|| embedding(name, width))
        };
        self.encode_weighted_locked(&m2.model, m1, &text, clip_skip, &lookup)
            .map_err(|e| e.to_string())
    }

    fn encode_weighted_locked(
        &self,
        m2: &TextModel,
        m1: Option<&TextModel>,
        text: &str,
        clip_skip: usize,
        embedding: &dyn Fn(&str, i64) -> Option<Tensor>,
    ) -> Result<Encoded, TchError> {
        let _guard = tch::no_grad_guard();
        let mut missing = Vec::new();
        let mut chunks_of = |e: &Encoder, m: &TextModel| {
            let width = m.clip.config.hidden_size;
            let lookup = |name: &str| embedding(name, width);
            let chunks = prompt_weights::tokenize(&e.tokenizer, text, &lookup);
            missing.extend(chunks.missing.iter().cloned());
            chunks
        };
        let chunks = chunks_of(&self.second, m2);
        let (g, pooled) = self.second.run_weighted(m2, &chunks, clip_skip, true)?;
        let context = match (&self.first, m1) {
            (Some(first), Some(m1)) => {
                let chunks = chunks_of(first, m1);
                let (l, _) = first.run_weighted(m1, &chunks, clip_skip, false)?;
                let cut = l.size()[1].min(g.size()[1]);
                Tensor::f_cat(&[l.f_narrow(1, 0, cut)?, g.f_narrow(1, 0, cut)?], -1)?
            }
            _ => g,
        };
        missing.sort();
        missing.dedup();
        let pooled = pooled.ok_or_else(|| TchError::Shape("no pooled output".into()))?;
        Ok(Encoded {
            context,
            pooled: pooled.f_to_kind(Kind::Float)?,
            missing,
        })
    }

    /// New handles on the same encoders with one more patch each (`None`:
    /// that encoder as it is).
    pub fn with_lora(&self, first: Option<Patch>, second: Option<Patch>) -> SdxlText {
        SdxlText {
            first: self.first.as_ref().map(|e| e.with(first)),
            second: self.second.with(second),
            embeddings: self.embeddings.clone(),
        }
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
