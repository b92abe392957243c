//! ComfyUI's `BrownianTreeNoiseSampler` (`comfy/k_diffusion/sampling.py`:
//! `BrownianTreeNoiseSampler`, `BatchedBrownianTree`), the noise of the SDE
//! samplers (`dpmpp_sde`, `dpmpp_2m_sde`, `dpmpp_3m_sde`): the increment of
//! one Brownian motion over [sigma_next, sigma], scaled to unit variance.
//! The motion is torchsde's `BrownianTree` (`torchsde/_brownian/derived.py`),
//! a `BrownianInterval` (`torchsde/_brownian/brownian_interval.py`) with
//! `halfway_tree=True`, `tol=1e-6`, `pool_size=24`, no Lévy area:
//!
//! - times are rounded to 6 decimals (Python's `round(x, 6)`, since
//!   `ndigits = -int(log10(tol))`), and every interval splits at its rounded
//!   midpoint, so the tree is the dyadic tree of [t0, t1] and a value
//!   depends only on the entropy, t0, t1 and the query;
//! - a query [ta, tb] is the sum (left to right, float32) of the increments
//!   of the tree's nodes that cover it (`_loc`);
//! - the root's increment is `randn * sqrt(t1 - t0)` (unrounded times); a
//!   child's comes from its parent's by the Brownian bridge: left =
//!   W·l/h + sqrt(l·r/h)·randn, right = W − left, where l and r are the
//!   parent's halves and h its length (`_increment_and_space_time_levy_area`);
//! - each `randn` comes from a fresh CPU generator seeded with a word of
//!   numpy's `SeedSequence(entropy, spawn_key=(key, depth), pool_size=24)`,
//!   key = 2·parent key + (0 left, 1 right) ([`seed_sequence`]).
//!
//! torchsde's LRU cache and its search from the last queried node change
//! no value (nodes are determined by position), so they are left out: each
//! query walks down from the root, recomputing the nodes on its path.
pub mod seed_sequence;

use crate::noise::seeded_randn_as;
use diffgraph_diffusion::Result;
use diffgraph_sdk::tch::{Kind, Tensor};
use seed_sequence::SeedSequence;

/// torchsde `BrownianTree`'s defaults.
const POOL_SIZE: usize = 24;
const NDIGITS: usize = 6;

/// Python's `round(x, 6)`: the decimal correctly rounded (ties to even on
/// the exact binary value) read back as the nearest double. Rust's exact
/// fixed-precision formatting and parsing are both correctly rounded.
fn round6(x: f64) -> f64 {
    format!("{x:.NDIGITS$}").parse().unwrap_or(x)
}

/// A node of the dyadic tree: [start, end], its increment, its position.
struct Node {
    start: f64,
    end: f64,
    w: Tensor,
    key: u128,
    depth: u32,
}

/// torchsde's `BrownianTree(t0, zeros(shape), t1, entropy=seed)` queried
/// with intervals (the only use ComfyUI makes of it).
#[derive(Clone, Debug)]
pub struct BrownianTree {
    entropy: u128,
    t0: f64,
    t1: f64,
    shape: Vec<i64>,
    kind: Kind,
}

impl BrownianTree {
    /// A tree over [t0, t1] (t0 <= t1) for samples shaped `shape`.
    pub fn new(t0: f64, t1: f64, shape: &[i64], kind: Kind, entropy: u128) -> Result<BrownianTree> {
        if t0.partial_cmp(&t1).is_none_or(|o| o.is_gt()) {
            return Err(format!("a Brownian tree over [{t0}, {t1}] needs t0 <= t1").into());
        }
        Ok(BrownianTree {
            entropy,
            t0,
            t1,
            shape: shape.to_vec(),
            kind,
        })
    }

    fn randn(&self, seed: u32) -> Result<Tensor> {
        seeded_randn_as(i64::from(seed), &self.shape, self.kind)
    }

    fn root(&self) -> Result<Node> {
        let seeds = SeedSequence::new(self.entropy, &[], POOL_SIZE).generate_state(3);
        Ok(Node {
            start: round6(self.t0),
            end: round6(self.t1),
            w: self
                .randn(seeds[0])?
                .f_mul_scalar((self.t1 - self.t0).sqrt())?,
            key: 0,
            depth: 0,
        })
    }

