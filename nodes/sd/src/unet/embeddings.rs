//! Timestep embeddings, following diffusers `models/embeddings.py`
//! (`get_timestep_embedding`, `Timesteps`, `TimestepEmbedding`).
use super::params::params;
use crate::layers::Linear;
use crate::weights::Weights;
use tch::{Kind, Tensor};

/// Sinusoidal embedding of a 1-D tensor of (possibly fractional) timesteps,
/// always computed in float32 like diffusers' `get_timestep_embedding` with
/// `scale` 1 and `max_period` 10000.
pub fn timestep_embedding(
    timesteps: &Tensor,
    dim: i64,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
) -> Tensor {
    let freqs = timestep_freqs(dim, downscale_freq_shift, timesteps.device());
    timestep_embedding_with(timesteps, &freqs, dim, flip_sin_to_cos)
}

/// The frequencies of [`timestep_embedding`], [1, dim / 2] float32: constant
/// for a model, so the U-Net computes them once at load instead of four ops
/// per call (diffusers recomputes them on every call).
pub fn timestep_freqs(dim: i64, downscale_freq_shift: f64, device: tch::Device) -> Tensor {
    let half = dim / 2;
    let exponent = Tensor::arange(half, (Kind::Float, device)) * (-(10000f64.ln()));
    let exponent = exponent / (half as f64 - downscale_freq_shift);
    exponent.exp().unsqueeze(0)
}

/// [`timestep_embedding`] with precomputed [`timestep_freqs`].
pub fn timestep_embedding_with(
    timesteps: &Tensor,
    freqs: &Tensor,
    dim: i64,
    flip_sin_to_cos: bool,
) -> Tensor {
    let emb = timesteps.to_kind(Kind::Float).unsqueeze(1) * freqs;
    let (sin, cos) = (emb.sin(), emb.cos());
    let emb = if flip_sin_to_cos {
        Tensor::cat(&[cos, sin], -1)
    } else {
        Tensor::cat(&[sin, cos], -1)
    };
    if dim % 2 == 1 {
        emb.constant_pad_nd([0, 1, 0, 0])
    } else {
        emb
    }
}

/// `TimestepEmbedding`: linear_1, SiLU, linear_2 (and an optional SiLU
/// `post_act`, from the U-Net's `timestep_post_act`).
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    post_act: bool,
}

impl TimestepEmbedding {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        in_dim: i64,
        time_embed_dim: i64,
        post_act: bool,
    ) -> Self {
        TimestepEmbedding {
            linear_1: Linear::load(
                w,
                &format!("{prefix}.linear_1"),
                in_dim,
                time_embed_dim,
                true,
            ),
            linear_2: Linear::load(
                w,
                &format!("{prefix}.linear_2"),
                time_embed_dim,
                time_embed_dim,
                true,
            ),
            post_act,
        }
    }

    /// Where the weights are.
    pub fn device(&self) -> tch::Device {
        self.linear_1.weight.device()
    }

    /// Under no_grad (the U-Net's forward): the activations are applied in
    /// place on fresh outputs.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = self.linear_2.forward(&self.linear_1.forward(x).silu_());
        if self.post_act {
            let _ = x.silu_();
        }
        x
    }
}

params!(TimestepEmbedding: linear_1, linear_2);
