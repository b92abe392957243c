//! CompVis' `BERTEmbedder` (`cond_stage_model.*` of the text-to-image
//! `.ckpt`, `ldm/modules/encoders/modules.py`) renamed to diffusers'
//! `LDMBertModel` names, as diffusers' `convert_ldm_bert_checkpoint`
//! (`pipelines/stable_diffusion/convert_from_ckpt.py`) copies the modules.
//!
//! The BERTEmbedder's `transformer` is x-transformers' `TransformerWrapper`
//! (CompVis' copy, `ldm/modules/x_transformer.py`): `token_emb`,
//! `pos_emb.emb` (learned absolute positions), `attn_layers.layers` as
//! alternating pre-norm blocks — `2i` self-attention (`0` LayerNorm, `1`
//! `Attention` with bias-free `to_q/k/v` and `to_out`), `2i+1` feed-forward
//! (`0` LayerNorm, `1.net.0.0` and `1.net.2` the GELU MLP's linears) —
//! then `norm`, and `to_logits` (a language-model head that
//! `return_embeddings=True` never uses; skipped). `Attention` scales the
//! product by dim_head^-0.5 as LDMBert scales q, so the two compute the same.
//!
//! The configuration comes from the YAML's `cond_stage_config.params`
//! (`n_embed`, `n_layer`, `vocab_size`, `max_seq_len`) and x-transformers'
//! defaults that BERTEmbedder never changes: 8 heads of 64
//! (`DEFAULT_DIM_HEAD`), feed-forward width 4 × n_embed, no GLU.
use crate::ldmbert::LdmBertConfig;
use std::collections::BTreeMap;
use tch::Tensor;

/// x-transformers' fixed attention shape under BERTEmbedder.
pub const HEADS: i64 = 8;
pub const HEAD_DIM: i64 = 64;

/// `cond_stage_config.params` of a BERTEmbedder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BertArch {
    pub n_embed: i64,
    pub n_layer: i64,
    pub vocab_size: i64,
    pub max_seq_len: i64,
}

impl BertArch {
    pub fn config(&self) -> LdmBertConfig {
        LdmBertConfig {
            vocab_size: self.vocab_size,
            max_position_embeddings: self.max_seq_len,
            encoder_layers: self.n_layer,
            encoder_ffn_dim: 4 * self.n_embed,
            encoder_attention_heads: HEADS,
            head_dim: HEAD_DIM,
            d_model: self.n_embed,
            activation_function: "gelu".into(),
        }
    }
}

/// The renamed tensors and the keys with no LDMBert name.
pub struct BertConversion {
    pub tensors: BTreeMap<String, Tensor>,
    pub unrecognised: Vec<String>,
}

/// The LDMBert name of one `cond_stage_model.*` key (prefix removed), or
/// None for a key BERTEmbedder does not have.
fn ldm_bert_name(key: &str) -> Option<String> {
    let rest = key.strip_prefix("transformer.")?;
    let fixed = match rest {
        "token_emb.weight" => Some("model.embed_tokens.weight"),
        "pos_emb.emb.weight" => Some("model.embed_positions.weight"),
        "norm.weight" => Some("model.layer_norm.weight"),
        "norm.bias" => Some("model.layer_norm.bias"),
        "to_logits.weight" => Some("to_logits.weight"),
        "to_logits.bias" => Some("to_logits.bias"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.into());
    }
    let (n, part) = super::keys::indexed(rest, "attn_layers.layers.")?;
    let (layer, attention) = (n / 2, n % 2 == 0);
    let renamed = match (attention, part) {
        (true, "0.weight") => "self_attn_layer_norm.weight",
        (true, "0.bias") => "self_attn_layer_norm.bias",
        (true, "1.to_q.weight") => "self_attn.q_proj.weight",
        (true, "1.to_k.weight") => "self_attn.k_proj.weight",
        (true, "1.to_v.weight") => "self_attn.v_proj.weight",
        (true, "1.to_out.weight") => "self_attn.out_proj.weight",
        (true, "1.to_out.bias") => "self_attn.out_proj.bias",
        (false, "0.weight") => "final_layer_norm.weight",
        (false, "0.bias") => "final_layer_norm.bias",
        (false, "1.net.0.0.weight") => "fc1.weight",
        (false, "1.net.0.0.bias") => "fc1.bias",
        (false, "1.net.2.weight") => "fc2.weight",
        (false, "1.net.2.bias") => "fc2.bias",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{renamed}"))
}

/// Renames `cond_stage_model.*` (prefix removed); unknown keys are listed
/// with their full original names.
pub fn convert(tensors: BTreeMap<String, Tensor>) -> BertConversion {
    let mut out = BertConversion {
        tensors: BTreeMap::new(),
        unrecognised: Vec::new(),
    };
    for (key, t) in tensors {
        match ldm_bert_name(&key) {
            Some(name) => {
                out.tensors.insert(name, t);
            }
            None => out.unrecognised.push(format!("cond_stage_model.{key}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ldm_bert_name;

    #[test]
    fn alternating_blocks_map_to_layers() {
        let cases = [
            (
                "transformer.attn_layers.layers.0.1.to_q.weight",
                "model.layers.0.self_attn.q_proj.weight",
            ),
            (
                "transformer.attn_layers.layers.3.0.bias",
                "model.layers.1.final_layer_norm.bias",
            ),
            (
                "transformer.attn_layers.layers.5.1.net.2.weight",
                "model.layers.2.fc2.weight",
            ),
            (
                "transformer.pos_emb.emb.weight",
                "model.embed_positions.weight",
            ),
        ];
        for (from, to) in cases {
            assert_eq!(ldm_bert_name(from).as_deref(), Some(to), "{from}");
        }
        for bad in [
            "transformer.attn_layers.layers.1.1.to_q.weight",
            "transformer.attn_layers.layers.0.1.net.2.weight",
            "embedding.weight",
        ] {
            assert_eq!(ldm_bert_name(bad), None, "{bad}");
        }
    }
}
