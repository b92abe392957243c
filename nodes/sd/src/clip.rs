//! The CLIP text transformer of SD 1.x (OpenAI CLIP ViT-L/14, `quick_gelu`) and
//! SD 2.x (OpenCLIP ViT-H/14, `gelu`), as transformers' `CLIPTextModel`
//! (models/clip/modeling_clip.py: CLIPTextEmbeddings, CLIPAttention with a
//! causal mask, CLIPMLP, CLIPEncoderLayer, final_layer_norm), by its parameter
//! names. `clip_skip` follows diffusers' `encode_prompt`
//! (pipelines/stable_diffusion/pipeline_stable_diffusion.py): the output of
//! layer `n - clip_skip`, then the final layer norm. No attention mask besides
//! the causal one: the SD pipelines pass none, so pad tokens are attended to.
use crate::layers::{LayerNorm, Linear};
use crate::op_threads;
use crate::weights::Weights;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, TchError, Tensor};

/// The MLP activation (`hidden_act` of the transformers config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// x·sigmoid(1.702·x), OpenAI CLIP (SD 1.x).
    QuickGelu,
    /// Exact (erf) GELU, OpenCLIP (SD 2.x).
    Gelu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Activation, String> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(format!(
                "unsupported CLIP hidden_act {other:?} (expected quick_gelu or gelu)"
            )),
        }
    }

    fn apply(self, x: &Tensor) -> Result<Tensor, TchError> {
        match self {
            Activation::QuickGelu => x.f_mul(&x.f_mul_scalar(1.702)?.f_sigmoid()?),
            Activation::Gelu => x.f_gelu("none"),
        }
    }
}

/// The fields of transformers' `CLIPTextConfig` the model needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_layers: usize,
    pub num_heads: i64,
    pub max_positions: i64,
    pub activation: Activation,
    pub layer_norm_eps: f64,
}

impl ClipConfig {
    /// From a transformers `config.json`, with `CLIPTextConfig`'s defaults for
    /// absent fields.
    pub fn from_json(c: &serde_json::Value) -> Result<ClipConfig, String> {
        let int = |k: &str, d: i64| c[k].as_i64().unwrap_or(d);
        Ok(ClipConfig {
            vocab_size: int("vocab_size", 49408),
            hidden_size: int("hidden_size", 512),
            intermediate_size: int("intermediate_size", 2048),
            num_layers: int("num_hidden_layers", 12) as usize,
            num_heads: int("num_attention_heads", 8),
            max_positions: int("max_position_embeddings", 77),
            activation: Activation::parse(c["hidden_act"].as_str().unwrap_or("quick_gelu"))?,
            layer_norm_eps: c["layer_norm_eps"].as_f64().unwrap_or(1e-5),
        })
    }

    /// From the weights' shapes (single-file checkpoints carry no config). The
    /// head count is not in the shapes: real CLIP text models use 64-wide heads
    /// (768 -> 12, 1024 -> 16, 1280 -> 20); widths not divisible by 64 (the
    /// tiny test models) are taken to use 8-wide heads.
    pub fn infer(w: &Weights, prefix: &str, activation: Activation) -> Result<ClipConfig, String> {
        let shape = |name: &str| {
            w.shape(&format!("{prefix}{name}"))
                .filter(|s| s.len() == 2)
                .ok_or_else(|| format!("{}: no 2-d {prefix}{name}", w.source))
        };
        let tokens = shape("embeddings.token_embedding.weight")?;
        let positions = shape("embeddings.position_embedding.weight")?;
        let fc1 = shape("encoder.layers.0.mlp.fc1.weight")?;
        let layers = format!("{prefix}encoder.layers.");
        let num_layers = w
            .keys()
            .filter_map(|k| {
                k.strip_prefix(&layers)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |m| m + 1);
        let hidden = tokens[1];
        Ok(ClipConfig {
            vocab_size: tokens[0],
            hidden_size: hidden,
            intermediate_size: fc1[0],
            num_layers,
            num_heads: if hidden % 64 == 0 {
                hidden / 64
            } else {
                (hidden / 8).max(1)
            },
            max_positions: positions[0],
            activation,
            layer_norm_eps: 1e-5,
        })
    }
}

/// CLIPAttention: separate q/k/v projections, causal scaled-dot-product attention.
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: i64,
}

impl Attention {
    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let (b, l, d) = x.size3()?;
        let split = |t: Tensor| {
            t.f_view([b, l, self.heads, d / self.heads])?
                .f_transpose(1, 2)
        };
        let (q, k, v) = (
            split(self.q.forward(x))?,
            split(self.k.forward(x))?,
            split(self.v.forward(x))?,
        );
        let scale = ((d / self.heads) as f64).powf(-0.5);
        let o = op_threads::attention(&q, &k, &v, true, Some(scale))?;
        Ok(self
            .out
            .forward(&o.f_transpose(1, 2)?.f_reshape([b, l, d])?))
    }
}

