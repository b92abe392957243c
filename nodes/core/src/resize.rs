//! Resizing [B,C,H,W] tensors (images and latents) with ComfyUI's methods,
//! size rules and centre crop (ComfyUI `comfy/utils.py` `common_upscale`;
//! the size rules of `nodes.py` `LatentUpscale`, `LatentUpscaleBy`,
//! `ImageScale`, `ImageScaleBy`). The interpolating methods are libtorch's
//! own kernels, the ones `torch.nn.functional.interpolate` calls, so results
//! equal PyTorch's bit for bit; `bislerp` and `lanczos` are in their modules.
use crate::bislerp::bislerp;
use crate::lanczos::lanczos;
use diffgraph_sdk::prelude::*;

/// ComfyUI's `upscale_method`s (LatentUpscale offers bislerp, ImageScale lanczos).
pub const METHODS: &[&str] = &[
    "nearest-exact",
    "bilinear",
    "area",
    "bicubic",
    "bislerp",
    "lanczos",
];
/// ComfyUI's `crop` choices.
pub const CROPS: &[&str] = &["disabled", "center"];

pub struct Resize;

impl Node for Resize {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Resize", "image")
            .description(
                "Resizes a [B,C,H,W] image or latent as ComfyUI's common_upscale: optional centre crop \
                 to the new aspect ratio, then nearest-exact, bilinear, area, bicubic (libtorch's \
                 interpolate kernels), bislerp (spherical bilinear) or lanczos (Pillow's, through \
                 8-bit pixels). The size: `scale_by` > 0 gives round(side * scale_by) (round half to \
                 even, as Python); else `width`/`height`, where 0 keeps the aspect ratio from the other \
                 (both 0: unchanged), each at least `min_size`, then divided (floor) by `divisor` \
                 (ComfyUI's LatentUpscale: pixel sizes, min 64, divisor 8).",
            )
            .input(InputSpec::tensor("x").doc("[B,C,H,W]"))
            .input(InputSpec::string("method").default("nearest-exact").choices(METHODS))
            .input(InputSpec::string("crop").default("disabled").choices(CROPS))
            .input(InputSpec::int("width").default(0).min(0.0))
            .input(InputSpec::int("height").default(0).min(0.0))
            .input(InputSpec::float("scale_by").default(0.0).min(0.0))
            .input(InputSpec::int("divisor").default(1).min(1.0))
            .input(InputSpec::int("min_size").default(1).min(1.0))
            .output(OutputSpec::new("out", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let x = inputs.tensor("x")?;
        let shape = x.size();
        if shape.len() != 4 || shape.contains(&0) || !x.is_floating_point() {
            return Err(format!(
                "input `x`: expected a non-empty floating-point [B,C,H,W] tensor, got shape {shape:?} ({:?})",
                x.kind()
            )
            .into());
        }
        let rule = SizeRule {
            width: inputs.int("width")?,
            height: inputs.int("height")?,
            scale_by: inputs.float("scale_by")?,
            divisor: inputs.int("divisor")?.max(1),
            min_size: inputs.int("min_size")?.max(1),
        };
        let Some((w, h)) = rule.target(shape[3], shape[2]) else {
            return Ok(vec![x.shallow_clone().into()]);
        };
        if w <= 0 || h <= 0 {
            return Err(format!(
                "the new size {w}x{h} (from a {}x{} input) is empty",
                shape[3], shape[2]
            )
            .into());
        }
        let out = common_upscale(
            x,
            w,
            h,
            inputs.str("method")?,
            inputs.str("crop")? == "center",
        )?;
        Ok(vec![out.into()])
    }
}

/// How the new size is chosen (see `Resize`'s description).
#[derive(Clone, Copy, Debug)]
pub struct SizeRule {
    pub width: i64,
    pub height: i64,
    pub scale_by: f64,
    pub divisor: i64,
    pub min_size: i64,
}

impl SizeRule {
    /// The new (width, height) of a `w`x`h` input; None: unchanged.
    pub fn target(&self, w: i64, h: i64) -> Option<(i64, i64)> {
        let round = |v: f64| v.round_ties_even() as i64;
        if self.scale_by > 0.0 {
            return Some((
                round(w as f64 * self.scale_by),
                round(h as f64 * self.scale_by),
            ));
        }
        let min = self.min_size;
        let (nw, nh) = match (self.width, self.height) {
            (0, 0) => return None,
            (0, height) => {
                let nh = height.max(min);
                (round(w as f64 * nh as f64 / h as f64).max(min), nh)
            }
            (width, 0) => {
                let nw = width.max(min);
                (nw, round(h as f64 * nw as f64 / w as f64).max(min))
            }
            (width, height) => (width.max(min), height.max(min)),
        };
        Some((nw / self.divisor, nh / self.divisor))
    }
}

/// `common_upscale(samples, width, height, method, crop)` on [B,C,H,W].
pub fn common_upscale(
    x: &Tensor,
    width: i64,
    height: i64,
    method: &str,
    center: bool,
) -> Result<Tensor, NodeError> {
    let s = if center {
        let (ow, oh) = (x.size()[3], x.size()[2]);
        let (old_aspect, new_aspect) = (ow as f64 / oh as f64, width as f64 / height as f64);
        let (mut cx, mut cy) = (0, 0);
        if old_aspect > new_aspect {
            cx = ((ow as f64 - ow as f64 * (new_aspect / old_aspect)) / 2.0).round_ties_even()
                as i64;
        } else if old_aspect < new_aspect {
            cy = ((oh as f64 - oh as f64 * (old_aspect / new_aspect)) / 2.0).round_ties_even()
                as i64;
        }
        x.f_narrow(-2, cy, oh - 2 * cy)?
            .f_narrow(-1, cx, ow - 2 * cx)?
    } else {
        x.shallow_clone()
    };
    let size = [height, width];
    Ok(match method {
        "nearest-exact" => s.f_internal_upsample_nearest_exact2d(size, None, None)?,
        "bilinear" => s.f_upsample_bilinear2d(size, false, None, None)?,
        "bicubic" => s.f_upsample_bicubic2d(size, false, None, None)?,
        "area" => s.f_adaptive_avg_pool2d(size)?,
        "bislerp" => bislerp(&s, width, height)?,
        "lanczos" => lanczos(&s, width, height)?,
        other => {
            return Err(format!(
                "input `method`: `{other}` is not one of {}",
                METHODS.join(", ")
            )
            .into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::SizeRule;

    fn rule(width: i64, height: i64, scale_by: f64, divisor: i64, min_size: i64) -> SizeRule {
        SizeRule {
            width,
            height,
            scale_by,
            divisor,
            min_size,
        }
    }

    #[test]
    fn sizes_follow_comfyuis_nodes() {
        // LatentUpscale on a 64x48 latent (pixels 512x384): min 64, // 8.
        let latent = |w, h| rule(w, h, 0.0, 8, 64).target(64, 48);
        assert_eq!(latent(0, 0), None);
        assert_eq!(latent(1024, 0), Some((128, 96)));
        assert_eq!(latent(0, 32), Some((85 / 8, 8))); // width max(64, round(64 * 64 / 48)) = 85
        assert_eq!(latent(20, 20), Some((8, 8)));
        // ImageScale: min 1, no divisor; round half to even.
        assert_eq!(rule(5, 0, 0.0, 1, 1).target(10, 3), Some((5, 2))); // 1.5 -> 2
        assert_eq!(rule(5, 0, 0.0, 1, 1).target(10, 5), Some((5, 2))); // 2.5 -> 2
                                                                       // ...By: round(side * scale).
        assert_eq!(rule(0, 0, 1.5, 1, 1).target(5, 3), Some((8, 4))); // 7.5 -> 8, 4.5 -> 4
    }
}
