//! UNet2DConditionModel as used by Stable Diffusion 1.x and 2.x, following
//! diffusers `models/unets/unet_2d_condition.py` (construction in `__init__`,
//! evaluation in `forward`). Parameters are taken by their diffusers names.
pub mod added;
pub mod attention;
pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod params;
pub mod resnet;
pub mod transformer;

use crate::layers::{Conv2d, GroupNorm};
use crate::weights::Weights;
use added::AddEmbedding;
pub use added::Added;
use blocks::{BlockSpec, DownBlock, MidBlock, UpBlock};
pub use config::{OneOrMany, UNetConfig};
use embeddings::{timestep_embedding_with, timestep_freqs, TimestepEmbedding};
use params::params;
use resnet::ResnetParams;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};
use transformer::TransformerParams;

/// The timestep argument of [`UNet::forward`]: a number (the same for the
/// whole batch) or a tensor (0-d, [1] or [batch]; any dtype).
pub enum Timestep<'a> {
    Scalar(f64),
    Tensor(&'a Tensor),
}

impl From<f64> for Timestep<'_> {
    fn from(t: f64) -> Self {
        Timestep::Scalar(t)
    }
}

impl From<i64> for Timestep<'_> {
    fn from(t: i64) -> Self {
        Timestep::Scalar(t as f64)
    }
}

impl<'a> From<&'a Tensor> for Timestep<'a> {
    fn from(t: &'a Tensor) -> Self {
        Timestep::Tensor(t)
    }
}

pub struct UNet {
    pub config: UNetConfig,
    pub kind: Kind,
    pub device: Device,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    /// SDXL's `text_time` added conditioning.
    add_embedding: Option<AddEmbedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    num_upsamplers: u32,
    cross_attention_dim: i64,
    /// The sinusoidal timestep embedding's frequencies, made once at load.
    time_freqs: Tensor,
    /// Every parameter by its diffusers name, sharing storage with the
    /// layers' tensors: what LoRA patches in place ([`crate::lora`]).
    pub params: BTreeMap<String, Tensor>,
}

impl UNet {
    /// Builds the U-Net from `weights` (diffusers parameter names, no
    /// prefix), computing in `weights.kind` on `weights.device`. Fails with
    /// the config's problem, or with every missing, unexpected or wrongly
    /// shaped weight at once.
    pub fn load(config: &UNetConfig, mut weights: Weights) -> Result<UNet, String> {
        let mut unet = UNet::build(config, &mut weights)?;
        unet.params = weights.params();
        weights.finish()?;
        Ok(unet)
    }

    /// A U-Net of `config` with random weights (normal, std 1/sqrt(fan-in);
    /// 0.1 for 1-D parameters), seeded: for benchmarks and tests.
    pub fn random(
        config: &UNetConfig,
        kind: Kind,
        device: Device,
        seed: i64,
    ) -> Result<UNet, String> {
        let mut w = Weights::new(BTreeMap::new(), kind, device, "random");
        let mut unet = UNet::build(config, &mut w)?;
        unet.params = w.params();
        params::fill_random(&mut unet, device, seed);
        Ok(unet)
    }

    /// Builds the model, taking every parameter from `w` (zeros where missing).
    fn build(config: &UNetConfig, w: &mut Weights) -> Result<UNet, String> {
        let c = config;
        let plan = c.plan()?;
        let n = c.block_out_channels.len();
        let ch = &c.block_out_channels;
        let groups = c.norm_num_groups.unwrap_or(32);
        let time_dim = c.time_embed_dim();
        let resnet = ResnetParams {
            groups,
            eps: c.norm_eps,
            temb_channels: time_dim,
            output_scale_factor: 1.0,
        };
        let tparams = |i: usize, only_cross: bool| TransformerParams {
            heads: plan.heads[i],
            cross_attention_dim: plan.cross_attention_dim[i],
            num_layers: 1,
            norm_groups: groups,
            use_linear_projection: c.use_linear_projection,
            only_cross_attention: only_cross,
        };
        let is_cross = |t: &str| {
            t.strip_prefix("UNetRes")
                .unwrap_or(t)
                .starts_with("CrossAttn")
        };

        let ki = c.conv_in_kernel;
        let conv_in = Conv2d::load(w, "conv_in", c.in_channels, ch[0], ki, 1, (ki - 1) / 2);
        let time_embedding = TimestepEmbedding::load(
            w,
            "time_embedding",
            ch[0],
            time_dim,
            c.timestep_post_act.is_some(),
        );
        let add_embedding = plan.text_time.map(|(add_dim, in_dim)| {
            AddEmbedding::load(
                w,
                add_dim,
                in_dim,
                time_dim,
                c.flip_sin_to_cos,
                c.freq_shift,
            )
        });

        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = ch[0];
        for (i, ty) in c.down_block_types.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = ch[i];
            let spec = BlockSpec {
                in_channels: in_ch,
                out_channels: out_ch,
                num_layers: plan.layers_per_block[i],
                resnet,
                attention: is_cross(ty).then(|| {
                    (
                        tparams(i, plan.only_cross_attention[i]),
                        &plan.down_transformer_layers[i][..],
                    )
                }),
            };
            let padding = (i + 1 < n).then_some(c.downsample_padding);
            down_blocks.push(DownBlock::load(
                w,
                &format!("down_blocks.{i}"),
                &spec,
                padding,
            )?);
        }

