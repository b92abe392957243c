//! The layers of guided-diffusion's U-Nets (`guided_diffusion/unet.py`,
//! `nn.py`), loaded by the reference's state-dict names: the sinusoidal
//! timestep embedding, `ResBlock` (with AdaGN when `use_scale_shift_norm`,
//! and the up/down variants of `resblock_updown`), `AttentionBlock` with
//! both head orders, `Downsample`/`Upsample`, and `TimestepEmbedSequential`.
use crate::cpu_precision::{self, float32};
use crate::layers::{Conv2d, GroupNorm, Linear};
use crate::weights::Weights;
use tch::{Kind, Tensor};

/// nn.py `normalization`: GroupNorm32, 32 groups, computed in float32.
pub fn norm(w: &mut Weights, prefix: &str, channels: i64) -> GroupNorm {
    GroupNorm::load(w, prefix, 32, channels, 1e-5)
}

fn norm_f32(n: &GroupNorm, x: &Tensor) -> Tensor {
    n.forward(&x.to_kind(Kind::Float)).to_kind(x.kind())
}

/// nn.py `timestep_embedding`: [cos(t f), sin(t f)], f = exp(-ln(10000) i / half),
/// in float32 (the model gets the original timestep index, maybe rescaled).
pub fn timestep_embedding(t: &Tensor, dim: i64) -> Tensor {
    let half = dim / 2;
    let freqs =
        (Tensor::arange(half, (Kind::Float, t.device())) * (-(10000f64.ln())) / half as f64).exp();
    let args = t.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    let emb = Tensor::cat(&[args.cos(), args.sin()], -1);
    if dim % 2 == 1 {
        Tensor::cat(&[&emb, &emb.narrow(1, 0, 1).zeros_like()], -1)
    } else {
        emb
    }
}

/// A 1-D convolution of kernel 1 (`conv_nd(1, ...)`: qkv, proj_out, c_proj).
pub struct Conv1x1 {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1x1 {
    pub fn load(w: &mut Weights, prefix: &str, in_ch: i64, out_ch: i64) -> Conv1x1 {
        Conv1x1 {
            weight: w.take(&format!("{prefix}.weight"), &[out_ch, in_ch, 1]),
            bias: w.take(&format!("{prefix}.bias"), &[out_ch]),
        }
    }
    /// In float32 where [`cpu_precision::widened_kind`] says so.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let conv = |x: &Tensor, w: &Tensor, b: &Tensor| x.conv1d(w, Some(b), [1], [0], [1], 1);
        match cpu_precision::widened_kind(x, &self.weight) {
            Some(kind) => {
                conv(&float32(x), &float32(&self.weight), &float32(&self.bias)).to_kind(kind)
            }
            None => conv(x, &self.weight, &self.bias),
        }
    }
    fn convert(&mut self, kind: Kind) {
        self.weight = self.weight.to_kind(kind);
        self.bias = self.bias.to_kind(kind);
    }
}

/// fp16_util.py `convert_module_to_f16` for one 2-D convolution.
fn convert_conv(c: &mut Conv2d, kind: Kind) {
    c.weight = c.weight.to_kind(kind);
    c.bias = c.bias.as_ref().map(|b| b.to_kind(kind));
}

/// Resampling without a convolution (inside ResBlocks, and `conv_resample`
/// off): nearest 2x up, 2x2 average pooling down.
#[derive(Clone, Copy, PartialEq)]
pub enum Resample {
    Up,
    Down,
}

impl Resample {
    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Resample::Up => {
                let s = x.size();
                x.upsample_nearest2d([s[2] * 2, s[3] * 2], Some(2.0), Some(2.0))
            }
            Resample::Down => x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>),
        }
    }
}

/// unet.py `ResBlock` (use_conv false, as every guided-diffusion model builds it).
pub struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv2d,
    resample: Option<Resample>,
    emb: Linear,
    scale_shift: bool,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &mut Weights,
        p: &str,
        ch: i64,
        emb_ch: i64,
        out_ch: i64,
        scale_shift: bool,
        resample: Option<Resample>,
    ) -> ResBlock {
        ResBlock {
            in_norm: norm(w, &format!("{p}.in_layers.0"), ch),
            in_conv: Conv2d::load(w, &format!("{p}.in_layers.2"), ch, out_ch, 3, 1, 1),
            resample,
            emb: Linear::load(
                w,
                &format!("{p}.emb_layers.1"),
                emb_ch,
                if scale_shift { 2 * out_ch } else { out_ch },
                true,
            ),
            scale_shift,
            out_norm: norm(w, &format!("{p}.out_layers.0"), out_ch),
            out_conv: Conv2d::load(w, &format!("{p}.out_layers.3"), out_ch, out_ch, 3, 1, 1),
            skip: (out_ch != ch)
                .then(|| Conv2d::load(w, &format!("{p}.skip_connection"), ch, out_ch, 1, 1, 0)),
        }
    }

    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Tensor {
        let h = norm_f32(&self.in_norm, x).silu();
        let (h, x) = match self.resample {
            Some(r) => (r.apply(&h), r.apply(x)),
            None => (h, x.shallow_clone()),
        };
        let h = self.in_conv.forward(&h);
        let e = self.emb.forward(&emb.silu()).to_kind(h.kind());
        let e = e.unsqueeze(-1).unsqueeze(-1);
        let h = if self.scale_shift {
            let ss = e.chunk(2, 1);
            norm_f32(&self.out_norm, &h) * (1 + &ss[0]) + &ss[1]
        } else {
            norm_f32(&self.out_norm, &(h + e))
        };
        let h = self.out_conv.forward(&h.silu());
        match &self.skip {
            Some(s) => s.forward(&x) + h,
            None => x + h,
        }
    }

    /// The convolutions to `kind`; the norms and the embedding's Linear stay float32.
    fn convert(&mut self, kind: Kind) {
        convert_conv(&mut self.in_conv, kind);
        convert_conv(&mut self.out_conv, kind);
        if let Some(s) = &mut self.skip {
            convert_conv(s, kind);
        }
    }
}