    /// The two children of `node` (`_split_exact` at the rounded midpoint).
    fn children(&self, node: &Node) -> Result<(Node, Node)> {
        let mid = round6(0.5 * (node.end + node.start));
        let seed = SeedSequence::new(self.entropy, &[node.key, u128::from(node.depth)], POOL_SIZE)
            .generate_state(4)[0];
        let h_reciprocal = 1.0 / (node.end - node.start);
        let (left_diff, right_diff) = (mid - node.start, node.end - mid);
        let mean = node.w.f_mul_scalar(left_diff)?.f_mul_scalar(h_reciprocal)?;
        let var = left_diff * right_diff * h_reciprocal;
        let left_w = mean.f_add(&self.randn(seed)?.f_mul_scalar(var.sqrt())?)?;
        let key = node
            .key
            .checked_mul(2)
            .ok_or("the Brownian tree is too deep")?;
        let right_w = node.w.f_sub(&left_w)?;
        Ok((
            Node {
                start: node.start,
                end: mid,
                w: left_w,
                key,
                depth: node.depth + 1,
            },
            Node {
                start: mid,
                end: node.end,
                w: right_w,
                key: key + 1,
                depth: node.depth + 1,
            },
        ))
    }

    /// The nodes covering [ta, tb] in order (`_loc_inner`), appended to `out`.
    fn cover(&self, node: Node, ta: f64, tb: f64, out: &mut Vec<Tensor>) -> Result<()> {
        // An explicit stack: (node, ta, tb), left parts popped first.
        let mut stack = vec![(node, ta, tb)];
        while let Some((node, ta, tb)) = stack.pop() {
            if ta == node.start && tb == node.end {
                out.push(node.w);
                continue;
            }
            if node.depth > 120 {
                return Err(format!("the Brownian tree cannot resolve [{ta}, {tb}]").into());
            }
            let (left, right) = self.children(&node)?;
            let mid = left.end;
            if tb <= mid {
                stack.push((left, ta, tb));
            } else if ta >= mid {
                stack.push((right, ta, tb));
            } else {
                stack.push((right, mid, tb));
                stack.push((left, ta, mid));
            }
        }
        Ok(())
    }

    /// `BrownianInterval.__call__(ta, tb)`: the increment over [ta, tb]
    /// (clamped to [t0, t1]; zeros when ta == tb).
    pub fn increment(&self, ta: f64, tb: f64) -> Result<Tensor> {
        let root = self.root()?;
        let ta = ta.max(root.start).min(root.end);
        let tb = tb.max(root.start).min(root.end);
        if ta > tb {
            return Err(format!("Brownian query [{ta}, {tb}] must have ta <= tb").into());
        }
        if ta == tb {
            return Ok(root.w.f_zeros_like()?);
        }
        let mut parts = Vec::new();
        self.cover(root, round6(ta), round6(tb), &mut parts)?;
        let mut parts = parts.into_iter();
        let first = parts.next().ok_or("an empty Brownian cover")?;
        parts.try_fold(first, |acc, w| acc.f_add(&w).map_err(Into::into))
    }
}

/// `BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed, cpu=True)`
/// with the identity transform: [`Self::noise`] is
/// `tree(sigma, sigma_next) / sqrt(|sigma_next − sigma|)`.
#[derive(Clone, Debug)]
pub struct BrownianNoise {
    tree: BrownianTree,
    /// `BatchedBrownianTree.sign`: −1 when sigma_min is not below sigma_max.
    sign: i64,
}

impl BrownianNoise {
    /// The noise sampler of a run over `sigmas` (the tree spans the smallest
    /// positive sigma to the largest) for samples like `like`; `seed` is the
    /// sampler's seed, its 64 bits read as unsigned (ComfyUI's seeds are
    /// 0..2^64).
    pub fn new(sigmas: &[f32], like: &Tensor, seed: i64) -> Result<BrownianNoise> {
        let min = sigmas
            .iter()
            .copied()
            .filter(|s| *s > 0.0)
            .reduce(f32::min)
            .ok_or("the SDE samplers need a positive sigma")?;
        let max = sigmas.iter().copied().reduce(f32::max).ok_or("no sigmas")?;
        let (a, b, sign) = if min < max {
            (min, max, 1)
        } else {
            (max, min, -1)
        };
        let tree = BrownianTree::new(
            f64::from(a),
            f64::from(b),
            &like.size(),
            like.kind(),
            u128::from(seed as u64),
        )?;
        Ok(BrownianNoise { tree, sign })
    }

    /// The noise for the step from `sigma` to `sigma_next` (0-d float32
    /// tensors, as k-diffusion passes them), on `device`.
    pub fn noise(
        &self,
        sigma: &Tensor,
        sigma_next: &Tensor,
        device: diffgraph_sdk::tch::Device,
    ) -> Result<Tensor> {
        let (s, n) = (sigma.f_double_value(&[])?, sigma_next.f_double_value(&[])?);
        let (ta, tb, sign) = if s < n { (s, n, 1) } else { (n, s, -1) };
        let w = self
            .tree
            .increment(ta, tb)?
            .f_to_kind(Kind::Float)?
            .f_mul_scalar(self.sign * sign)?;
        let scale = sigma_next.f_sub(sigma)?.f_abs()?.f_sqrt()?;
        Ok(w.f_div(&scale)?.f_to_device(device)?)
    }
}
