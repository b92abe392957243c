//! Text encoders: SD 1.x `cond_stage_model.transformer.*` (a Hugging Face
//! `CLIPTextModel` already, `convert_ldm_clip_checkpoint`) and SD 2.x
//! `cond_stage_model.model.*` (OpenCLIP, `convert_open_clip_checkpoint`), to
//! transformers' `CLIPTextModel` names (`text_model.*`), both in diffusers
//! `loaders/single_file_utils.py`; plus the `CLIPTextConfig` read back from
//! the shapes.
//!
//! SD 2.x conditions on the **penultimate** OpenCLIP layer
//! (`FrozenOpenCLIPEmbedder(layer="penultimate")`: every resblock but the
//! last, then `ln_final`). diffusers expresses this as a text encoder with one
//! layer fewer: `SD_2_TEXT_ENCODER_KEYS_TO_IGNORE` drops `resblocks.23.*` and
//! `text_projection`, and the SD 2 `text_encoder/config.json` has
//! `num_hidden_layers: 23`. We drop the **last** resblock, whatever its index:
//! the same as diffusers for every real SD 2 checkpoint (24 resblocks), and
//! still the penultimate-layer model for other depths (diffusers' literal list
//! would drop nothing there and silently change the model).
use super::keys::{indexed, indices, Shapes};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use tch::Tensor;

pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

pub struct ClipConversion {
    pub tensors: BTreeMap<String, Tensor>,
    pub origin: BTreeMap<String, String>,
    pub unrecognised: Vec<String>,
    /// Original keys skipped on purpose (position_ids, text_projection,
    /// logit_scale, the unused last OpenCLIP block).
    pub ignored: Vec<String>,
}

impl ClipConversion {
    fn new() -> ClipConversion {
        ClipConversion {
            tensors: BTreeMap::new(),
            origin: BTreeMap::new(),
            unrecognised: Vec::new(),
            ignored: Vec::new(),
        }
    }
    fn put(&mut self, name: String, original: String, t: Tensor) {
        self.origin.insert(name.clone(), original);
        self.tensors.insert(name, t);
    }
}

/// SD 1.x: strip `cond_stage_model.transformer.`. The buffer
/// `text_model.embeddings.position_ids` is not a parameter and is skipped.
/// Checkpoints saved by transformers versions without the `text_model.`
/// wrapper get it added (diffusers would fail on those).
pub fn convert_clip(ldm: BTreeMap<String, Tensor>) -> ClipConversion {
    convert_clip_from(ldm, CLIP_PREFIX)
}

/// [`convert_clip`] for keys found under `prefix` (SDXL:
/// `conditioner.embedders.0.transformer.`), named so in messages.
pub fn convert_clip_from(ldm: BTreeMap<String, Tensor>, prefix: &str) -> ClipConversion {
    let mut out = ClipConversion::new();
    for (key, t) in ldm {
        let original = format!("{prefix}{key}");
        let name = if key.starts_with("text_model.") {
            key
        } else if ["embeddings.", "encoder.", "final_layer_norm."]
            .iter()
            .any(|p| key.starts_with(p))
        {
            format!("text_model.{key}")
        } else {
            out.unrecognised.push(original);
            continue;
        };
        if name == "text_model.embeddings.position_ids" {
            out.ignored.push(original);
        } else {
            out.put(name, original, t);
        }
    }
    out
}

fn param(p: &str) -> bool {
    p == "weight" || p == "bias"
}

/// SD 2.x: OpenCLIP names, fused `in_proj` split into q, k, v (in thirds of
/// its rows: diffusers splits at `text_projection.shape[0]`, the width, which
/// is the same for every valid checkpoint).
pub fn convert_open_clip(ldm: BTreeMap<String, Tensor>) -> ClipConversion {
    convert_open_clip_from(ldm, OPEN_CLIP_PREFIX, true)
}