/// QKV attention over [B, 3·H·c, T]: `QKVAttentionLegacy` splits heads
/// before q/k/v (`use_new_attention_order` false), `QKVAttention` after.
pub fn qkv_attention(qkv: &Tensor, heads: i64, new_order: bool) -> Tensor {
    let (b, width, len) = qkv.size3().expect("qkv is [B, 3HC, T]");
    let ch = width / (3 * heads);
    let scale = 1.0 / (ch as f64).sqrt().sqrt();
    let (q, k, v) = if new_order {
        let c = qkv.chunk(3, 1);
        let r = |t: &Tensor, s: f64| (t * s).view([b * heads, ch, len]);
        (
            r(&c[0], scale),
            r(&c[1], scale),
            c[2].reshape([b * heads, ch, len]),
        )
    } else {
        let c = qkv.reshape([b * heads, ch * 3, len]).split(ch, 1);
        (&c[0] * scale, &c[1] * scale, c[2].shallow_clone())
    };
    let weight = cpu_precision::einsum("bct,bcs->bts", &q, &k);
    let weight = weight
        .to_kind(Kind::Float)
        .softmax(-1, Kind::Float)
        .to_kind(weight.kind());
    cpu_precision::einsum("bts,bcs->bct", &weight, &v).reshape([b, -1, len])
}

/// unet.py `AttentionBlock`: norm, 1-D qkv, attention, zero-initialised proj_out.
pub struct AttentionBlock {
    norm: GroupNorm,
    qkv: Conv1x1,
    proj_out: Conv1x1,
    heads: i64,
    new_order: bool,
}

impl AttentionBlock {
    /// `num_head_channels` (when not -1) overrides `num_heads`.
    pub fn load(
        w: &mut Weights,
        p: &str,
        ch: i64,
        num_heads: i64,
        num_head_channels: i64,
        new_order: bool,
    ) -> AttentionBlock {
        AttentionBlock {
            norm: norm(w, &format!("{p}.norm"), ch),
            qkv: Conv1x1::load(w, &format!("{p}.qkv"), ch, 3 * ch),
            proj_out: Conv1x1::load(w, &format!("{p}.proj_out"), ch, ch),
            heads: if num_head_channels == -1 {
                num_heads
            } else {
                ch / num_head_channels
            },
            new_order,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let x = x.reshape([s[0], s[1], -1]);
        let qkv = self.qkv.forward(&norm_f32(&self.norm, &x));
        let h = self
            .proj_out
            .forward(&qkv_attention(&qkv, self.heads, self.new_order));
        (x + h).reshape(s.as_slice())
    }

    fn convert(&mut self, kind: Kind) {
        self.qkv.convert(kind);
        self.proj_out.convert(kind);
    }
}

/// One layer of a `TimestepEmbedSequential`.
pub enum Layer {
    Conv(Conv2d),
    Res(ResBlock),
    Attention(AttentionBlock),
    /// `Upsample(use_conv=True)`: nearest 2x then a 3x3 conv.
    UpConv(Conv2d),
    /// `Downsample(use_conv=True)`: a stride-2 3x3 conv.
    DownConv(Conv2d),
    /// `Upsample`/`Downsample` with `conv_resample` off.
    Resample(Resample),
}

/// unet.py `TimestepEmbedSequential`: layers in order, ResBlocks get `emb`.
pub struct Sequential(pub Vec<Layer>);

impl Sequential {
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for layer in &self.0 {
            h = match layer {
                Layer::Conv(c) | Layer::DownConv(c) => c.forward(&h),
                Layer::Res(r) => r.forward(&h, emb),
                Layer::Attention(a) => a.forward(&h),
                Layer::UpConv(c) => c.forward(&Resample::Up.apply(&h)),
                Layer::Resample(r) => r.apply(&h),
            };
        }
        h
    }

    /// fp16_util.py `convert_module_to_f16` applied to the block (what
    /// `UNetModel.convert_to_fp16` does to the torso): every Conv1d/Conv2d's
    /// weight and bias to `kind`; GroupNorm32 (computed in float32 and cast
    /// back, nn.py) and Linear layers keep float32.
    pub fn convert(&mut self, kind: Kind) {
        for layer in &mut self.0 {
            match layer {
                Layer::Conv(c) | Layer::DownConv(c) | Layer::UpConv(c) => convert_conv(c, kind),
                Layer::Res(r) => r.convert(kind),
                Layer::Attention(a) => a.convert(kind),
                Layer::Resample(_) => {}
            }
        }
    }
}

/// The time embedding MLP `time_embed`: Linear, SiLU, Linear.
pub struct TimeEmbed {
    l0: Linear,
    l2: Linear,
    model_channels: i64,
}

impl TimeEmbed {
    pub fn load(w: &mut Weights, model_channels: i64) -> TimeEmbed {
        let d = 4 * model_channels;
        TimeEmbed {
            l0: Linear::load(w, "time_embed.0", model_channels, d, true),
            l2: Linear::load(w, "time_embed.2", d, d, true),
            model_channels,
        }
    }
    pub fn forward(&self, t: &Tensor) -> Tensor {
        let e = timestep_embedding(t, self.model_channels).to_kind(self.l0.weight.kind());
        self.l2.forward(&self.l0.forward(&e).silu())
    }
}
