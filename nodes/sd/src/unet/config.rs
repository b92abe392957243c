//! `unet/config.json` of a diffusers UNet2DConditionModel, with diffusers'
//! defaults for absent fields (`models/unets/unet_2d_condition.py`,
//! `UNet2DConditionModel.__init__`), and its per-block expansion of the
//! int-or-list fields.
use serde::Deserialize;
use std::path::Path;

/// A config field that diffusers accepts as one value or as one per block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// One value per block (`n` blocks): a single value repeated, or the list
    /// itself, which must have `n` entries.
    pub fn per_block(&self, n: usize, field: &str) -> Result<Vec<T>, String> {
        match self {
            OneOrMany::One(v) => Ok(vec![v.clone(); n]),
            OneOrMany::Many(v) if v.len() == n => Ok(v.clone()),
            OneOrMany::Many(v) => Err(format!(
                "unet config: `{field}` has {} entries for {n} blocks",
                v.len()
            )),
        }
    }
}

/// UNet2DConditionModel's configuration. Every field of diffusers' config is
/// read; those this port does not implement are rejected by [`UNetConfig::check`]
/// when set to anything but their default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    pub sample_size: Option<OneOrMany<i64>>,
    pub in_channels: i64,
    pub out_channels: i64,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub only_cross_attention: OneOrMany<bool>,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: OneOrMany<i64>,
    pub downsample_padding: i64,
    pub mid_block_scale_factor: f64,
    pub dropout: f64,
    pub act_fn: String,
    pub norm_num_groups: Option<i64>,
    pub norm_eps: f64,
    pub cross_attention_dim: OneOrMany<i64>,
    /// Per block: an int, or (asymmetric U-Nets) a list with one entry per layer.
    pub transformer_layers_per_block: OneOrMany<OneOrMany<i64>>,
    pub reverse_transformer_layers_per_block: Option<Vec<Vec<i64>>>,
    pub encoder_hid_dim: Option<i64>,
    pub encoder_hid_dim_type: Option<String>,
    /// Historically misnamed: this is the number of attention *heads* per
    /// block (diffusers issue #2011), used when `num_attention_heads` is absent.
    pub attention_head_dim: OneOrMany<i64>,
    /// diffusers refuses a config that sets this (same naming issue); so do we.
    pub num_attention_heads: Option<OneOrMany<i64>>,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub addition_time_embed_dim: Option<i64>,
    pub num_class_embeds: Option<i64>,
    /// No effect: diffusers' scaled_dot_product_attention processor ignores it.
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub resnet_skip_time_act: bool,
    /// Only read by block types this port does not implement (as in diffusers'
    /// `get_down_block`/`get_up_block` for the SD block types).
    pub resnet_out_scale_factor: f64,
    pub time_embedding_type: String,
    pub time_embedding_dim: Option<i64>,
    pub time_embedding_act_fn: Option<String>,
    pub timestep_post_act: Option<String>,
    pub time_cond_proj_dim: Option<i64>,
    pub conv_in_kernel: i64,
    pub conv_out_kernel: i64,
    pub projection_class_embeddings_input_dim: Option<i64>,
    pub attention_type: String,
    pub class_embeddings_concat: bool,
    pub mid_block_only_cross_attention: Option<bool>,
    pub cross_attention_norm: Option<String>,
    pub addition_embed_type_num_heads: i64,
}

impl Default for UNetConfig {
    /// diffusers' defaults (those of SD 1.x, except `cross_attention_dim` 1280).
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        UNetConfig {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: s(&[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: s(&[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]),
            only_cross_attention: OneOrMany::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: OneOrMany::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            dropout: 0.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: OneOrMany::One(1280),
            transformer_layers_per_block: OneOrMany::One(OneOrMany::One(1)),
            reverse_transformer_layers_per_block: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_head_dim: OneOrMany::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            num_class_embeds: None,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            resnet_skip_time_act: false,
            resnet_out_scale_factor: 1.0,
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            projection_class_embeddings_input_dim: None,
            attention_type: "default".into(),
            class_embeddings_concat: false,
            mid_block_only_cross_attention: None,
            cross_attention_norm: None,
            addition_embed_type_num_heads: 64,
        }
    }
}

/// The per-block values a U-Net is built from, expanded as diffusers does.
#[derive(Debug, Clone)]
pub struct BlockPlan {
    pub layers_per_block: Vec<i64>,
    pub heads: Vec<i64>,
    pub cross_attention_dim: Vec<i64>,
    pub only_cross_attention: Vec<bool>,
    /// Down blocks: transformer layers of each of their layers.
    pub down_transformer_layers: Vec<Vec<i64>>,
    /// Up blocks (in up order): transformer layers of each of their layers.
    pub up_transformer_layers: Vec<Vec<i64>>,
    /// The mid block's one transformer: the last block's (first) count.
    pub mid_transformer_layers: i64,
    /// SDXL's `text_time` added conditioning: (`addition_time_embed_dim`,
    /// `projection_class_embeddings_input_dim`).
    pub text_time: Option<(i64, i64)>,
}

/// An activation name diffusers' `get_activation` maps to SiLU.
pub(crate) fn is_silu(name: &str) -> bool {
    matches!(name, "silu" | "swish")
}

impl UNetConfig {
    pub fn from_json(text: &str) -> Result<UNetConfig, String> {
        serde_json::from_str(text).map_err(|e| format!("invalid unet config: {e}"))
    }

    pub fn from_file(path: &Path) -> Result<UNetConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The dimension of the time embedding fed to the resnets.
    pub fn time_embed_dim(&self) -> i64 {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4)
    }