/// CLIPEncoderLayer: pre-norm attention and MLP, each with a residual.
struct Layer {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Layer {
    fn load(w: &mut Weights, p: &str, c: &ClipConfig) -> Layer {
        let (d, m) = (c.hidden_size, c.intermediate_size);
        let lin =
            |w: &mut Weights, name: &str, i, o| Linear::load(w, &format!("{p}{name}"), i, o, true);
        Layer {
            norm1: LayerNorm::load(w, &format!("{p}layer_norm1"), d, c.layer_norm_eps),
            attn: Attention {
                q: lin(w, "self_attn.q_proj", d, d),
                k: lin(w, "self_attn.k_proj", d, d),
                v: lin(w, "self_attn.v_proj", d, d),
                out: lin(w, "self_attn.out_proj", d, d),
                heads: c.num_heads,
            },
            norm2: LayerNorm::load(w, &format!("{p}layer_norm2"), d, c.layer_norm_eps),
            fc1: lin(w, "mlp.fc1", d, m),
            fc2: lin(w, "mlp.fc2", m, d),
            activation: c.activation,
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let x = x.f_add(&self.attn.forward(&self.norm1.forward(x))?)?;
        let h = self.fc2.forward(
            &self
                .activation
                .apply(&self.fc1.forward(&self.norm2.forward(&x)))?,
        );
        x.f_add(&h)
    }
}

/// transformers' CLIPTextModel (without the pooled output, which SD does not use).
pub struct ClipTextModel {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    pub config: ClipConfig,
    /// Every parameter by its name without the load prefix (e.g.
    /// `encoder.layers.0.self_attn.q_proj.weight`), sharing storage with the
    /// layers: what LoRA patches in place ([`crate::lora`]).
    pub params: BTreeMap<String, Tensor>,
}

impl ClipTextModel {
    /// Takes the parameters named `{prefix}embeddings.…`, `{prefix}encoder.layers.N.…`,
    /// `{prefix}final_layer_norm.…` (prefix `text_model.` in the SD repositories,
    /// empty in files saved by transformers >= 5.6). The `position_ids` buffer
    /// some files carry is consumed and ignored.
    pub fn load(w: &mut Weights, prefix: &str, c: &ClipConfig) -> ClipTextModel {
        let (v, d) = (c.vocab_size, c.hidden_size);
        let position_ids = format!("{prefix}embeddings.position_ids");
        if let Some(shape) = w.shape(&position_ids) {
            let _ = w.take(&position_ids, &shape);
        }
        ClipTextModel {
            token_embedding: w.take(
                &format!("{prefix}embeddings.token_embedding.weight"),
                &[v, d],
            ),
            position_embedding: w.take(
                &format!("{prefix}embeddings.position_embedding.weight"),
                &[c.max_positions, d],
            ),
            layers: (0..c.num_layers)
                .map(|i| Layer::load(w, &format!("{prefix}encoder.layers.{i}."), c))
                .collect(),
            final_norm: LayerNorm::load(
                w,
                &format!("{prefix}final_layer_norm"),
                d,
                c.layer_norm_eps,
            ),
            config: c.clone(),
            params: w
                .params()
                .into_iter()
                .filter_map(|(k, t)| Some((k.strip_prefix(prefix)?.to_string(), t)))
                .filter(|(k, _)| !k.ends_with("position_ids"))
                .collect(),
        }
    }

    /// A diffusers `text_encoder/` folder: config.json and model.safetensors
    /// (or model.fp16.safetensors), weights converted to `kind` on `device`.
    pub fn load_folder(dir: &Path, kind: Kind, device: Device) -> Result<ClipTextModel, String> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
        let json =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", config_path.display()))?;
        let config = ClipConfig::from_json(&json)?;
        let file = ["model.safetensors", "model.fp16.safetensors"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .ok_or_else(|| format!("{} has no model.safetensors", dir.display()))?;
        let mut w = Weights::new(
            Weights::read_safetensors(&file)?,
            kind,
            device,
            &file.display().to_string(),
        );
        let prefix = if w.keys().any(|k| k.starts_with("text_model.")) {
            "text_model."
        } else {
            ""
        };
        let model = ClipTextModel::load(&mut w, prefix, &config);
        w.finish()?;
        Ok(model)
    }

    /// The hidden states after the embeddings and the first `layers` layers,
    /// without the final layer norm (transformers' `hidden_states[layers]`).
    /// `ids`: [batch, length] int64, length at most `max_positions`.
    pub fn hidden_state(&self, ids: &Tensor, layers: usize) -> Result<Tensor, TchError> {
        if layers > self.layers.len() {
            return Err(TchError::Shape(format!(
                "the text encoder has {} layers, not {layers}",
                self.layers.len()
            )));
        }
        let length = ids.size2()?.1;
        if length > self.config.max_positions {
            return Err(TchError::Shape(format!(
                "{length} tokens, the text encoder takes at most {}",
                self.config.max_positions
            )));
        }
        self.hidden_state_of_embeddings(&self.token_embeddings(ids)?, layers)
    }

