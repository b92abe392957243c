//! LDMBert, the text encoder of latent diffusion's text-to-image model
//! (CompVis/ldm-text2im-large-256; diffusers
//! `pipelines/latent_diffusion/pipeline_latent_diffusion.py`,
//! `LDMBertModel`): token + learned position embeddings, pre-norm
//! transformer layers (self-attention without q/k/v biases, GELU MLP), a
//! final layer norm. Its last hidden state is the U-Net's cross-attention
//! context. Parameters by their diffusers names (`model.layers.0.self_attn.q_proj.weight`, ...).
use crate::layers::{LayerNorm, Linear};
use crate::weights::Weights;
use serde::Deserialize;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// torch.nn.LayerNorm's default eps, which LDMBert keeps.
const EPS: f64 = 1e-5;

/// The fields of `bert/config.json` (`LDMBertConfig`) the encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub struct LdmBertConfig {
    pub vocab_size: i64,
    pub max_position_embeddings: i64,
    pub encoder_layers: i64,
    pub encoder_ffn_dim: i64,
    pub encoder_attention_heads: i64,
    pub head_dim: i64,
    pub d_model: i64,
    #[serde(default = "gelu")]
    pub activation_function: String,
}

fn gelu() -> String {
    "gelu".into()
}

struct Layer {
    self_attn_layer_norm: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    final_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct LdmBert {
    pub config: LdmBertConfig,
    embed_tokens: Tensor,
    embed_positions: Tensor,
    layers: Vec<Layer>,
    layer_norm: LayerNorm,
    device: Device,
}

impl LdmBert {
    /// Loads a diffusers `bert/` folder (config.json + model.safetensors);
    /// every missing, unexpected or mis-shaped key listed on failure
    /// (`to_logits`, the unused language-model head, is allowed).
    pub fn from_folder(dir: &Path, kind: Kind, device: Device) -> Result<LdmBert, String> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config: LdmBertConfig =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if config.activation_function != "gelu" {
            return Err(format!(
                "{}: unsupported activation_function {:?} (gelu)",
                path.display(),
                config.activation_function
            ));
        }
        let file = dir.join("model.safetensors");
        let w = Weights::new(
            Weights::read_safetensors(&file)?,
            kind,
            device,
            &file.display().to_string(),
        );
        LdmBert::from_weights(config, w)
    }

    /// Builds the encoder from weights by their diffusers names (a folder's
    /// or a converted CompVis BERTEmbedder's, [`crate::convert::ldm_bert`]);
    /// every missing, unexpected or mis-shaped key listed on failure.
    pub fn from_weights(config: LdmBertConfig, mut w: Weights) -> Result<LdmBert, String> {
        let model = LdmBert::load(config, &mut w);
        let _ = w.take_opt(
            "to_logits.weight",
            &[model.config.vocab_size, model.config.d_model],
        );
        let _ = w.take_opt("to_logits.bias", &[model.config.vocab_size]);
        w.finish()?;
        Ok(model)
    }

    fn load(config: LdmBertConfig, w: &mut Weights) -> LdmBert {
        let (d, inner) = (
            config.d_model,
            config.head_dim * config.encoder_attention_heads,
        );
        let layers = (0..config.encoder_layers)
            .map(|i| {
                let p = |s: &str| format!("model.layers.{i}.{s}");
                Layer {
                    self_attn_layer_norm: LayerNorm::load(w, &p("self_attn_layer_norm"), d, EPS),
                    q_proj: Linear::load(w, &p("self_attn.q_proj"), d, inner, false),
                    k_proj: Linear::load(w, &p("self_attn.k_proj"), d, inner, false),
                    v_proj: Linear::load(w, &p("self_attn.v_proj"), d, inner, false),
                    out_proj: Linear::load(w, &p("self_attn.out_proj"), inner, d, true),
                    final_layer_norm: LayerNorm::load(w, &p("final_layer_norm"), d, EPS),
                    fc1: Linear::load(w, &p("fc1"), d, config.encoder_ffn_dim, true),
                    fc2: Linear::load(w, &p("fc2"), config.encoder_ffn_dim, d, true),
                }
            })
            .collect();
        LdmBert {
            embed_tokens: w.take("model.embed_tokens.weight", &[config.vocab_size, d]),
            embed_positions: w.take(
                "model.embed_positions.weight",
                &[config.max_position_embeddings, d],
            ),
            layer_norm: LayerNorm::load(w, "model.layer_norm", d, EPS),
            layers,
            device: w.device,
            config,
        }
    }

    /// The last hidden state [B, T, d_model] for token ids [B, T].
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor, String> {
        let s = ids.size();
        let c = &self.config;
        if s.len() != 2 || s[1] < 1 || s[1] > c.max_position_embeddings {
            return Err(format!(
                "LDMBert: token ids must be [batch, 1..={}], got {s:?}",
                c.max_position_embeddings
            ));
        }
        let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if lo < 0 || hi >= c.vocab_size {
            return Err(format!(
                "LDMBert: token ids must be in 0..{}, got {lo}..={hi}",
                c.vocab_size
            ));
        }
        let _guard = tch::no_grad_guard();
        let ids = ids.to_device(self.device);
        let (b, t) = (s[0], s[1]);
        let positions = Tensor::arange(t, (Kind::Int64, self.device));
        let mut h = self
            .embed_tokens
            .index_select(0, &ids.reshape([-1]))
            .view([b, t, c.d_model])
            + self
                .embed_positions
                .index_select(0, &positions)
                .unsqueeze(0);
        let (heads, hd) = (c.encoder_attention_heads, c.head_dim);
        let split = |x: Tensor| x.view([b, t, heads, hd]).transpose(1, 2);
        for layer in &self.layers {
            let x = layer.self_attn_layer_norm.forward(&h);
            // LDMBertAttention scales q before the product: q * head_dim^-0.5.
            let q = split(layer.q_proj.forward(&x) * (hd as f64).powf(-0.5));
            let k = split(layer.k_proj.forward(&x));
            let v = split(layer.v_proj.forward(&x));
            let attn = q
                .matmul(&k.transpose(-1, -2))
                .softmax(-1, q.kind())
                .matmul(&v);
            let attn = attn.transpose(1, 2).reshape([b, t, heads * hd]);
            h += layer.out_proj.forward(&attn);
            let x = layer.final_layer_norm.forward(&h);
            h += layer.fc2.forward(&layer.fc1.forward(&x).gelu("none"));
        }
        Ok(self.layer_norm.forward(&h))
    }
}
