//! The KL autoencoder's `Encoder` and `Decoder` (diffusers
//! `models/autoencoders/vae.py`) built from `DownEncoderBlock2D` /
//! `UpDecoderBlock2D` (`models/unets/unet_2d_blocks.py`).
use super::blocks::{Downsample, MidBlock, ResnetBlock, Upsample, EPS};
use super::VaeConfig;
use crate::layers::{Conv2d, GroupNorm};
use crate::weights::Weights;
use tch::Tensor;

/// `DownEncoderBlock2D`: `layers_per_block` resnets, then a stride-2
/// downsampler except in the last block.
struct DownBlock {
    resnets: Vec<ResnetBlock>,
    downsample: Option<Downsample>,
}

/// `UpDecoderBlock2D`: `layers_per_block + 1` resnets, then a nearest x2
/// upsampler except in the last block.
struct UpBlock {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Upsample>,
}

/// `Encoder`: conv_in, down blocks, mid block, group norm, silu, conv_out
/// to 2 * latent_channels (KL, `double_z=True`: mean and log-variance) or
/// latent_channels (VQ, `double_z=False`).
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn load(w: &mut Weights, prefix: &str, cfg: &VaeConfig) -> Encoder {
        let ch = &cfg.block_out_channels;
        let groups = cfg.norm_num_groups;
        let last = *ch.last().expect("validated non-empty");
        let conv_in = Conv2d::load(
            w,
            &format!("{prefix}.conv_in"),
            cfg.in_channels,
            ch[0],
            3,
            1,
            1,
        );
        let mut down_blocks = Vec::with_capacity(ch.len());
        let mut out_ch = ch[0];
        for (i, &block_ch) in ch.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = block_ch;
            let p = format!("{prefix}.down_blocks.{i}");
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    let c_in = if j == 0 { in_ch } else { out_ch };
                    ResnetBlock::load(w, &format!("{p}.resnets.{j}"), c_in, out_ch, groups)
                })
                .collect();
            let downsample = (i + 1 < ch.len())
                .then(|| Downsample::load(w, &format!("{p}.downsamplers.0"), out_ch));
            down_blocks.push(DownBlock {
                resnets,
                downsample,
            });
        }
        Encoder {
            conv_in,
            down_blocks,
            mid_block: MidBlock::load(
                w,
                &format!("{prefix}.mid_block"),
                last,
                groups,
                cfg.mid_block_add_attention,
            ),
            conv_norm_out: GroupNorm::load(
                w,
                &format!("{prefix}.conv_norm_out"),
                groups,
                last,
                EPS,
            ),
            conv_out: Conv2d::load(
                w,
                &format!("{prefix}.conv_out"),
                last,
                if cfg.is_vq() { 1 } else { 2 } * cfg.latent_channels,
                3,
                1,
                1,
            ),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(x);
        for block in &self.down_blocks {
            for resnet in &block.resnets {
                // Between blocks: a Ctrl-C ends a long VAE call here.
                diffgraph_sdk::interrupt::check();
                h = resnet.forward(&h);
            }
            if let Some(down) = &block.downsample {
                h = down.forward(&h);
            }
        }
        let h = self.mid_block.forward(&h);
        self.conv_out
            .forward(&self.conv_norm_out.forward(&h).silu())
    }
}

/// `Decoder(norm_type="group")`: conv_in, mid block, up blocks (channels
/// reversed), group norm, silu, conv_out.
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn load(w: &mut Weights, prefix: &str, cfg: &VaeConfig) -> Decoder {
        let reversed: Vec<i64> = cfg.block_out_channels.iter().rev().copied().collect();
        let groups = cfg.norm_num_groups;
        let first = reversed[0];
        let conv_in = Conv2d::load(
            w,
            &format!("{prefix}.conv_in"),
            cfg.latent_channels,
            first,
            3,
            1,
            1,
        );
        let mid_block = MidBlock::load(
            w,
            &format!("{prefix}.mid_block"),
            first,
            groups,
            cfg.mid_block_add_attention,
        );
        let mut up_blocks = Vec::with_capacity(reversed.len());
        let mut out_ch = first;
        for (i, &block_ch) in reversed.iter().enumerate() {
            let prev_ch = out_ch;
            out_ch = block_ch;
            let p = format!("{prefix}.up_blocks.{i}");
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| {
                    let c_in = if j == 0 { prev_ch } else { out_ch };
                    ResnetBlock::load(w, &format!("{p}.resnets.{j}"), c_in, out_ch, groups)
                })
                .collect();
            let upsample = (i + 1 < reversed.len())
                .then(|| Upsample::load(w, &format!("{p}.upsamplers.0"), out_ch));
            up_blocks.push(UpBlock { resnets, upsample });
        }
        let base = cfg.block_out_channels[0];
        Decoder {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                w,
                &format!("{prefix}.conv_norm_out"),
                groups,
                base,
                EPS,
            ),
            conv_out: Conv2d::load(
                w,
                &format!("{prefix}.conv_out"),
                base,
                cfg.out_channels,
                3,
                1,
                1,
            ),
        }
    }

    pub fn forward(&self, z: &Tensor) -> Tensor {
        let mut h = self.mid_block.forward(&self.conv_in.forward(z));
        for block in &self.up_blocks {
            for resnet in &block.resnets {
                // Between blocks: a Ctrl-C ends a long VAE call here.
                diffgraph_sdk::interrupt::check();
                h = resnet.forward(&h);
            }
            if let Some(up) = &block.upsample {
                h = up.forward(&h);
            }
        }
        self.conv_out
            .forward(&self.conv_norm_out.forward(&h).silu())
    }
}