    /// Checks what diffusers checks, refuses what this port does not
    /// implement, and expands the per-block fields.
    pub fn plan(&self) -> Result<BlockPlan, String> {
        let n = self.down_block_types.len();
        let mut unsupported = Vec::new();
        let mut refuse = |cond: bool, what: String| {
            if cond {
                unsupported.push(what)
            }
        };
        refuse(
            self.num_attention_heads.is_some(),
            "num_attention_heads (diffusers refuses it too: the number of heads is read from attention_head_dim, see diffusers issue #2011)".into(),
        );
        refuse(self.dual_cross_attention, "dual_cross_attention".into());
        refuse(
            self.class_embed_type.is_some() || self.num_class_embeds.is_some(),
            "class embeddings".into(),
        );
        let text_time = match self.addition_embed_type.as_deref() {
            None => None,
            Some("text_time") => match (
                self.addition_time_embed_dim,
                self.projection_class_embeddings_input_dim,
            ) {
                (Some(t), Some(p)) if t > 0 && p > 0 => Some((t, p)),
                _ => return Err(
                    "unet config: addition_embed_type text_time needs addition_time_embed_dim and \
                                projection_class_embeddings_input_dim"
                        .into(),
                ),
            },
            Some(other) => {
                refuse(true, format!("addition_embed_type {other:?}"));
                None
            }
        };
        refuse(
            self.encoder_hid_dim.is_some() || self.encoder_hid_dim_type.is_some(),
            "encoder_hid_dim".into(),
        );
        refuse(
            self.time_cond_proj_dim.is_some(),
            "time_cond_proj_dim".into(),
        );
        refuse(
            self.time_embedding_type != "positional",
            format!("time_embedding_type {:?}", self.time_embedding_type),
        );
        refuse(
            self.resnet_time_scale_shift != "default",
            format!("resnet_time_scale_shift {:?}", self.resnet_time_scale_shift),
        );
        refuse(
            self.attention_type != "default",
            format!("attention_type {:?}", self.attention_type),
        );
        refuse(
            self.norm_num_groups.is_none(),
            "norm_num_groups null".into(),
        );
        refuse(!is_silu(&self.act_fn), format!("act_fn {:?}", self.act_fn));
        for act in [&self.time_embedding_act_fn, &self.timestep_post_act]
            .into_iter()
            .flatten()
        {
            refuse(!is_silu(act), format!("activation {act:?}"));
        }
        for t in &self.down_block_types {
            let t = t.strip_prefix("UNetRes").unwrap_or(t);
            refuse(
                !matches!(t, "CrossAttnDownBlock2D" | "DownBlock2D"),
                format!("down block type {t:?}"),
            );
        }
        for t in &self.up_block_types {
            let t = t.strip_prefix("UNetRes").unwrap_or(t);
            refuse(
                !matches!(t, "CrossAttnUpBlock2D" | "UpBlock2D"),
                format!("up block type {t:?}"),
            );
        }
        if let Some(t) = &self.mid_block_type {
            refuse(
                t != "UNetMidBlock2DCrossAttn",
                format!("mid block type {t:?}"),
            );
        }
        if !unsupported.is_empty() {
            return Err(format!(
                "unet config: not supported: {}",
                unsupported.join(", ")
            ));
        }
        if self.up_block_types.len() != n || self.block_out_channels.len() != n || n == 0 {
            return Err(format!(
                "unet config: {} down blocks, {} up blocks and {} block_out_channels must agree",
                n,
                self.up_block_types.len(),
                self.block_out_channels.len()
            ));
        }
        let heads = self.attention_head_dim.per_block(n, "attention_head_dim")?;
        let layers = self.layers_per_block.per_block(n, "layers_per_block")?;
        // A flat list ([1, 2, 10], SDXL) deserializes as One(Many(..)) of the
        // untagged nested type: it is one count per block.
        let tl = match &self.transformer_layers_per_block {
            OneOrMany::One(OneOrMany::Many(v)) => {
                OneOrMany::Many(v.iter().map(|&x| OneOrMany::One(x)).collect())
            }
            other => other.clone(),
        }
        .per_block(n, "transformer_layers_per_block")?;
        let per_layer = |v: &OneOrMany<i64>, layers: i64| {
            v.per_block(layers as usize, "transformer_layers_per_block")
        };
        let down_tl = (0..n)
            .map(|i| per_layer(&tl[i], layers[i]))
            .collect::<Result<Vec<_>, _>>()?;
        let up_tl = match &self.reverse_transformer_layers_per_block {
            Some(rev) if rev.len() == n => rev.clone(),
            Some(rev) => return Err(format!("unet config: reverse_transformer_layers_per_block has {} entries", rev.len())),
            None if tl.iter().any(|t| matches!(t, OneOrMany::Many(_))) => {
                return Err("unet config: asymmetric transformer_layers_per_block needs reverse_transformer_layers_per_block".into())
            }
            None => (0..n).rev().map(|i| per_layer(&tl[i], layers[i] + 1)).collect::<Result<Vec<_>, _>>()?,
        };
        let mid_transformer_layers = match &tl[n - 1] {
            OneOrMany::One(x) => *x,
            OneOrMany::Many(v) => *v
                .first()
                .ok_or("unet config: empty transformer_layers_per_block entry")?,
        };
        let plan = BlockPlan {
            mid_transformer_layers,
            text_time,
            heads,
            cross_attention_dim: self
                .cross_attention_dim
                .per_block(n, "cross_attention_dim")?,
            only_cross_attention: self
                .only_cross_attention
                .per_block(n, "only_cross_attention")?,
            down_transformer_layers: down_tl,
            up_transformer_layers: up_tl,
            layers_per_block: layers,
        };
        if let Some(h) = plan.heads.iter().find(|&&h| h <= 0) {
            return Err(format!("unet config: {h} attention heads"));
        }
        Ok(plan)
    }
}