        let mid_block = c.mid_block_type.as_ref().map(|_| {
            let mid_resnet = ResnetParams {
                output_scale_factor: c.mid_block_scale_factor,
                ..resnet
            };
            // The mid block's transformers never use only_cross_attention.
            MidBlock::load(
                w,
                "mid_block",
                ch[n - 1],
                mid_resnet,
                tparams(n - 1, false),
                &[plan.mid_transformer_layers],
            )
        });

        let mut up_blocks = Vec::with_capacity(n);
        let rev = |v: &[i64], i: usize| v[n - 1 - i];
        let mut out_ch = rev(ch, 0);
        for (i, ty) in c.up_block_types.iter().enumerate() {
            let prev = out_ch;
            out_ch = rev(ch, i);
            let in_ch = rev(ch, (i + 1).min(n - 1));
            let j = n - 1 - i; // the matching down block's per-block settings
            let spec = BlockSpec {
                in_channels: in_ch,
                out_channels: out_ch,
                num_layers: rev(&plan.layers_per_block, i) + 1,
                resnet,
                attention: is_cross(ty).then(|| {
                    (
                        tparams(j, plan.only_cross_attention[j]),
                        &plan.up_transformer_layers[i][..],
                    )
                }),
            };
            up_blocks.push(UpBlock::load(
                w,
                &format!("up_blocks.{i}"),
                &spec,
                prev,
                i + 1 < n,
            )?);
        }

