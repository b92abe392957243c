//! ResnetBlock2D (diffusers `models/resnet.py`, `time_embedding_norm`
//! "default"), Downsample2D (`models/downsampling.py`) and Upsample2D
//! (`models/upsampling.py`), as the SD U-Net blocks configure them.
use super::params::params;
use crate::layers::{Conv2d, GroupNorm, Linear};
use crate::weights::Weights;
use tch::Tensor;

/// Hyper-parameters shared by all resnets of a U-Net.
#[derive(Debug, Clone, Copy)]
pub struct ResnetParams {
    pub groups: i64,
    pub eps: f64,
    pub temb_channels: i64,
    pub output_scale_factor: f64,
}

pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn load(w: &mut Weights, prefix: &str, in_ch: i64, out_ch: i64, p: ResnetParams) -> Self {
        let name = |s: &str| format!("{prefix}.{s}");
        ResnetBlock2D {
            norm1: GroupNorm::load(w, &name("norm1"), p.groups, in_ch, p.eps),
            conv1: Conv2d::load(w, &name("conv1"), in_ch, out_ch, 3, 1, 1),
            time_emb_proj: Linear::load(w, &name("time_emb_proj"), p.temb_channels, out_ch, true),
            norm2: GroupNorm::load(w, &name("norm2"), p.groups, out_ch, p.eps),
            conv2: Conv2d::load(w, &name("conv2"), out_ch, out_ch, 3, 1, 1),
            conv_shortcut: (in_ch != out_ch)
                .then(|| Conv2d::load(w, &name("conv_shortcut"), in_ch, out_ch, 1, 1, 0)),
            output_scale_factor: p.output_scale_factor,
        }
    }

    /// `temb_act` is the time embedding after the nonlinearity diffusers
    /// applies inside every resnet (unless `resnet_skip_time_act`); the caller
    /// computes it once per forward. Runs under no_grad (the U-Net's forward):
    /// SiLU, the time-embedding add, the residual add and the output scale
    /// are done in place on fresh intermediates (the same values as
    /// diffusers' out-of-place ops: addition commutes exactly), saving an
    /// allocation and a pass over memory each.
    pub fn forward(&self, x: &Tensor, temb_act: &Tensor) -> Tensor {
        let mut h = self.conv1.forward(&self.norm1.forward(x).silu_());
        let t = self
            .time_emb_proj
            .forward(temb_act)
            .unsqueeze(-1)
            .unsqueeze(-1);
        h += t;
        let mut h = self.conv2.forward(&self.norm2.forward(&h).silu_());
        match &self.conv_shortcut {
            Some(c) => h += c.forward(x),
            None => h += x,
        }
        if self.output_scale_factor != 1.0 {
            h /= self.output_scale_factor;
        }
        h
    }
}

/// Downsample2D with `use_conv`: a stride-2 3x3 convolution; padding 0 pads
/// right and bottom by one first, as diffusers does.
pub struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    pub fn load(w: &mut Weights, prefix: &str, channels: i64, padding: i64) -> Self {
        Downsample2D {
            conv: Conv2d::load(
                w,
                &format!("{prefix}.conv"),
                channels,
                channels,
                3,
                2,
                padding,
            ),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if self.conv.padding == 0 {
            self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]))
        } else {
            self.conv.forward(x)
        }
    }
}

/// Upsample2D with `use_conv`: nearest-neighbour x2 (or to `size`, diffusers'
/// `upsample_size` for latents not divisible by the total down factor), then
/// a 3x3 convolution.
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn load(w: &mut Weights, prefix: &str, channels: i64) -> Self {
        Upsample2D {
            conv: Conv2d::load(w, &format!("{prefix}.conv"), channels, channels, 3, 1, 1),
        }
    }

    pub fn forward(&self, x: &Tensor, size: Option<(i64, i64)>) -> Tensor {
        let up = match size {
            // F.interpolate(size=...): torch derives the scales from the sizes.
            Some((h, w)) => x.upsample_nearest2d([h, w], None, None),
            // F.interpolate(scale_factor=2.0): the scales are passed through.
            None => {
                let s = x.size();
                x.upsample_nearest2d([s[2] * 2, s[3] * 2], Some(2.0), Some(2.0))
            }
        };
        self.conv.forward(&up)
    }
}

params!(ResnetBlock2D: norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut);
params!(Downsample2D: conv);
params!(Upsample2D: conv);
