//! Image files and the latent-to-image range conversion. Images travel as
//! float [B,C,H,W] tensors with values in [0,1], like diffusers' "pt" output.
use crate::paths::output_path;
use crate::shapes::image_bchw;
use diffgraph_sdk::prelude::*;
use image::codecs::png::PngEncoder;
use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageReader};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct SaveImage;

impl Node for SaveImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveImage", "image")
            .description(
                "Writes each image of the batch as a PNG in the output folder: `{prefix}.png` for a \
                 single image, `{prefix}_{i}.png` otherwise; an existing file is never replaced (the \
                 next free `{name}_00001_.png` counter name is used, as ComfyUI numbers). Pixels are converted like diffusers' \
                 numpy_to_pil: clamp to [0,1], times 255, round half to even, to u8. Files appear \
                 atomically and survive a crash (temporary file, fsync, rename, folder fsync).",
            )
            .output_node()
            .input(InputSpec::new("image", PortType::Image).doc("[B,C,H,W] or [C,H,W], C = 1 or 3, values in [0,1]"))
            .input(
                InputSpec::string("filename_prefix")
                    .default("diffgraph")
                    .doc("Relative to the output folder; may contain subfolders, not `..`."),
            )
            .output(OutputSpec::new("paths", PortType::list(PortType::String)))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let image = image_bchw("image", inputs.tensor("image")?)?;
        let prefix = inputs.str("filename_prefix")?;
        let base = output_path(ctx.output_dir(), "filename_prefix", prefix)?;
        let pixels = to_u8_pixels(&image)?;
        let size = pixels.size();
        let (batch, channels, height, width) = (size[0], size[1], size[2], size[3]);
        let (w, h) = (u32::try_from(width), u32::try_from(height));
        let (Ok(w), Ok(h)) = (w, h) else {
            return Err(format!("input `image`: {width}x{height} is too large for a PNG").into());
        };
        let color = if channels == 1 {
            ExtendedColorType::L8
        } else {
            ExtendedColorType::Rgb8
        };
        let mut paths = Vec::with_capacity(batch as usize);
        for i in 0..batch {
            let path = with_suffix(
                &base,
                if batch == 1 {
                    String::new()
                } else {
                    format!("_{i}")
                },
            );
            // [C,H,W] -> [H,W,C]: PNG rows hold interleaved channels.
            let hwc = pixels
                .f_get(i)?
                .f_permute([1, 2, 0])?
                .f_contiguous()?
                .f_flatten(0, -1)?;
            let bytes = Vec::<u8>::try_from(&hwc)?;
            let written = write_png_atomically(&path, &bytes, w, h, color)?;
            paths.push(written.to_string_lossy().into_owned());
        }
        Ok(vec![paths.into()])
    }
}

/// diffusers' float-to-u8 conversion, computed on the CPU in float32:
/// `(x.clamp(0, 1) * 255).round().to(u8)` (round half to even, as numpy does).
fn to_u8_pixels(image: &Tensor) -> Result<Tensor, NodeError> {
    Ok(image
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_to_kind(Kind::Uint8)?)
}

/// `base` with `suffix` and `.png` appended to its file name.
fn with_suffix(base: &Path, suffix: String) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(suffix);
    name.push(".png");
    PathBuf::from(name)
}

/// Encodes the PNG through `atomic_write` (exclusive temporary file, fsync,
/// published without replacing anything, folder fsync). Returns the path
/// written: `path`, or its next counter name when `path` exists.
fn write_png_atomically(
    path: &Path,
    bytes: &[u8],
    w: u32,
    h: u32,
    color: ExtendedColorType,
) -> Result<PathBuf, NodeError> {
    let written = crate::atomic_write::write_new(path, |file, _| {
        let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
        let mut writer = BufWriter::new(file);
        PngEncoder::new(&mut writer)
            .write_image(bytes, w, h, color)
            .map_err(|e| fail(&e))?;
        writer.flush().map_err(|e| fail(&e))
    })?;
    Ok(written)
}

pub struct LoadImage;

impl Node for LoadImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadImage", "image")
            .description(
                "Reads an image file (detected from its content; EXIF orientation applied, as \
                 ComfyUI's exif_transpose) as a float [1,3,H,W] tensor with values in [0,1] (8-bit \
                 values / 255, 16-bit / 65535); grayscale becomes RGB. `mask` is ComfyUI's LoadImage \
                 mask: 1 - alpha as [1,H,W] when the file has transparency, else zeros of [1,64,64].",
            )
            .input(InputSpec::string("path").file())
            .output(OutputSpec::new("image", PortType::Image))
            .output(
                OutputSpec::new("mask", PortType::Tensor)
                    .doc("ComfyUI's MASK: [1,H,W], 1 where the image is transparent"),
            )
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let path = inputs.str("path")?;
        let decoded = decode_oriented(path)?;
        let (w, h) = (decoded.width() as i64, decoded.height() as i64);
        let values = rgb_floats(&decoded);
        let image = Tensor::f_from_slice(&values)?
            .f_view([h, w, 3])?
            .f_permute([2, 0, 1])?
            .f_unsqueeze(0)?
            .f_contiguous()?;
        let mask = crate::masks::image_mask(&decoded)?;
        Ok(vec![
            image.f_to_device(ctx.device())?.into(),
            mask.f_to_device(ctx.device())?.into(),
        ])
    }
}

/// Decodes an image file (format from its content) upright: its EXIF
/// orientation applied (ComfyUI's `ImageOps.exif_transpose`).
pub fn decode_oriented(path: &str) -> Result<DynamicImage, NodeError> {
    let fail = |e: &dyn std::fmt::Display| NodeError::new(format!("cannot read image {path}: {e}"));
    let mut decoder = ImageReader::open(path)
        .map_err(|e| fail(&e))?
        .with_guessed_format()
        .map_err(|e| fail(&e))?
        .into_decoder()
        .map_err(|e| fail(&e))?;
    let orientation = decoder.orientation().map_err(|e| fail(&e))?;
    let mut decoded = DynamicImage::from_decoder(decoder).map_err(|e| fail(&e))?;
    decoded.apply_orientation(orientation);
    Ok(decoded)
}

/// Interleaved RGB values in [0,1], keeping 16-bit precision when the file has it.
pub(crate) fn rgb_floats(image: &DynamicImage) -> Vec<f32> {
    match image {
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => image
            .to_rgb16()
            .into_raw()
            .iter()
            .map(|&v| v as f32 / 65535.0)
            .collect(),
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
            image.to_rgb32f().into_raw()
        }
        _ => image
            .to_rgb8()
            .into_raw()
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect(),
    }
}

pub struct LatentToImage;

impl Node for LatentToImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentToImage", "image")
            .description(
                "Maps values in [-1,1] to an image in [0,1]: (x * 0.5 + 0.5).clamp(0, 1), the \
                 denormalisation of diffusers' VaeImageProcessor. It does not run a VAE.",
            )
            .input(InputSpec::new("latent", PortType::Latent).doc("values in [-1,1]"))
            .output(OutputSpec::new("image", PortType::Image))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let x = inputs.tensor("latent")?;
        if !x.is_floating_point() {
            return Err(format!(
                "input `latent`: expected a floating-point tensor, got {:?}",
                x.kind()
            )
            .into());
        }
        let image = x.f_mul_scalar(0.5)?.f_add_scalar(0.5)?.f_clamp(0.0, 1.0)?;
        Ok(vec![image.into()])
    }
}
