//! UNet2DModel, the denoiser of latent diffusion's own models (diffusers
//! `models/unets/unet_2d.py`: the unconditional LDMs of CompVis, e.g.
//! `ldm-celebahq-256`, and with `num_class_embeds` the class-conditional
//! variant): a U-Net with a timestep (+ class) embedding and pixel
//! self-attention, no text. Parameters are taken by their diffusers names.
pub mod blocks;
pub mod config;

use crate::layers::{Conv2d, GroupNorm};
use crate::unet::embeddings::{timestep_embedding, TimestepEmbedding};
use crate::unet::params::{fill_random, params};
use crate::unet::resnet::ResnetParams;
use crate::weights::Weights;
use blocks::{BlockSpec, DownBlock, MidBlock, UpBlock};
pub use config::UNet2DConfig;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub struct UNet2D {
    pub config: UNet2DConfig,
    pub kind: Kind,
    pub device: Device,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    class_embedding: Option<Tensor>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2D {
    /// Builds the model from `weights` (diffusers names, no prefix); fails
    /// with the config's problem or every missing, unexpected or mis-shaped
    /// weight at once.
    pub fn load(config: &UNet2DConfig, mut weights: Weights) -> Result<UNet2D, String> {
        let unet = UNet2D::build(config, &mut weights)?;
        weights.finish()?;
        Ok(unet)
    }

    /// Loads a diffusers `unet/` folder (config.json + safetensors).
    pub fn from_folder(dir: &Path, kind: Kind, device: Device) -> Result<UNet2D, String> {
        let config = UNet2DConfig::from_file(&dir.join("config.json"))?;
        let path = dir.join("diffusion_pytorch_model.safetensors");
        let tensors = Weights::read_safetensors(&path)?;
        UNet2D::load(
            &config,
            Weights::new(tensors, kind, device, &path.display().to_string()),
        )
    }

    /// A model of `config` with seeded random weights (std 1/sqrt(fan-in);
    /// 0.1 for 1-D parameters): for benchmarks.
    pub fn random(
        config: &UNet2DConfig,
        kind: Kind,
        device: Device,
        seed: i64,
    ) -> Result<UNet2D, String> {
        let mut unet = UNet2D::build(
            config,
            &mut Weights::new(BTreeMap::new(), kind, device, "random"),
        )?;
        fill_random(&mut unet, device, seed);
        Ok(unet)
    }

    fn build(c: &UNet2DConfig, w: &mut Weights) -> Result<UNet2D, String> {
        c.validate()?;
        let ch = &c.block_out_channels;
        let n = ch.len();
        let time_dim = c.time_embed_dim();
        let resnet = ResnetParams {
            groups: c.norm_num_groups,
            eps: c.norm_eps,
            temb_channels: time_dim,
            output_scale_factor: 1.0,
        };
        let is_attn = |t: &str| t.starts_with("Attn");
        let conv_in = Conv2d::load(w, "conv_in", c.in_channels, ch[0], 3, 1, 1);
        let time_embedding = TimestepEmbedding::load(w, "time_embedding", ch[0], time_dim, false);
        let class_embedding = c
            .num_class_embeds
            .map(|classes| w.take("class_embedding.weight", &[classes, time_dim]));

        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = ch[0];
        for (i, ty) in c.down_block_types.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = ch[i];
            let spec = BlockSpec {
                in_channels: in_ch,
                out_channels: out_ch,
                num_layers: c.layers_per_block,
                resnet,
                heads: is_attn(ty).then(|| c.heads(out_ch)),
            };
            let padding = (i + 1 < n).then_some(c.downsample_padding);
            down_blocks.push(DownBlock::load(
                w,
                &format!("down_blocks.{i}"),
                &spec,
                padding,
            ));
        }

        let last = ch[n - 1];
        let mid_block = c.mid_block_type.as_ref().map(|_| {
            let mid_resnet = ResnetParams {
                output_scale_factor: c.mid_block_scale_factor,
                ..resnet
            };
            let groups = c.attn_norm_num_groups.unwrap_or(c.norm_num_groups);
            let attention = c.add_attention.then(|| (c.heads(last), groups));
            MidBlock::load(w, "mid_block", last, mid_resnet, attention)
        });

        let mut up_blocks = Vec::with_capacity(n);
        let rev = |i: usize| ch[n - 1 - i];
        let mut out_ch = rev(0);
        for (i, ty) in c.up_block_types.iter().enumerate() {
            let prev = out_ch;
            out_ch = rev(i);
            let spec = BlockSpec {
                in_channels: rev((i + 1).min(n - 1)),
                out_channels: out_ch,
                num_layers: c.layers_per_block + 1,
                resnet,
                heads: is_attn(ty).then(|| c.heads(out_ch)),
            };
            up_blocks.push(UpBlock::load(
                w,
                &format!("up_blocks.{i}"),
                &spec,
                prev,
                i + 1 < n,
            ));
        }

        let conv_norm_out =
            GroupNorm::load(w, "conv_norm_out", c.norm_num_groups, ch[0], c.norm_eps);
        let conv_out = Conv2d::load(w, "conv_out", ch[0], c.out_channels, 3, 1, 1);
        Ok(UNet2D {
            config: c.clone(),
            kind: w.kind,
            device: w.device,
            conv_in,
            time_embedding,
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    /// The number of classes of a class-conditional model.
    pub fn num_classes(&self) -> Option<i64> {
        self.config.num_class_embeds
    }

    /// The model's output for `sample` [B, in_channels, H, W] at `timestep`
    /// (the same for the whole batch), with `class_labels` [B] (int64) for a
    /// class-conditional model. H and W must be multiples of
    /// 2^(blocks - 1), as in diffusers (whose skips would not line up).
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor, String> {
        let s = sample.size();
        let c = &self.config;
        let factor = 1i64 << (c.block_out_channels.len() - 1);
        if s.len() != 4 || s[1] != c.in_channels || s[0] < 1 || s[2] < 1 || s[3] < 1 {
            return Err(format!(
                "UNet2DModel: sample must be [batch, {}, height, width], got {s:?}",
                c.in_channels
            ));
        }
        if s[2] % factor != 0 || s[3] % factor != 0 {
            return Err(format!(
                "UNet2DModel: height and width must be multiples of {factor} (its {} down blocks), got {}x{}",
                c.block_out_channels.len(),
                s[2],
                s[3]
            ));
        }
        let labels = match (&self.class_embedding, class_labels) {
            (Some(table), Some(labels)) => {
                let classes = table.size()[0];
                let l = labels.size();
                if l != [s[0]] {
                    return Err(format!(
                        "UNet2DModel: class labels must be [{}], got {l:?}",
                        s[0]
                    ));
                }
                let labels = labels.to_kind(Kind::Int64);
                let (lo, hi) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
                if lo < 0 || hi >= classes {
                    return Err(format!(
                        "UNet2DModel: class labels must be in 0..{classes}, got {lo}..={hi}"
                    ));
                }
                Some(labels.to_device(self.device))
            }
            (Some(_), None) => {
                return Err("UNet2DModel: a class-conditional model needs class labels".into())
            }
            (None, Some(_)) => {
                return Err("UNet2DModel: an unconditional model takes no class labels".into())
            }
            (None, None) => None,
        };
        let _guard = tch::no_grad_guard();
        let sample = sample.to_device(self.device).to_kind(self.kind);
        Ok(self.run(&sample, timestep, labels.as_ref()))
    }

    fn run(&self, sample: &Tensor, timestep: f64, labels: Option<&Tensor>) -> Tensor {
        let c = &self.config;
        let batch = sample.size()[0];
        let sample = if c.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample.shallow_clone()
        };
        let t = Tensor::from_slice(&[timestep])
            .to_device(self.device)
            .expand([batch], false);
        let t_emb =
            timestep_embedding(&t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift);
        let mut emb = self.time_embedding.forward(&t_emb.to_kind(self.kind));
        if let (Some(table), Some(labels)) = (&self.class_embedding, labels) {
            emb += table.index_select(0, labels);
        }
        // Every resnet applies the nonlinearity to temb before its projection.
        let temb = emb.silu();

        let mut h = self.conv_in.forward(&sample);
        let mut skips = vec![h.shallow_clone()];
        for block in &self.down_blocks {
            h = block.forward(&h, &temb, &mut skips);
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward(&h, &temb);
        }
        for block in &self.up_blocks {
            debug_assert!(skips.len() >= block.num_resnets());
            h = block.forward(&h, &temb, &mut skips);
        }
        let h = self.conv_norm_out.forward(&h).silu();
        self.conv_out.forward(&h)
    }
}

params!(UNet2D: conv_in, time_embedding, class_embedding, down_blocks, mid_block, up_blocks, conv_norm_out, conv_out);
