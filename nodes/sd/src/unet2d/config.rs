//! The fields of a diffusers `UNet2DModel` `config.json`
//! (`models/unets/unet_2d.py`, `UNet2DModel.__init__`), with its defaults.
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct UNet2DConfig {
    pub sample_size: Option<i64>,
    pub in_channels: i64,
    pub out_channels: i64,
    pub center_input_sample: bool,
    pub time_embedding_type: String,
    pub freq_shift: f64,
    pub flip_sin_to_cos: bool,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: i64,
    pub mid_block_scale_factor: f64,
    pub downsample_padding: i64,
    pub downsample_type: String,
    pub upsample_type: String,
    pub act_fn: String,
    pub attention_head_dim: Option<i64>,
    pub norm_num_groups: i64,
    pub attn_norm_num_groups: Option<i64>,
    pub norm_eps: f64,
    pub resnet_time_scale_shift: String,
    pub add_attention: bool,
    pub class_embed_type: Option<String>,
    pub num_class_embeds: Option<i64>,
    /// `mid_block_type`: "UNetMidBlock2D" or null (no mid block).
    pub mid_block_type: Option<String>,
}

impl Default for UNet2DConfig {
    fn default() -> UNet2DConfig {
        UNet2DConfig {
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: "positional".into(),
            freq_shift: 0.0,
            flip_sin_to_cos: true,
            down_block_types: vec![
                "DownBlock2D".into(),
                "AttnDownBlock2D".into(),
                "AttnDownBlock2D".into(),
                "AttnDownBlock2D".into(),
            ],
            up_block_types: vec![
                "AttnUpBlock2D".into(),
                "AttnUpBlock2D".into(),
                "AttnUpBlock2D".into(),
                "UpBlock2D".into(),
            ],
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            downsample_type: "conv".into(),
            upsample_type: "conv".into(),
            act_fn: "silu".into(),
            attention_head_dim: Some(8),
            norm_num_groups: 32,
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: "default".into(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            mid_block_type: Some("UNetMidBlock2D".into()),
        }
    }
}

impl UNet2DConfig {
    /// Parses a `config.json`. Fields set to `null` take their defaults,
    /// except those whose `null` means something (`attention_head_dim`: the
    /// block's channels; `mid_block_type`: no mid block).
    pub fn from_json(text: &str) -> Result<UNet2DConfig, String> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("invalid UNet2DModel config: {e}"))?;
        let meaningful_null = ["attention_head_dim", "mid_block_type"];
        let mut nulls = Vec::new();
        if let Some(map) = value.as_object_mut() {
            for key in meaningful_null {
                if map.get(key).is_some_and(|v| v.is_null()) {
                    nulls.push(key);
                }
            }
            map.retain(|_, v| !v.is_null());
        }
        let mut config: UNet2DConfig = serde_json::from_value(value)
            .map_err(|e| format!("invalid UNet2DModel config: {e}"))?;
        for key in nulls {
            match key {
                "attention_head_dim" => config.attention_head_dim = None,
                _ => config.mid_block_type = None,
            }
        }
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<UNet2DConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        UNet2DConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The embedding width: 4 x the first block's channels.
    pub fn time_embed_dim(&self) -> i64 {
        self.block_out_channels[0] * 4
    }

    /// Attention heads of a block of `channels` (diffusers passes
    /// `attention_head_dim`, or the block's channels when it is null, as
    /// the head dimension).
    pub fn heads(&self, channels: i64) -> i64 {
        channels / self.attention_head_dim.unwrap_or(channels)
    }

    /// Rejects what this implementation does not build, naming every problem.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        let mut errors = Vec::new();
        if n == 0 {
            errors.push("block_out_channels is empty".to_string());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            errors.push(format!(
                "{} down and {} up block types for {n} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        let known = |t: &String, ok: &[&str], what: &str, errors: &mut Vec<String>| {
            if !ok.contains(&t.as_str()) {
                errors.push(format!(
                    "unsupported {what} {t:?} (supported: {})",
                    ok.join(", ")
                ));
            }
        };
        for t in &self.down_block_types {
            known(
                t,
                &["DownBlock2D", "AttnDownBlock2D"],
                "down block type",
                &mut errors,
            );
        }
        for t in &self.up_block_types {
            known(
                t,
                &["UpBlock2D", "AttnUpBlock2D"],
                "up block type",
                &mut errors,
            );
        }
        known(
            &self.time_embedding_type,
            &["positional"],
            "time_embedding_type",
            &mut errors,
        );
        known(&self.act_fn, &["silu", "swish"], "act_fn", &mut errors);
        known(
            &self.resnet_time_scale_shift,
            &["default"],
            "resnet_time_scale_shift",
            &mut errors,
        );
        known(
            &self.downsample_type,
            &["conv"],
            "downsample_type",
            &mut errors,
        );
        known(&self.upsample_type, &["conv"], "upsample_type", &mut errors);
        if let Some(t) = &self.mid_block_type {
            known(t, &["UNetMidBlock2D"], "mid_block_type", &mut errors);
        }
        if let Some(t) = &self.class_embed_type {
            errors.push(format!(
                "unsupported class_embed_type {t:?} (only num_class_embeds)"
            ));
        }
        let g = self.norm_num_groups;
        if g <= 0
            || self
                .block_out_channels
                .iter()
                .any(|&c| c <= 0 || c % g != 0)
        {
            errors.push(format!(
                "norm_num_groups {g} does not divide block_out_channels {:?}",
                self.block_out_channels
            ));
        }
        if let Some(d) = self.attention_head_dim {
            if d <= 0 || self.block_out_channels.iter().any(|&c| c % d != 0) {
                errors.push(format!(
                    "attention_head_dim {d} does not divide block_out_channels {:?}",
                    self.block_out_channels
                ));
            }
        }
        if self.layers_per_block < 1 || self.in_channels < 1 || self.out_channels < 1 {
            errors.push("layers_per_block and channel counts must be positive".to_string());
        }
        if self.num_class_embeds.is_some_and(|n| n < 1) {
            errors.push("num_class_embeds must be positive".to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "unsupported UNet2DModel config: {}",
                errors.join("; ")
            ))
        }
    }
}