        let conv_norm_out = GroupNorm::load(w, "conv_norm_out", groups, ch[0], c.norm_eps);
        let ko = c.conv_out_kernel;
        let conv_out = Conv2d::load(w, "conv_out", ch[0], c.out_channels, ko, 1, (ko - 1) / 2);
        let (kind, device) = (w.kind, w.device);
        let cross_attention_dim = plan.cross_attention_dim[0];
        let time_freqs = timestep_freqs(c.block_out_channels[0], c.freq_shift, device);
        Ok(UNet {
            config: config.clone(),
            kind,
            device,
            conv_in,
            time_embedding,
            add_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            num_upsamplers: (n - 1) as u32,
            cross_attention_dim,
            time_freqs,
            params: BTreeMap::new(),
        })
    }

    /// Loads a diffusers `unet/` folder: config.json and
    /// diffusion_pytorch_model.safetensors (weights as stored, converted to `kind`).
    pub fn from_folder(dir: &Path, kind: Kind, device: Device) -> Result<UNet, String> {
        let config = UNetConfig::from_file(&dir.join("config.json"))?;
        let path = dir.join("diffusion_pytorch_model.safetensors");
        let tensors = Weights::read_safetensors(&path)?;
        UNet::load(
            &config,
            Weights::new(tensors, kind, device, &path.display().to_string()),
        )
    }

    /// The noise (or v) prediction for `sample` [batch, in_channels, h, w] at
    /// `timestep`, conditioned on `encoder_hidden_states` [batch, tokens,
    /// cross_attention_dim]. Inputs are moved to the model's device and dtype.
    /// Panics on inputs of the wrong shape; see [`UNet::try_forward`].
    pub fn forward<'a>(
        &self,
        sample: &Tensor,
        timestep: impl Into<Timestep<'a>>,
        encoder_hidden_states: &Tensor,
    ) -> Tensor {
        self.try_forward(sample, timestep, encoder_hidden_states)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The width of the `encoder_hidden_states` it takes.
    pub fn cross_attention_dim(&self) -> i64 {
        self.cross_attention_dim
    }

    /// Whether the model takes SDXL's added conditioning (pooled text
    /// embedding and time ids).
    pub fn takes_added(&self) -> bool {
        self.add_embedding.is_some()
    }

    /// [`UNet::forward`], with inputs of the wrong shape reported as errors.
    pub fn try_forward<'a>(
        &self,
        sample: &Tensor,
        timestep: impl Into<Timestep<'a>>,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor, String> {
        self.try_forward_added(sample, timestep, encoder_hidden_states, None)
    }

    /// [`UNet::try_forward`] with SDXL's added conditioning (diffusers'
    /// `added_cond_kwargs`), which a `text_time` model requires and any
    /// other refuses.
    pub fn try_forward_added<'a>(
        &self,
        sample: &Tensor,
        timestep: impl Into<Timestep<'a>>,
        encoder_hidden_states: &Tensor,
        added: Option<&Added>,
    ) -> Result<Tensor, String> {
        let timestep = timestep.into();
        self.check_inputs(sample, &timestep, encoder_hidden_states)?;
        match (&self.add_embedding, added) {
            (Some(a), Some(added)) => a.check(added, sample.size()[0])?,
            (Some(_), None) => {
                return Err(
                    "unet: this U-Net (addition_embed_type text_time, SDXL) needs the pooled text \
                            embedding and the time ids"
                        .into(),
                )
            }
            (None, Some(_)) => {
                return Err(
                    "unet: this U-Net takes no pooled text embedding or time ids (not SDXL)".into(),
                )
            }
            (None, None) => {}
        }
        let _guard = tch::no_grad_guard();
        let sample = sample.to_device(self.device).to_kind(self.kind);
        let context = encoder_hidden_states
            .to_device(self.device)
            .to_kind(self.kind);
        Ok(self.run(&sample, &timestep, &context, added))
    }

    fn check_inputs(
        &self,
        sample: &Tensor,
        timestep: &Timestep,
        context: &Tensor,
    ) -> Result<(), String> {
        let s = sample.size();
        if s.len() != 4 || s[1] != self.config.in_channels {
            return Err(format!(
                "unet: sample must be [batch, {}, height, width], got {s:?}",
                self.config.in_channels
            ));
        }
        let e = context.size();
        if e.len() != 3 || e[0] != s[0] || e[2] != self.cross_attention_dim {
            return Err(format!(
                "unet: encoder_hidden_states must be [{}, tokens, {}] for a sample of batch {}, got {e:?}",
                s[0], self.cross_attention_dim, s[0]
            ));
        }
        if let Timestep::Tensor(t) = timestep {
            let n = t.numel() as i64;
            if t.dim() > 1 || (n != 1 && n != s[0]) {
                return Err(format!(
                    "unet: timestep must be a scalar, [1] or [{}], got {:?}",
                    s[0],
                    t.size()
                ));
            }
        }
        Ok(())
    }

    /// The time embedding: sinusoidal in float32, cast to the compute dtype,
    /// then TimestepEmbedding (diffusers `get_time_embed` + `time_embedding`),
    /// plus the added conditioning's embedding (`get_aug_embed`) before the
    /// optional activation.
    fn time_embed(&self, timestep: &Timestep, batch: i64, added: Option<&Added>) -> Tensor {
        let t = match timestep {
            // diffusers wraps a Python float in a float64 tensor (int64 for an
            // int), then casts it to float32: the same rounding as `as f32`.
            Timestep::Scalar(v) => Tensor::from_slice(&[*v as f32]).to_device(self.device),
            Timestep::Tensor(t) => t.to_device(self.device).reshape([-1]),
        };
        let t = t.expand([batch], false);
        let c = &self.config;
        let t_emb = timestep_embedding_with(
            &t,
            &self.time_freqs,
            c.block_out_channels[0],
            c.flip_sin_to_cos,
        );
        let mut emb = self.time_embedding.forward(&t_emb.to_kind(self.kind));
        if let (Some(a), Some(added)) = (&self.add_embedding, added) {
            emb += a.forward(added, self.kind);
        }
        if c.time_embedding_act_fn.is_some() {
            let _ = emb.silu_();
        }
        emb
    }

    fn run(
        &self,
        sample: &Tensor,
        timestep: &Timestep,
        context: &Tensor,
        added: Option<&Added>,
    ) -> Tensor {
        let size = sample.size();
        let factor = 1i64 << self.num_upsamplers;
        let forward_upsample_size = size[2] % factor != 0 || size[3] % factor != 0;
        let sample = if self.config.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample.shallow_clone()
        };

        let mut temb = self.time_embed(timestep, size[0], added);
        // Every resnet applies the nonlinearity to temb before its projection.
        if !self.config.resnet_skip_time_act {
            let _ = temb.silu_();
        }

        let mut h = self.conv_in.forward(&sample);
        let mut skips = vec![h.shallow_clone()];
        for block in &self.down_blocks {
            // Between blocks: a Ctrl-C ends a long U-Net call here.
            diffgraph_sdk::interrupt::check();
            h = block.forward(&h, &temb, context, &mut skips);
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward(&h, &temb, context);
        }
        let last = self.up_blocks.len() - 1;
        for (i, block) in self.up_blocks.iter().enumerate() {
            diffgraph_sdk::interrupt::check();
            // diffusers' forward_upsample_size: upsample to the size of the
            // skip the next block will concatenate.
            let upsample_size = (i < last && forward_upsample_size).then(|| {
                let remaining = skips.len() - block.num_resnets();
                let s = skips[remaining - 1].size();
                (s[2], s[3])
            });
            h = block.forward(&h, &temb, context, &mut skips, upsample_size);
        }
        let h = self.conv_norm_out.forward(&h).silu_();
        self.conv_out.forward(&h)
    }
}

params!(UNet: conv_in, time_embedding, add_embedding, down_blocks, mid_block, up_blocks, conv_norm_out, conv_out);
