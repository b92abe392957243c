//! Attention (diffusers `models/attention_processor.py`, `Attention` with
//! `AttnProcessor2_0`), the GEGLU feed-forward (`models/attention.py`
//! `FeedForward`, `models/activations.py` `GEGLU`) and BasicTransformerBlock
//! (`models/attention.py`, `norm_type` "layer_norm").
use super::params::params;
use crate::layers::{LayerNorm, Linear};
use crate::op_threads;
use crate::weights::Weights;
use tch::Tensor;

/// Multi-head attention: bias-free q/k/v projections, torch's
/// scaled_dot_product_attention (default scale 1/sqrt(head_dim)), output
/// projection with bias.
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
}

impl Attention {
    /// `context_dim`: the key/value input width (the query width for self-attention).
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        query_dim: i64,
        context_dim: i64,
        heads: i64,
        head_dim: i64,
    ) -> Self {
        let inner = heads * head_dim;
        let name = |s: &str| format!("{prefix}.{s}");
        Attention {
            to_q: Linear::load(w, &name("to_q"), query_dim, inner, false),
            to_k: Linear::load(w, &name("to_k"), context_dim, inner, false),
            to_v: Linear::load(w, &name("to_v"), context_dim, inner, false),
            to_out: Linear::load(w, &name("to_out.0"), inner, query_dim, true),
            heads,
        }
    }

    /// `x`: [batch, tokens, query_dim]; `context`: [batch, context tokens,
    /// context_dim], or `None` for self-attention.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Tensor {
        let context = context.unwrap_or(x);
        let batch = x.size()[0];
        let split = |t: Tensor| {
            let head_dim = t.size()[2] / self.heads;
            t.view([batch, -1, self.heads, head_dim]).transpose(1, 2)
        };
        let q = split(self.to_q.forward(x));
        let k = split(self.to_k.forward(context));
        let v = split(self.to_v.forward(context));
        let out = op_threads::attention(&q, &k, &v, false, None)
            .unwrap_or_else(|e| panic!("attention: {e}"));
        let out = out
            .transpose(1, 2)
            .reshape([batch, -1, q.size()[1] * q.size()[3]]);
        self.to_out.forward(&out)
    }
}

/// FeedForward with activation "geglu": proj to 2x inner, value * gelu(gate)
/// (exact erf GELU), then the output projection.
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn load(w: &mut Weights, prefix: &str, dim: i64) -> Self {
        let inner = dim * 4;
        FeedForward {
            proj: Linear::load(w, &format!("{prefix}.net.0.proj"), dim, inner * 2, true),
            out: Linear::load(w, &format!("{prefix}.net.2"), inner, dim, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.proj.forward(x);
        let parts = h.chunk(2, -1);
        // value * gelu(gate), the product taken in place on the fresh GELU output.
        let mut gated = parts[1].gelu("none");
        gated *= &parts[0];
        self.out.forward(&gated)
    }
}

/// LN -> self-attention (cross-attention when `only_cross_attention`) -> LN ->
/// cross-attention -> LN -> feed-forward, each with a residual connection.
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

impl BasicTransformerBlock {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        dim: i64,
        heads: i64,
        head_dim: i64,
        cross_dim: i64,
        only_cross: bool,
    ) -> Self {
        let name = |s: &str| format!("{prefix}.{s}");
        let attn1_context = if only_cross { cross_dim } else { dim };
        BasicTransformerBlock {
            norm1: LayerNorm::load(w, &name("norm1"), dim, 1e-5),
            attn1: Attention::load(w, &name("attn1"), dim, attn1_context, heads, head_dim),
            norm2: LayerNorm::load(w, &name("norm2"), dim, 1e-5),
            attn2: Attention::load(w, &name("attn2"), dim, cross_dim, heads, head_dim),
            norm3: LayerNorm::load(w, &name("norm3"), dim, 1e-5),
            ff: FeedForward::load(w, &name("ff"), dim),
            only_cross_attention: only_cross,
        }
    }

    /// Under no_grad: each residual is added in place to its branch's fresh output.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let attn1_context = self.only_cross_attention.then_some(context);
        let mut h = self.attn1.forward(&self.norm1.forward(x), attn1_context);
        h += x;
        let mut h2 = self.attn2.forward(&self.norm2.forward(&h), Some(context));
        h2 += &h;
        let mut out = self.ff.forward(&self.norm3.forward(&h2));
        out += &h2;
        out
    }
}

params!(Attention: to_q, to_k, to_v, to_out);
params!(FeedForward: proj, out);
params!(BasicTransformerBlock: norm1, attn1, norm2, attn2, norm3, ff);
