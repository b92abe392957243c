//! guided-diffusion's noisy classifier, `EncoderUNetModel`
//! (`guided_diffusion/unet.py`): the U-Net's encoder half and a pooling head
//! (`adaptive`, `attention` (`AttentionPool2d`), `spatial`, `spatial_v2`)
//! giving logits [B, K] of a noisy image at timestep t.
use super::blocks::{norm, qkv_attention, Conv1x1};
use super::config::{ClassifierArch, Pool};
use super::unet::Encoder;
use crate::layers::{GroupNorm, Linear};
use crate::weights::Weights;
use tch::{Kind, Tensor};

enum Head {
    /// out.0 norm, SiLU, adaptive average pool, out.3 1x1 conv, flatten.
    Adaptive {
        norm: GroupNorm,
        conv: Tensor,
        bias: Tensor,
    },
    /// out.0 norm, SiLU, out.2 `AttentionPool2d` (CLIP's pooling).
    Attention {
        norm: GroupNorm,
        positional: Tensor,
        qkv: Conv1x1,
        c_proj: Conv1x1,
        heads: i64,
    },
    /// Every block's spatial mean, concatenated; out.0 Linear(·, 2048),
    /// ReLU, out.2 Linear (`spatial`) or out.1 GroupNorm, SiLU, out.3 (`spatial_v2`).
    Spatial {
        l1: Linear,
        norm: Option<GroupNorm>,
        l2: Linear,
    },
}

pub struct AdmClassifier {
    pub arch: ClassifierArch,
    encoder: Encoder,
    head: Head,
}

impl AdmClassifier {
    pub fn load(w: &mut Weights, arch: &ClassifierArch) -> AdmClassifier {
        let a = &arch.arch;
        let encoder = Encoder::load(w, a);
        let (ch, k) = (encoder.ch, a.out_channels);
        let features: i64 = encoder.chans.iter().sum::<i64>() + ch;
        let head = match arch.pool {
            Pool::Adaptive => Head::Adaptive {
                norm: norm(w, "out.0", ch),
                conv: w.take("out.3.weight", &[k, ch, 1, 1]),
                bias: w.take("out.3.bias", &[k]),
            },
            Pool::Attention => {
                let side = a.image_size / encoder.ds;
                Head::Attention {
                    norm: norm(w, "out.0", ch),
                    positional: w.take("out.2.positional_embedding", &[ch, side * side + 1]),
                    qkv: Conv1x1::load(w, "out.2.qkv_proj", ch, 3 * ch),
                    c_proj: Conv1x1::load(w, "out.2.c_proj", ch, k),
                    heads: ch / a.num_head_channels,
                }
            }
            Pool::Spatial => Head::Spatial {
                l1: Linear::load(w, "out.0", features, 2048, true),
                norm: None,
                l2: Linear::load(w, "out.2", 2048, k, true),
            },
            Pool::SpatialV2 => Head::Spatial {
                l1: Linear::load(w, "out.0", features, 2048, true),
                norm: Some(norm(w, "out.1", 2048)),
                l2: Linear::load(w, "out.3", 2048, k, true),
            },
        };
        AdmClassifier {
            arch: arch.clone(),
            encoder,
            head,
        }
    }

    /// unet.py `EncoderUNetModel.convert_to_fp16` (`classifier_use_fp16`)
    /// with `kind` Half (or BFloat16): the input and middle blocks'
    /// convolutions in `kind`; the embedding, norms and the pooling head
    /// (`out`) stay float32.
    pub fn convert_torso(&mut self, kind: Kind) {
        self.encoder.convert_torso(kind);
    }

    /// The torso's compute type.
    pub fn torso(&self) -> Kind {
        self.encoder.torso
    }

    /// unet.py `EncoderUNetModel.forward(x, timesteps)`: logits [B, K].
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let emb = self.encoder.time_embed.forward(t);
        let spatial = matches!(self.head, Head::Spatial { .. });
        let mut means = Vec::new();
        // `h = x.type(self.dtype)`; every mean and the head in float32 (`h.type(x.dtype)`)
        let mut h = x.to_kind(self.encoder.torso);
        let mean = |h: &Tensor| {
            h.to_kind(Kind::Float)
                .mean_dim([2i64, 3].as_slice(), false, Kind::Float)
        };
        for b in &self.encoder.input_blocks {
            h = b.forward(&h, &emb);
            if spatial {
                means.push(mean(&h));
            }
        }
        h = self.encoder.middle_block.forward(&h, &emb);
        let f32norm = |n: &GroupNorm, t: &Tensor| n.forward(&t.to_kind(Kind::Float));
        let h = h.to_kind(Kind::Float);
        match &self.head {
            Head::Adaptive { norm, conv, bias } => f32norm(norm, &h)
                .silu()
                .adaptive_avg_pool2d([1, 1])
                .conv2d(conv, Some(bias), [1, 1], [0, 0], [1, 1], 1)
                .flatten(1, -1),
            Head::Attention {
                norm,
                positional,
                qkv,
                c_proj,
                heads,
            } => {
                let x = f32norm(norm, &h).silu();
                let (b, c) = (x.size()[0], x.size()[1]);
                let x = x.reshape([b, c, -1]);
                let x = Tensor::cat(&[x.mean_dim(-1, true, Kind::Float), x], -1);
                let x = x + positional.unsqueeze(0).to_kind(Kind::Float);
                let a = qkv_attention(&qkv.forward(&x), *heads, true);
                c_proj.forward(&a).select(2, 0)
            }
            Head::Spatial { l1, norm, l2 } => {
                means.push(mean(&h));
                let z = l1.forward(&Tensor::cat(&means, -1));
                let z = match norm {
                    Some(n) => n.forward(&z).silu(),
                    None => z.relu(),
                };
                l2.forward(&z)
            }
        }
    }
}
