//! guided-diffusion's `UNetModel` (`guided_diffusion/unet.py`): the ADM
//! denoiser. Built layer by layer in the reference's order so that every
//! state-dict name and shape is the reference's; the encoder half (input
//! blocks and middle block) is shared with the classifier
//! ([`super::classifier`]).
use super::blocks::{AttentionBlock, Layer, ResBlock, Resample, Sequential, TimeEmbed};
use super::config::Arch;
use crate::layers::{Conv2d, GroupNorm};
use crate::weights::Weights;
use tch::{Kind, Tensor};

/// The input blocks, the middle block and what the decoder (or the
/// classifier's pooling) needs to know about them.
pub struct Encoder {
    pub time_embed: TimeEmbed,
    pub input_blocks: Vec<Sequential>,
    pub middle_block: Sequential,
    /// Channels of each input block's output (the skip connections).
    pub chans: Vec<i64>,
    /// Channels and downsampling factor at the bottom.
    pub ch: i64,
    pub ds: i64,
    /// The torso's compute type: float32, or float16 / bfloat16 after
    /// [`Encoder::convert_torso`].
    pub torso: Kind,
}

fn res(w: &mut Weights, a: &Arch, p: &str, ch: i64, out: i64, r: Option<Resample>) -> Layer {
    let emb = 4 * a.model_channels;
    Layer::Res(ResBlock::load(
        w,
        p,
        ch,
        emb,
        out,
        a.use_scale_shift_norm,
        r,
    ))
}

fn attention(w: &mut Weights, a: &Arch, p: &str, ch: i64, heads: i64) -> Layer {
    Layer::Attention(AttentionBlock::load(
        w,
        p,
        ch,
        heads,
        a.num_head_channels,
        a.use_new_attention_order,
    ))
}

/// `int(mult * model_channels)` as the reference computes it.
pub fn width(a: &Arch, mult: f64) -> i64 {
    (mult * a.model_channels as f64) as i64
}

impl Encoder {
    /// unet.py `UNetModel.__init__` / `EncoderUNetModel.__init__` up to the middle block.
    pub fn load(w: &mut Weights, a: &Arch) -> Encoder {
        let time_embed = TimeEmbed::load(w, a.model_channels);
        let mut ch = width(a, a.channel_mult[0]);
        let mut blocks = vec![Sequential(vec![Layer::Conv(Conv2d::load(
            w,
            "input_blocks.0.0",
            a.in_channels,
            ch,
            3,
            1,
            1,
        ))])];
        let mut chans = vec![ch];
        let mut ds = 1;
        for (level, &mult) in a.channel_mult.iter().enumerate() {
            for _ in 0..a.num_res_blocks {
                let p = format!("input_blocks.{}", blocks.len());
                let out = width(a, mult);
                let mut layers = vec![res(w, a, &format!("{p}.0"), ch, out, None)];
                ch = out;
                if a.attention_ds.contains(&ds) {
                    layers.push(attention(w, a, &format!("{p}.1"), ch, a.num_heads));
                }
                blocks.push(Sequential(layers));
                chans.push(ch);
            }
            if level != a.channel_mult.len() - 1 {
                let p = format!("input_blocks.{}.0", blocks.len());
                let layer = if a.resblock_updown {
                    res(w, a, &p, ch, ch, Some(Resample::Down))
                } else {
                    Layer::DownConv(Conv2d::load(w, &format!("{p}.op"), ch, ch, 3, 2, 1))
                };
                blocks.push(Sequential(vec![layer]));
                chans.push(ch);
                ds *= 2;
            }
        }
        let middle_block = Sequential(vec![
            res(w, a, "middle_block.0", ch, ch, None),
            attention(w, a, "middle_block.1", ch, a.num_heads),
            res(w, a, "middle_block.2", ch, ch, None),
        ]);
        Encoder {
            time_embed,
            input_blocks: blocks,
            middle_block,
            chans,
            ch,
            ds,
            torso: Kind::Float,
        }
    }

    /// The input blocks and the middle block to `kind` (unet.py
    /// `convert_to_fp16`'s part shared by both models).
    pub(super) fn convert_torso(&mut self, kind: Kind) {
        for b in &mut self.input_blocks {
            b.convert(kind);
        }
        self.middle_block.convert(kind);
        self.torso = kind;
    }
}

