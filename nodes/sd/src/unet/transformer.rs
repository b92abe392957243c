//! Transformer2DModel over continuous inputs (diffusers
//! `models/transformers/transformer_2d.py`): GroupNorm (eps 1e-6), proj_in
//! (1x1 conv, or linear when `use_linear_projection`), BasicTransformerBlocks
//! over the flattened pixels, proj_out, residual.
use super::attention::BasicTransformerBlock;
use super::params::params;
use crate::layers::{Conv2d, GroupNorm, Linear};
use crate::weights::Weights;
use tch::Tensor;

/// The block-level settings of one Transformer2DModel.
#[derive(Debug, Clone, Copy)]
pub struct TransformerParams {
    pub heads: i64,
    pub cross_attention_dim: i64,
    pub num_layers: i64,
    pub norm_groups: i64,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
}

enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Proj,
    inner_dim: i64,
}

impl Transformer2DModel {
    /// As the SD blocks build it: `heads` heads of `channels / heads` each.
    pub fn load(w: &mut Weights, prefix: &str, channels: i64, p: TransformerParams) -> Self {
        let head_dim = channels / p.heads;
        let inner = p.heads * head_dim;
        let name = |s: &str| format!("{prefix}.{s}");
        let proj = |w: &mut Weights, n: &str, i: i64, o: i64| {
            if p.use_linear_projection {
                Proj::Linear(Linear::load(w, &name(n), i, o, true))
            } else {
                Proj::Conv(Conv2d::load(w, &name(n), i, o, 1, 1, 0))
            }
        };
        let norm = GroupNorm::load(w, &name("norm"), p.norm_groups, channels, 1e-6);
        let proj_in = proj(w, "proj_in", channels, inner);
        let blocks = (0..p.num_layers)
            .map(|i| {
                let prefix = name(&format!("transformer_blocks.{i}"));
                BasicTransformerBlock::load(
                    w,
                    &prefix,
                    inner,
                    p.heads,
                    head_dim,
                    p.cross_attention_dim,
                    p.only_cross_attention,
                )
            })
            .collect();
        let proj_out = proj(w, "proj_out", inner, channels);
        Transformer2DModel {
            norm,
            proj_in,
            blocks,
            proj_out,
            inner_dim: inner,
        }
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let s = x.size();
        let (batch, height, width) = (s[0], s[2], s[3]);
        let inner = self.inner_dim;
        let h = self.norm.forward(x);
        let to_tokens = |t: Tensor| {
            t.permute([0, 2, 3, 1])
                .reshape([batch, height * width, inner])
        };
        let mut h = match &self.proj_in {
            Proj::Conv(c) => to_tokens(c.forward(&h)),
            Proj::Linear(l) => l.forward(&to_tokens(h)),
        };
        for block in &self.blocks {
            h = block.forward(&h, context);
        }
        let to_image = |t: Tensor| {
            t.reshape([batch, height, width, inner])
                .permute([0, 3, 1, 2])
                .contiguous()
        };
        let mut h = match &self.proj_out {
            Proj::Conv(c) => c.forward(&to_image(h)),
            Proj::Linear(l) => to_image(l.forward(&h)),
        };
        h += x;
        h
    }
}

params!(Transformer2DModel: norm, proj_in, blocks, proj_out);

impl super::params::Params for Proj {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        match self {
            Proj::Conv(c) => c.visit(f),
            Proj::Linear(l) => l.visit(f),
        }
    }
}