    /// The token embeddings of `ids` [batch, length] (no positions).
    pub fn token_embeddings(&self, ids: &Tensor) -> Result<Tensor, TchError> {
        let ids = ids.f_to_device(self.token_embedding.device())?;
        Tensor::f_embedding(&self.token_embedding, &ids, -1, false, false)
    }

    /// [`ClipTextModel::hidden_state`] from token embeddings [batch,
    /// length, hidden] (textual-inversion vectors in place of some tokens).
    pub fn hidden_state_of_embeddings(
        &self,
        tokens: &Tensor,
        layers: usize,
    ) -> Result<Tensor, TchError> {
        let length = tokens.size3()?.1;
        let mut x = tokens.f_add(&self.position_embedding.f_narrow(0, 0, length)?)?;
        for layer in &self.layers[..layers] {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }

    /// The last layer's output after the final layer norm, from token
    /// embeddings [batch, length, hidden] (what the pooled output is taken from).
    pub fn last_of_embeddings(&self, tokens: &Tensor) -> Result<Tensor, TchError> {
        let h = self.hidden_state_of_embeddings(tokens, self.layers.len())?;
        Ok(self.final_norm.forward(&h))
    }

    /// Where the weights are.
    pub fn device(&self) -> Device {
        self.token_embedding.device()
    }

    /// The layers `clip_skip` leaves (n - clip_skip).
    fn kept_layers(&self, clip_skip: usize) -> Result<usize, TchError> {
        self.layers.len().checked_sub(clip_skip).ok_or_else(|| {
            TchError::Shape(format!(
                "clip_skip {clip_skip} exceeds the text encoder's {} layers",
                self.layers.len()
            ))
        })
    }

    /// The conditioning SD uses: the last layer's output after the final layer
    /// norm, or with `clip_skip` = k the output of layer n - k, then the final
    /// layer norm (diffusers' clip_skip; 0 = no skip).
    pub fn forward(&self, ids: &Tensor, clip_skip: usize) -> Result<Tensor, TchError> {
        let layers = self.kept_layers(clip_skip)?;
        Ok(self.final_norm.forward(&self.hidden_state(ids, layers)?))
    }
    /// The hidden state before the last `skip + 1` layers (transformers'
    /// `hidden_states[-(skip + 2)]`, no final layer norm: SDXL's context) and
    /// the last layer's output after the final layer norm (what the pooled
    /// output is taken from), in one pass.
    pub fn penultimate_and_last(
        &self,
        ids: &Tensor,
        skip: usize,
    ) -> Result<(Tensor, Tensor), TchError> {
        let n = self.layers.len();
        let inner = n.checked_sub(skip + 1).ok_or_else(|| {
            TchError::Shape(format!(
                "clip_skip {skip} leaves none of the text encoder's {n} layers"
            ))
        })?;
        let hidden = self.hidden_state(ids, inner)?;
        let mut x = hidden.shallow_clone();
        for layer in &self.layers[inner..] {
            x = layer.forward(&x)?;
        }
        Ok((hidden, self.final_norm.forward(&x)))
    }
}

/// The text encoder at a `clip_skip`, as the prompt weighting and chunking
/// drive it ([`crate::prompt_weights`]).
pub struct SkipEncoder<'a> {
    pub model: &'a ClipTextModel,
    pub clip_skip: usize,
}

impl crate::prompt_weights::TokenEncoder for SkipEncoder<'_> {
    fn device(&self) -> Device {
        self.model.token_embedding.device()
    }

    fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor, TchError> {
        self.model.token_embeddings(ids)
    }

    fn encode_embeddings(&self, embeddings: &Tensor) -> Result<Tensor, TchError> {
        let layers = self.model.kept_layers(self.clip_skip)?;
        let length = embeddings.size3()?.1;
        if length > self.model.config.max_positions {
            return Err(TchError::Shape(format!(
                "{length} tokens, the text encoder takes at most {}",
                self.model.config.max_positions
            )));
        }
        let h = self.model.hidden_state_of_embeddings(embeddings, layers)?;
        Ok(self.model.final_norm.forward(&h))
    }
}

/// Token id rows (all the same length) as an int64 [rows, length] tensor.
pub fn ids_tensor(rows: &[Vec<i64>], device: Device) -> Result<Tensor, TchError> {
    let length = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != length) {
        return Err(TchError::Shape("token id rows of different lengths".into()));
    }
    let flat: Vec<i64> = rows.concat();
    Tensor::from_slice(&flat)
        .f_view([rows.len() as i64, length as i64])?
        .f_to_device(device)
}
