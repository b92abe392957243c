//! SDXL's added conditioning (`addition_embed_type = "text_time"`): the
//! pooled text embedding and the `add_time_ids` (original size, crop
//! top-left, target size; the refiner's aesthetic score in place of the
//! target size), embedded and added to the timestep embedding. diffusers
//! `models/unets/unet_2d_condition.py`: `add_time_proj` (a `Timesteps` of
//! `addition_time_embed_dim`), `add_embedding` (a `TimestepEmbedding` from
//! `projection_class_embeddings_input_dim` to the time embedding width) and
//! `get_aug_embed` for `text_time`.
use super::embeddings::{timestep_embedding, TimestepEmbedding};
use super::params::params;
use crate::weights::Weights;
use tch::{Kind, Tensor};

/// The pooled text embedding [B, P] and time ids [B, N] of one call.
pub struct Added<'a> {
    pub text_embeds: &'a Tensor,
    pub time_ids: &'a Tensor,
}

/// `add_time_proj` + `add_embedding`.
pub struct AddEmbedding {
    /// `addition_time_embed_dim`: the sinusoidal width per time id.
    time_dim: i64,
    /// `projection_class_embeddings_input_dim` = P + N * time_dim.
    in_dim: i64,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    embedding: TimestepEmbedding,
}

impl AddEmbedding {
    pub fn load(
        w: &mut Weights,
        time_dim: i64,
        in_dim: i64,
        time_embed_dim: i64,
        flip_sin_to_cos: bool,
        freq_shift: f64,
    ) -> AddEmbedding {
        AddEmbedding {
            time_dim,
            in_dim,
            flip_sin_to_cos,
            freq_shift,
            embedding: TimestepEmbedding::load(w, "add_embedding", in_dim, time_embed_dim, false),
        }
    }

    /// Checks the shapes against the embedding's input width, so that a
    /// base model's time ids given to a refiner (6 vs 5 ids) or a pooled
    /// embedding of the wrong encoder is an error, not a libtorch abort.
    pub fn check(&self, added: &Added, batch: i64) -> Result<(), String> {
        let (p, n) = (added.text_embeds.size(), added.time_ids.size());
        if p.len() != 2 || p[0] != batch || n.len() != 2 || n[0] != batch {
            return Err(format!(
                "unet: the pooled text embedding and time ids must be [{batch}, P] and [{batch}, N], got {p:?} and {n:?}"
            ));
        }
        if p[1] + n[1] * self.time_dim != self.in_dim {
            return Err(format!(
                "unet: a pooled embedding of {} and {} time ids give {} features, the model's add_embedding takes {} \
                 ({} time ids: {}) — is this the base model's conditioning given to the refiner, or the other way?",
                p[1],
                n[1],
                p[1] + n[1] * self.time_dim,
                self.in_dim,
                (self.in_dim - p[1]) / self.time_dim,
                if (self.in_dim - p[1]) / self.time_dim == 5 {
                    "original size, crop top-left, aesthetic score"
                } else {
                    "original size, crop top-left, target size"
                }
            ));
        }
        Ok(())
    }

    /// `aug_emb` in `kind`: the time ids' sinusoidal embeddings (float32, as
    /// `get_timestep_embedding`), flattened per sample after the pooled
    /// embedding, through `add_embedding`.
    pub fn forward(&self, added: &Added, kind: Kind) -> Tensor {
        let ids = added.time_ids;
        let batch = ids.size()[0];
        let device = self.embedding_device();
        let time = timestep_embedding(
            &ids.to_device(device).flatten(0, -1),
            self.time_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
        )
        .reshape([batch, -1]);
        let text = added.text_embeds.to_device(device);
        // diffusers: concat([text_embeds, time_embeds]).to(emb.dtype)
        let x = Tensor::cat(&[text.to_kind(time.kind()), time], -1).to_kind(kind);
        self.embedding.forward(&x)
    }

    fn embedding_device(&self) -> tch::Device {
        self.embedding.device()
    }
}

params!(AddEmbedding: embedding);
