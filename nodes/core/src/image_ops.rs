//! Small pixel and latent operations with ComfyUI's definitions (`nodes.py`
//! `ImageInvert`, `EmptyImage`, `LatentComposite`).
use diffgraph_sdk::prelude::*;

pub struct Invert;

impl Node for Invert {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Invert", "image")
            .description("1 - x (ComfyUI's ImageInvert; also inverts a mask).")
            .input(InputSpec::tensor("x"))
            .output(OutputSpec::new("out", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let x = inputs.tensor("x")?;
        Ok(vec![x.f_neg()?.f_add_scalar(1.0)?.into()])
    }
}

pub struct SolidImage;

impl Node for SolidImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SolidImage", "image")
            .description(
                "A [batch_size,3,height,width] image of one colour, `color` as 0xRRGGBB, each \
                 channel byte / 255 (ComfyUI's EmptyImage).",
            )
            .input(InputSpec::int("width").default(512).min(1.0))
            .input(InputSpec::int("height").default(512).min(1.0))
            .input(InputSpec::int("batch_size").default(1).min(1.0))
            .input(InputSpec::int("color").default(0).range(0.0, 16_777_215.0))
            .output(OutputSpec::new("image", PortType::Image))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let (w, h, b) = (
            inputs.int("width")?,
            inputs.int("height")?,
            inputs.int("batch_size")?,
        );
        let color = inputs.int("color")?;
        if w < 1 || h < 1 || b < 1 || !(0..=0xFF_FFFF).contains(&color) {
            return Err(format!(
                "expected width, height, batch_size >= 1 and color in 0..=0xFFFFFF, got {w}, {h}, {b}, {color}"
            )
            .into());
        }
        Ok(vec![solid(w, h, b, color)?
            .f_to_device(ctx.device())?
            .into()])
    }
}

/// EmptyImage's pixels on the CPU.
pub(crate) fn solid(w: i64, h: i64, b: i64, color: i64) -> Result<Tensor, NodeError> {
    // float32, as torch.full with a Python float: (byte / 255) rounded once.
    let channel = |shift: i64| ((color >> shift) & 0xFF) as f64 / 255.0;
    let rgb = Tensor::f_from_slice(&[channel(16) as f32, channel(8) as f32, channel(0) as f32])?
        .f_view([1, 3, 1, 1])?;
    let image = rgb.f_expand([b, 3, h, w], false)?.f_contiguous()?;
    Ok(image)
}

pub struct Composite;

impl Node for Composite {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Composite", "latent")
            .description(
                "`source` pasted into `destination` ([B,C,H,W]) with its top left corner at (x, y), \
                 cut at the destination's edges; with `feather` > 0 the pasted block fades in over \
                 that many rows/columns on each side that is inside the destination (weights \
                 (t + 1) / feather), as ComfyUI's LatentComposite (whose x, y, feather are in pixels: \
                 divide by 8 first). A corner outside the destination changes nothing.",
            )
            .input(InputSpec::tensor("destination"))
            .input(InputSpec::tensor("source"))
            .input(InputSpec::int("x").default(0).min(0.0))
            .input(InputSpec::int("y").default(0).min(0.0))
            .input(InputSpec::int("feather").default(0).min(0.0))
            .output(OutputSpec::new("out", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let to = inputs.tensor("destination")?;
        let from = inputs.tensor("source")?;
        for (name, t) in [("destination", to), ("source", from)] {
            if t.dim() != 4 {
                return Err(format!(
                    "input `{name}`: expected a [B,C,H,W] tensor, got shape {:?}",
                    t.size()
                )
                .into());
            }
        }
        let (x, y, feather) = (inputs.int("x")?, inputs.int("y")?, inputs.int("feather")?);
        Ok(vec![composite(to, from, x, y, feather)?.into()])
    }
}

/// `source` pasted into `destination` at (x, y) (latent units), feathered.
pub(crate) fn composite(
    to: &Tensor,
    from: &Tensor,
    x: i64,
    y: i64,
    feather: i64,
) -> Result<Tensor, NodeError> {
    let mut out = Tensor::f_empty_like(to)?;
    out.f_copy_(to)?;
    let (th, tw) = (to.size()[2], to.size()[3]);
    if x < 0 || y < 0 || feather < 0 || x >= tw || y >= th {
        return Ok(out);
    }
    let hh = from.size()[2].min(th - y);
    let ww = from.size()[3].min(tw - x);
    let src = from.f_narrow(2, 0, hh)?.f_narrow(3, 0, ww)?;
    let mut region = out.f_narrow(2, y, hh)?.f_narrow(3, x, ww)?;
    let pasted = if feather == 0 {
        src
    } else {
        let mask = Tensor::f_ones_like(&src)?;
        for t in 0..feather {
            let f = (1.0 / feather as f64) * (t + 1) as f64;
            let scale = |dim: i64, at: i64| -> Result<(), NodeError> {
                if (0..mask.size()[dim as usize]).contains(&at) {
                    let _ = mask.f_narrow(dim, at, 1)?.f_mul_scalar_(f)?;
                }
                Ok(())
            };
            if y != 0 {
                scale(2, t)?;
            }
            if y + hh < th {
                scale(2, hh - 1 - t)?;
            }
            if x != 0 {
                scale(3, t)?;
            }
            if x + ww < tw {
                scale(3, ww - 1 - t)?;
            }
        }
        let rev = Tensor::f_ones_like(&mask)?.f_sub(&mask)?;
        src.f_mul(&mask)?.f_add(&region.f_mul(&rev)?)?
    };
    region.f_copy_(&pasted)?;
    Ok(out)
}
