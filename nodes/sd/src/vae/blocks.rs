//! The building blocks of the KL autoencoder's encoder and decoder, without
//! time embedding: `ResnetBlock2D` (diffusers `models/resnet.py`),
//! `Downsample2D` (`models/downsampling.py`), `Upsample2D`
//! (`models/upsampling.py`), the VAE's single-head spatial self-attention
//! (`models/attention_processor.py`, `Attention` with `group_norm` and
//! `residual_connection`, run by `AttnProcessor2_0`) and `UNetMidBlock2D`
//! (`models/unets/unet_2d_blocks.py`).
use crate::layers::{Conv2d, GroupNorm, Linear};
use crate::op_threads;
use crate::weights::Weights;
use tch::Tensor;

/// Every norm in the VAE uses eps 1e-6 (`resnet_eps=1e-6` in `vae.py`).
pub const EPS: f64 = 1e-6;

/// `ResnetBlock2D` with `temb_channels=None`, `output_scale_factor=1`:
/// x + conv2(silu(norm2(conv1(silu(norm1(x)))))), with a 1x1 conv on the
/// shortcut when the channel count changes.
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        in_ch: i64,
        out_ch: i64,
        groups: i64,
    ) -> ResnetBlock {
        ResnetBlock {
            norm1: GroupNorm::load(w, &format!("{prefix}.norm1"), groups, in_ch, EPS),
            conv1: Conv2d::load(w, &format!("{prefix}.conv1"), in_ch, out_ch, 3, 1, 1),
            norm2: GroupNorm::load(w, &format!("{prefix}.norm2"), groups, out_ch, EPS),
            conv2: Conv2d::load(w, &format!("{prefix}.conv2"), out_ch, out_ch, 3, 1, 1),
            conv_shortcut: (in_ch != out_ch).then(|| {
                Conv2d::load(
                    w,
                    &format!("{prefix}.conv_shortcut"),
                    in_ch,
                    out_ch,
                    1,
                    1,
                    0,
                )
            }),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.conv1.forward(&self.norm1.forward(x).silu());
        let h = self.conv2.forward(&self.norm2.forward(&h).silu());
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x.shallow_clone(),
        };
        shortcut + h
    }
}

/// `Downsample2D(use_conv=True, padding=0)`: pad right and bottom by one
/// zero, then a 3x3 convolution with stride 2.
pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    pub fn load(w: &mut Weights, prefix: &str, channels: i64) -> Downsample {
        Downsample {
            conv: Conv2d::load(w, &format!("{prefix}.conv"), channels, channels, 3, 2, 0),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]))
    }
}

/// `Upsample2D(use_conv=True)`: nearest-neighbour x2
/// (`F.interpolate(scale_factor=2.0, mode="nearest")`), then a 3x3 conv.
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn load(w: &mut Weights, prefix: &str, channels: i64) -> Upsample {
        Upsample {
            conv: Conv2d::load(w, &format!("{prefix}.conv"), channels, channels, 3, 1, 1),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let up = x.upsample_nearest2d([size[2] * 2, size[3] * 2], 2.0, 2.0);
        self.conv.forward(&up)
    }
}

/// diffusers' `Attention` over the pixels of an image, as the blocks built
/// with `_from_deprecated_attn_block=True` configure it (the VAE's mid block,
/// UNet2DModel's `AttnDownBlock2D`/`AttnUpBlock2D`/`UNetMidBlock2D`): group
/// norm, q/k/v linear projections over the flattened pixels, `heads` heads
/// of `channels / heads` (scale 1/sqrt(head dim)), output projection,
/// residual, divided by `rescale_output_factor` (`attention_processor.py`,
/// `AttnProcessor2_0`).
pub struct SpatialSelfAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
    rescale_output_factor: f64,
}