/// [`convert_open_clip`] for keys found under `prefix`. `penultimate`: SD
/// 2.x's model (the last resblock and `text_projection` dropped); without
/// it, SDXL's (`conditioner.embedders.1.model.`): every resblock, and
/// `text_projection` [width, proj] as a Linear weight `text_projection.weight`
/// [proj, width] (transposed, as `convert_open_clip_checkpoint`), the weights
/// of transformers' `CLIPTextModelWithProjection`.
pub fn convert_open_clip_from(
    ldm: BTreeMap<String, Tensor>,
    prefix: &str,
    penultimate: bool,
) -> ClipConversion {
    let mut out = ClipConversion::new();
    let last = indices(ldm.keys(), "transformer.resblocks.")
        .last()
        .copied()
        .filter(|_| penultimate);
    for (key, t) in ldm {
        let original = format!("{prefix}{key}");
        let simple = match key.as_str() {
            "token_embedding.weight" => {
                Some("text_model.embeddings.token_embedding.weight".to_string())
            }
            "positional_embedding" => {
                Some("text_model.embeddings.position_embedding.weight".to_string())
            }
            "ln_final.weight" | "ln_final.bias" => Some(format!(
                "text_model.final_layer_norm.{}",
                &key["ln_final.".len()..]
            )),
            "text_projection" if !penultimate => {
                out.put(
                    "text_projection.weight".into(),
                    original,
                    t.tr().contiguous(),
                );
                continue;
            }
            "text_projection" | "logit_scale" | "attn_mask" => {
                out.ignored.push(original);
                continue;
            }
            _ => None,
        };
        if let Some(name) = simple {
            out.put(name, original, t);
            continue;
        }
        let Some((i, rest)) = indexed(&key, "transformer.resblocks.") else {
            out.unrecognised.push(original);
            continue;
        };
        if Some(i) == last {
            out.ignored.push(original);
            continue;
        }
        let layer = format!("text_model.encoder.layers.{i}");
        if rest == "attn.in_proj_weight" || rest == "attn.in_proj_bias" {
            let p = if rest.ends_with("weight") {
                "weight"
            } else {
                "bias"
            };
            let rows = t.size()[0];
            if rows % 3 != 0 {
                out.unrecognised.push(format!(
                    "{original} (shape {:?} is not 3 stacked projections)",
                    t.size()
                ));
                continue;
            }
            for (j, q) in ["q", "k", "v"].iter().enumerate() {
                let part = t.narrow(0, j as i64 * rows / 3, rows / 3);
                out.put(
                    format!("{layer}.self_attn.{q}_proj.{p}"),
                    original.clone(),
                    part,
                );
            }
            continue;
        }
        let renamed = [
            ("ln_1.", "layer_norm1."),
            ("ln_2.", "layer_norm2."),
            ("attn.out_proj.", "self_attn.out_proj."),
            ("mlp.c_fc.", "mlp.fc1."),
            ("mlp.c_proj.", "mlp.fc2."),
        ]
        .iter()
        .find_map(|(old, new)| {
            rest.strip_prefix(old)
                .filter(|p| param(p))
                .map(|p| format!("{new}{p}"))
        });
        match renamed {
            Some(r) => out.put(format!("{layer}.{r}"), original, t),
            None => out.unrecognised.push(original),
        }
    }
    out
}

/// The `CLIPTextConfig` fields the converted shapes determine.
pub fn infer_config(c: &ClipConversion) -> Result<Map<String, Value>, String> {
    let origin = |name: &str| {
        c.origin
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("text encoder tensor {name}"))
    };
    let s = Shapes {
        tensors: &c.tensors,
        original: &origin,
    };
    let layers = indices(c.tensors.keys(), "text_model.encoder.layers.");
    if layers.is_empty() || !super::keys::is_contiguous(&layers) {
        return Err(format!("text encoder layers are not 0..n: {layers:?}"));
    }
    let mut errors = Vec::new();
    let mut ok = |r: Result<Vec<i64>, String>| r.map_err(|e| errors.push(e)).unwrap_or_default();
    let tokens = ok(s.get(
        "text_model.embeddings.token_embedding.weight",
        2,
        "vocab_size and hidden_size",
    ));
    let positions = ok(s.get(
        "text_model.embeddings.position_embedding.weight",
        2,
        "max_position_embeddings",
    ));
    let fc1 = ok(s.get(
        "text_model.encoder.layers.0.mlp.fc1.weight",
        2,
        "intermediate_size",
    ));
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let mut m = Map::new();
    m.insert("vocab_size".into(), json!(tokens[0]));
    m.insert("hidden_size".into(), json!(tokens[1]));
    m.insert("max_position_embeddings".into(), json!(positions[0]));
    m.insert("intermediate_size".into(), json!(fc1[0]));
    m.insert("num_hidden_layers".into(), json!(layers.len()));
    Ok(m)
}

/// transformers' `CLIPTextConfig` of the SD text encoders for what the
/// weights cannot tell: `quick_gelu` (OpenAI CLIP ViT-L/14, SD 1.x) or
/// `gelu` (OpenCLIP ViT-H/14, SD 2.x), heads = hidden_size / 64 (12 for
/// ViT-L, 16 for ViT-H), layer_norm_eps 1e-5, bos/eos 49406/49407;
/// `projection_dim` (unused by `CLIPTextModel`) 768 / 512 as in the SD 1.5 /
/// 2.1 configs (OpenCLIP's `text_projection` is dropped, as in diffusers).
pub fn defaults(sd2: bool, hidden_size: i64) -> (Map<String, Value>, Vec<String>) {
    let act = if sd2 { "gelu" } else { "quick_gelu" };
    let mut assumed = vec![
        format!("hidden_act = {act}"),
        "layer_norm_eps = 1e-5".to_string(),
    ];
    let heads = if hidden_size % 64 == 0 && hidden_size > 0 {
        assumed.push(format!(
            "num_attention_heads = {} (hidden_size / 64)",
            hidden_size / 64
        ));
        hidden_size / 64
    } else {
        assumed.push("num_attention_heads = 1 (hidden_size is not a multiple of 64: give a reference config)".into());
        1
    };
    let v = json!({
        "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 49406,
        "eos_token_id": 49407, "hidden_act": act, "initializer_factor": 1.0, "initializer_range": 0.02,
        "layer_norm_eps": 1e-05, "model_type": "clip_text_model", "num_attention_heads": heads,
        "pad_token_id": 1, "projection_dim": if sd2 { 512 } else { 768 }
    });
    (v.as_object().cloned().unwrap_or_default(), assumed)
}
