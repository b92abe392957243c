//! Masks as ComfyUI shapes them (its `MASK` type): float [B,H,W] with values
//! in [0,1], 1 marking the region to change, so a transparent pixel is 1
//! (ComfyUI `nodes.py` `LoadImage`, `LoadImageMask`). 8-bit channels are
//! divided by 255, 16-bit ones by 65535.
use crate::image_io::decode_oriented;
use diffgraph_sdk::prelude::*;
use image::DynamicImage;

/// ComfyUI's LoadImageMask `channel` choices.
pub const CHANNELS: &[&str] = &["alpha", "red", "green", "blue"];

/// LoadImage's mask: 1 - alpha as [1,H,W] when the image has an alpha
/// channel (a palette's transparency included), else zeros of [1,64,64].
pub fn image_mask(image: &DynamicImage) -> Result<Tensor, NodeError> {
    if image.color().has_alpha() {
        channel_mask(image, 3)
    } else {
        Ok(Tensor::f_zeros([1, 64, 64], (Kind::Float, Device::Cpu))?)
    }
}

/// Channel `index` of the image as RGBA ([1,H,W]); alpha (3) inverted.
pub(crate) fn channel_mask(image: &DynamicImage, index: usize) -> Result<Tensor, NodeError> {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let values: Vec<f32> = if is_16_bit(image) {
        let rgba = image.to_rgba16().into_raw();
        rgba.iter()
            .skip(index)
            .step_by(4)
            .map(|&v| v as f32 / 65535.0)
            .collect()
    } else {
        let rgba = image.to_rgba8().into_raw();
        rgba.iter()
            .skip(index)
            .step_by(4)
            .map(|&v| v as f32 / 255.0)
            .collect()
    };
    let mask = Tensor::f_from_slice(&values)?.f_view([1, h, w])?;
    Ok(if index == 3 {
        mask.f_neg()?.f_add_scalar(1.0)?
    } else {
        mask
    })
}

fn is_16_bit(image: &DynamicImage) -> bool {
    matches!(
        image,
        DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgba16(_)
    )
}

pub struct LoadMask;

impl Node for LoadMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadMask", "image")
            .description(
                "One channel of an image file as a ComfyUI mask [1,H,W] (ComfyUI's LoadImageMask): \
                 the image taken as RGBA (no alpha: opaque; grayscale: the gray value in red, green \
                 and blue), the channel / 255 (16-bit files / 65535), and alpha inverted (1 - alpha: \
                 transparent pixels are 1). EXIF orientation applied.",
            )
            .input(InputSpec::string("path").file())
            .input(InputSpec::string("channel").default("alpha").choices(CHANNELS))
            .output(OutputSpec::new("mask", PortType::Tensor).doc("[1,H,W] in [0,1]"))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let image = decode_oriented(inputs.str("path")?)?;
        let channel = inputs.str("channel")?;
        let index = match channel {
            "red" => 0,
            "green" => 1,
            "blue" => 2,
            "alpha" => 3,
            other => {
                return Err(format!(
                    "input `channel`: `{other}` is not one of {}",
                    CHANNELS.join(", ")
                )
                .into())
            }
        };
        Ok(vec![channel_mask(&image, index)?
            .f_to_device(ctx.device())?
            .into()])
    }
}

pub struct MaskToImage;

impl Node for MaskToImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("MaskToImage", "image")
            .description(
                "A mask ([B,H,W] or [H,W]) as a gray [B,3,H,W] image, the mask value in every channel \
                 (ComfyUI's MaskToImage).",
            )
            .input(InputSpec::tensor("mask"))
            .output(OutputSpec::new("image", PortType::Image))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let mask = inputs.tensor("mask")?;
        let s = mask.size();
        if s.len() < 2 || s.contains(&0) {
            return Err(format!("input `mask`: expected a [B,H,W] mask, got shape {s:?}").into());
        }
        let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
        let image = mask
            .f_reshape([-1, 1, h, w])?
            .f_expand([-1, 3, h, w], false)?;
        Ok(vec![image.f_contiguous()?.into()])
    }
}

pub struct ImageToMask;

impl Node for ImageToMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageToMask", "image")
            .description(
                "One channel of a [B,C,H,W] image as a [B,H,W] mask (ComfyUI's ImageToMask).",
            )
            .input(InputSpec::tensor("image"))
            .input(
                InputSpec::string("channel")
                    .default("red")
                    .choices(&["red", "green", "blue", "alpha"]),
            )
            .output(OutputSpec::new("mask", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let image = inputs.tensor("image")?;
        let index = ["red", "green", "blue", "alpha"]
            .iter()
            .position(|c| *c == inputs.str("channel").unwrap_or_default())
            .unwrap_or(0) as i64;
        if image.dim() != 4 || image.size()[1] <= index {
            return Err(format!(
                "input `image`: a [B,C,H,W] image with a channel {index} expected, got shape {:?}",
                image.size()
            )
            .into());
        }
        Ok(vec![image.f_select(1, index)?.f_contiguous()?.into()])
    }
}
