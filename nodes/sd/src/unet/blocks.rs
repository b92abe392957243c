//! The U-Net's blocks (diffusers `models/unets/unet_2d_blocks.py`):
//! CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn,
//! CrossAttnUpBlock2D / UpBlock2D. A block without attentions is the plain
//! (non-cross-attention) variant.
use super::params::params;
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetParams, Upsample2D};
use super::transformer::{Transformer2DModel, TransformerParams};
use crate::weights::Weights;
use tch::Tensor;

/// Loads `transformer_layers.len()` Transformer2DModels under `{prefix}.attentions.{i}`.
fn load_attentions(
    w: &mut Weights,
    prefix: &str,
    channels: i64,
    t: TransformerParams,
    layers: &[i64],
) -> Vec<Transformer2DModel> {
    layers
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let p = TransformerParams { num_layers: n, ..t };
            Transformer2DModel::load(w, &format!("{prefix}.attentions.{i}"), channels, p)
        })
        .collect()
}

/// What a down or up block is built from.
pub struct BlockSpec<'a> {
    pub in_channels: i64,
    pub out_channels: i64,
    pub num_layers: i64,
    pub resnet: ResnetParams,
    /// `Some((params, transformer layers per layer))` for the cross-attention variant.
    pub attention: Option<(TransformerParams, &'a [i64])>,
}

fn check_layers(prefix: &str, spec: &BlockSpec) -> Result<(), String> {
    match spec.attention {
        Some((_, layers)) if layers.len() as i64 != spec.num_layers => Err(format!(
            "unet config: {prefix} has {} layers but {} transformer layer counts",
            spec.num_layers,
            layers.len()
        )),
        _ => Ok(()),
    }
}

pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        spec: &BlockSpec,
        downsample_padding: Option<i64>,
    ) -> Result<Self, String> {
        check_layers(prefix, spec)?;
        let resnets = (0..spec.num_layers)
            .map(|i| {
                let in_ch = if i == 0 {
                    spec.in_channels
                } else {
                    spec.out_channels
                };
                ResnetBlock2D::load(
                    w,
                    &format!("{prefix}.resnets.{i}"),
                    in_ch,
                    spec.out_channels,
                    spec.resnet,
                )
            })
            .collect();
        let attentions = match spec.attention {
            Some((t, layers)) => load_attentions(w, prefix, spec.out_channels, t, layers),
            None => Vec::new(),
        };
        let downsampler = downsample_padding.map(|p| {
            Downsample2D::load(w, &format!("{prefix}.downsamplers.0"), spec.out_channels, p)
        });
        Ok(DownBlock {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Returns the block's output and appends its skip outputs to `skips`.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, temb);
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h, context);
            }
            skips.push(h.shallow_clone());
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(&h);
            skips.push(h.shallow_clone());
        }
        h
    }
}

/// UNetMidBlock2DCrossAttn with one layer: resnet, transformer, resnet.
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl MidBlock {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        channels: i64,
        resnet: ResnetParams,
        t: TransformerParams,
        layers: &[i64],
    ) -> Self {
        // num_layers is 1 in UNet2DConditionModel; `layers` has one entry per layer.
        let resnets = (0..=layers.len())
            .map(|i| {
                ResnetBlock2D::load(
                    w,
                    &format!("{prefix}.resnets.{i}"),
                    channels,
                    channels,
                    resnet,
                )
            })
            .collect();
        let attentions = load_attentions(w, prefix, channels, t, layers);
        MidBlock {
            resnets,
            attentions,
        }
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Tensor {
        let mut h = self.resnets[0].forward(x, temb);
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = resnet.forward(&attn.forward(&h, context), temb);
        }
        h
    }
}

pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// `spec.in_channels` is diffusers' `in_channels` (the skip width of the
    /// last layer); `prev_output_channel` is the width coming from below.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        spec: &BlockSpec,
        prev_output_channel: i64,
        add_upsample: bool,
    ) -> Result<Self, String> {
        check_layers(prefix, spec)?;
        let n = spec.num_layers;
        let out = spec.out_channels;
        let resnets = (0..n)
            .map(|i| {
                let skip = if i == n - 1 { spec.in_channels } else { out };
                let input = if i == 0 { prev_output_channel } else { out };
                ResnetBlock2D::load(
                    w,
                    &format!("{prefix}.resnets.{i}"),
                    input + skip,
                    out,
                    spec.resnet,
                )
            })
            .collect();
        let attentions = match spec.attention {
            Some((t, layers)) => load_attentions(w, prefix, out, t, layers),
            None => Vec::new(),
        };
        let upsampler =
            add_upsample.then(|| Upsample2D::load(w, &format!("{prefix}.upsamplers.0"), out));
        Ok(UpBlock {
            resnets,
            attentions,
            upsampler,
        })
    }

    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    /// Consumes its skips from the end of `skips` (the most recent first).
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
        upsample_size: Option<(i64, i64)>,
    ) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("the down blocks produce one skip per up-block resnet");
            h = resnet.forward(&Tensor::cat(&[h, skip], 1), temb);
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h, context);
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(&h, upsample_size),
            None => h,
        }
    }
}

params!(DownBlock: resnets, attentions, downsampler);
params!(MidBlock: resnets, attentions);
params!(UpBlock: resnets, attentions, upsampler);
