//! UNet2DModel's blocks (diffusers `models/unets/unet_2d_blocks.py`):
//! `DownBlock2D` / `AttnDownBlock2D`, `UNetMidBlock2D`, `UpBlock2D` /
//! `AttnUpBlock2D`. A block without attentions is the plain variant. The
//! resnets and samplers are the SD U-Net's ([`crate::unet::resnet`]); the
//! attention is the pixel self-attention of [`crate::vae::blocks`].
use crate::unet::params::params;
use crate::unet::resnet::{Downsample2D, ResnetBlock2D, ResnetParams, Upsample2D};
use crate::vae::blocks::SpatialSelfAttention;
use crate::weights::Weights;
use tch::Tensor;

/// What a block is built from.
pub struct BlockSpec {
    pub in_channels: i64,
    pub out_channels: i64,
    pub num_layers: i64,
    pub resnet: ResnetParams,
    /// Attention heads for the `Attn*` variant.
    pub heads: Option<i64>,
}

impl BlockSpec {
    fn attention(&self, w: &mut Weights, prefix: &str, i: i64) -> Option<SpatialSelfAttention> {
        self.heads.map(|heads| {
            SpatialSelfAttention::load_heads(
                w,
                &format!("{prefix}.attentions.{i}"),
                self.out_channels,
                self.resnet.groups,
                self.resnet.eps,
                heads,
                1.0,
            )
        })
    }
}

pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialSelfAttention>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    /// `downsample_padding`: `None` for the last block (no downsampler).
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        s: &BlockSpec,
        downsample_padding: Option<i64>,
    ) -> Self {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..s.num_layers {
            let in_ch = if i == 0 {
                s.in_channels
            } else {
                s.out_channels
            };
            let p = format!("{prefix}.resnets.{i}");
            resnets.push(ResnetBlock2D::load(w, &p, in_ch, s.out_channels, s.resnet));
            attentions.extend(s.attention(w, prefix, i));
        }
        let downsampler = downsample_padding.map(|padding| {
            Downsample2D::load(
                w,
                &format!("{prefix}.downsamplers.0"),
                s.out_channels,
                padding,
            )
        });
        DownBlock {
            resnets,
            attentions,
            downsampler,
        }
    }

    /// Runs the block, pushing every resnet (or attention) output and the
    /// downsampled result onto `skips`.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, skips: &mut Vec<Tensor>) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, temb);
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h);
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

/// `UNetMidBlock2D(num_layers=1)`: resnet, optional attention, resnet.
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialSelfAttention>,
}

impl MidBlock {
    /// `attention`: `Some((heads, norm groups))` when `add_attention`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        channels: i64,
        resnet: ResnetParams,
        attention: Option<(i64, i64)>,
    ) -> Self {
        let resnet_at = |w: &mut Weights, i| {
            ResnetBlock2D::load(
                w,
                &format!("{prefix}.resnets.{i}"),
                channels,
                channels,
                resnet,
            )
        };
        let first = resnet_at(w, 0);
        let attentions = attention
            .map(|(heads, groups)| {
                SpatialSelfAttention::load_heads(
                    w,
                    &format!("{prefix}.attentions.0"),
                    channels,
                    groups,
                    resnet.eps,
                    heads,
                    resnet.output_scale_factor,
                )
            })
            .into_iter()
            .collect();
        let second = resnet_at(w, 1);
        MidBlock {
            resnets: vec![first, second],
            attentions,
        }
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Tensor {
        let mut h = self.resnets[0].forward(x, temb);
        if let Some(attn) = self.attentions.first() {
            h = attn.forward(&h);
        }
        self.resnets[1].forward(&h, temb)
    }
}

pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialSelfAttention>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// `prev_output_channel`: the channels coming from the block below;
    /// `in_channels` of the spec: those of the skip the last resnet takes.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        s: &BlockSpec,
        prev_output_channel: i64,
        add_upsample: bool,
    ) -> Self {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..s.num_layers {
            let skip_ch = if i == s.num_layers - 1 {
                s.in_channels
            } else {
                s.out_channels
            };
            let in_ch = if i == 0 {
                prev_output_channel
            } else {
                s.out_channels
            };
            let p = format!("{prefix}.resnets.{i}");
            resnets.push(ResnetBlock2D::load(
                w,
                &p,
                in_ch + skip_ch,
                s.out_channels,
                s.resnet,
            ));
            attentions.extend(s.attention(w, prefix, i));
        }
        let upsampler = add_upsample
            .then(|| Upsample2D::load(w, &format!("{prefix}.upsamplers.0"), s.out_channels));
        UpBlock {
            resnets,
            attentions,
            upsampler,
        }
    }

    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    /// Runs the block, concatenating the last skips (popped from `skips`).
    pub fn forward(&self, x: &Tensor, temb: &Tensor, skips: &mut Vec<Tensor>) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("as many skips as resnets (checked by the caller)");
            h = resnet.forward(&Tensor::cat(&[&h, &skip], 1), temb);
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h);
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(&h, None),
            None => h,
        }
    }
}

params!(DownBlock: resnets, attentions, downsampler);
params!(MidBlock: resnets, attentions);
params!(UpBlock: resnets, attentions, upsampler);