/// The ADM U-Net: encoder, output blocks with skip connections, `out`.
pub struct AdmUNet {
    pub arch: Arch,
    encoder: Encoder,
    label_emb: Option<Tensor>,
    output_blocks: Vec<Sequential>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
}

impl AdmUNet {
    /// Takes every weight from `w` (call `w.finish()` after for the report).
    pub fn load(w: &mut Weights, arch: &Arch) -> AdmUNet {
        let a = arch;
        let encoder = Encoder::load(w, a);
        let label_emb = a
            .num_classes
            .map(|n| w.take("label_emb.weight", &[n, 4 * a.model_channels]));
        let mut chans = encoder.chans.clone();
        let (mut ch, mut ds) = (encoder.ch, encoder.ds);
        let heads_up = if a.num_heads_upsample == -1 {
            a.num_heads
        } else {
            a.num_heads_upsample
        };
        let mut output_blocks = Vec::new();
        for (level, &mult) in a.channel_mult.iter().enumerate().rev() {
            for i in 0..=a.num_res_blocks {
                let p = format!("output_blocks.{}", output_blocks.len());
                let ich = chans.pop().expect("one skip per input block");
                let out = width(a, mult);
                let mut layers = vec![res(w, a, &format!("{p}.0"), ch + ich, out, None)];
                ch = out;
                if a.attention_ds.contains(&ds) {
                    layers.push(attention(w, a, &format!("{p}.1"), ch, heads_up));
                }
                if level > 0 && i == a.num_res_blocks {
                    let q = format!("{p}.{}", layers.len());
                    layers.push(if a.resblock_updown {
                        res(w, a, &q, ch, ch, Some(Resample::Up))
                    } else {
                        Layer::UpConv(Conv2d::load(w, &format!("{q}.conv"), ch, ch, 3, 1, 1))
                    });
                    ds /= 2;
                }
                output_blocks.push(Sequential(layers));
            }
        }
        let input_ch = width(a, a.channel_mult[0]);
        AdmUNet {
            arch: a.clone(),
            label_emb,
            output_blocks,
            out_norm: super::blocks::norm(w, "out.0", ch),
            out_conv: Conv2d::load(w, "out.2", input_ch, a.out_channels, 3, 1, 1),
            encoder,
        }
    }

    /// unet.py `UNetModel.convert_to_fp16` (`use_fp16`) with `kind` Half (or
    /// BFloat16): the input, middle and output blocks' convolutions in
    /// `kind`; the time and label embeddings, every GroupNorm, the
    /// attention softmax and the `out` head stay float32 as in the reference.
    pub fn convert_torso(&mut self, kind: Kind) {
        self.encoder.convert_torso(kind);
        for b in &mut self.output_blocks {
            b.convert(kind);
        }
    }

    /// The torso's compute type.
    pub fn torso(&self) -> Kind {
        self.encoder.torso
    }

    /// unet.py `UNetModel.forward(x, timesteps, y)`: `t` [B] (the original
    /// timestep index, maybe rescaled), `y` [B] int64 class labels when the
    /// model is class-conditional.
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: Option<&Tensor>) -> Tensor {
        let mut emb = self.encoder.time_embed.forward(t);
        if let (Some(table), Some(y)) = (&self.label_emb, y) {
            emb += table.index_select(0, &y.to_kind(Kind::Int64));
        }
        let mut hs = Vec::with_capacity(self.encoder.input_blocks.len());
        // `h = x.type(self.dtype)`
        let mut h = x.to_kind(self.encoder.torso);
        for b in &self.encoder.input_blocks {
            // Between blocks: a Ctrl-C ends a long U-Net call here.
            diffgraph_sdk::interrupt::check();
            h = b.forward(&h, &emb);
            hs.push(h.shallow_clone());
        }
        h = self.encoder.middle_block.forward(&h, &emb);
        for b in &self.output_blocks {
            diffgraph_sdk::interrupt::check();
            let skip = hs.pop().expect("one skip per output block");
            h = b.forward(&Tensor::cat(&[h, skip], 1), &emb);
        }
        // `h = h.type(x.dtype)`, then `out` in float32
        let h = h.to_kind(self.out_conv.weight.kind());
        self.out_conv.forward(&self.out_norm.forward(&h).silu())
    }
}