impl SpatialSelfAttention {
    /// The VAE's: one head of all channels, norm eps 1e-6, no rescaling.
    pub fn load(w: &mut Weights, prefix: &str, channels: i64, groups: i64) -> SpatialSelfAttention {
        SpatialSelfAttention::load_heads(w, prefix, channels, groups, EPS, 1, 1.0)
    }

    /// Diffusers folders written before 0.14 name the projections
    /// `query`/`key`/`value`/`proj_attn`; diffusers renames them on load
    /// (`_convert_deprecated_attention_blocks` in `models/modeling_utils.py`),
    /// and so do we.
    pub fn load_heads(
        w: &mut Weights,
        prefix: &str,
        channels: i64,
        groups: i64,
        eps: f64,
        heads: i64,
        rescale_output_factor: f64,
    ) -> SpatialSelfAttention {
        let legacy = w.contains(&format!("{prefix}.query.weight"));
        let name = |new: &str, old: &str| format!("{prefix}.{}", if legacy { old } else { new });
        SpatialSelfAttention {
            group_norm: GroupNorm::load(w, &format!("{prefix}.group_norm"), groups, channels, eps),
            to_q: Linear::load(w, &name("to_q", "query"), channels, channels, true),
            to_k: Linear::load(w, &name("to_k", "key"), channels, channels, true),
            to_v: Linear::load(w, &name("to_v", "value"), channels, channels, true),
            to_out: Linear::load(w, &name("to_out.0", "proj_attn"), channels, channels, true),
            heads,
            rescale_output_factor,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let (b, c, h, wd) = (size[0], size[1], size[2], size[3]);
        // [B, C, H, W] -> [B, HW, C]; the group norm of the flattened pixels
        // equals the group norm of the image.
        let tokens = self
            .group_norm
            .forward(x)
            .view([b, c, h * wd])
            .transpose(1, 2);
        let heads = self.heads;
        // [B, HW, C] -> [B, heads, HW, C / heads] (one head: the same view,
        // made the way the VAE always made it)
        let split = |t: Tensor| match heads {
            1 => t.unsqueeze(1),
            _ => t.view([b, -1, heads, c / heads]).transpose(1, 2),
        };
        let q = split(self.to_q.forward(&tokens));
        let k = split(self.to_k.forward(&tokens));
        let v = split(self.to_v.forward(&tokens));
        let attn = op_threads::attention(&q, &k, &v, false, None)
            .unwrap_or_else(|e| panic!("vae attention: {e}"));
        let attn = match heads {
            1 => attn.squeeze_dim(1),
            _ => attn.transpose(1, 2).reshape([b, h * wd, c]),
        };
        let out = self
            .to_out
            .forward(&attn)
            .transpose(-1, -2)
            .reshape([b, c, h, wd])
            + x;
        if self.rescale_output_factor == 1.0 {
            out
        } else {
            out / self.rescale_output_factor
        }
    }
}

crate::unet::params::params!(SpatialSelfAttention: group_norm, to_q, to_k, to_v, to_out);

/// `UNetMidBlock2D(num_layers=1)` without time embedding: resnet, optional
/// attention (`mid_block_add_attention`), resnet.
pub struct MidBlock {
    resnet0: ResnetBlock,
    attention: Option<SpatialSelfAttention>,
    resnet1: ResnetBlock,
}

impl MidBlock {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        channels: i64,
        groups: i64,
        attention: bool,
    ) -> MidBlock {
        MidBlock {
            resnet0: ResnetBlock::load(
                w,
                &format!("{prefix}.resnets.0"),
                channels,
                channels,
                groups,
            ),
            attention: attention.then(|| {
                SpatialSelfAttention::load(w, &format!("{prefix}.attentions.0"), channels, groups)
            }),
            resnet1: ResnetBlock::load(
                w,
                &format!("{prefix}.resnets.1"),
                channels,
                channels,
                groups,
            ),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.resnet0.forward(x);
        if let Some(attn) = &self.attention {
            h = attn.forward(&h);
        }
        self.resnet1.forward(&h)
    }
}
