//! Live previews of a sampler's latent (`--preview-method latent2rgb`),
//! made in the worker after each loop step: ComfyUI's `Latent2RGBPreviewer`
//! (`latent_preview.py`): a fixed linear map of the latent's 4 channels to
//! RGB (`comfy/latent_formats.py` `SD15.latent_rgb_factors`), no model
//! call; `(x + 1) / 2` clamped to bytes; scaled to fit `--preview-size` as
//! `ImageOps.contain` does. A 3-channel sample (pixel-space models) is shown
//! as it is. Encoded as PNG (ComfyUI's format code 2; ComfyUI defaults to
//! JPEG, which would cost this binary a JPEG encoder): clients decode either.
use diffgraph::worker::{Preview, Previewer};
use diffgraph::Value;
use tch::{Device, Kind, Tensor};

/// ComfyUI's `--preview-method` values that diffgraph has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PreviewMethod {
    /// No previews (ComfyUI's default).
    None,
    /// latent2rgb (there is no TAESD here).
    Auto,
    Latent2rgb,
}

/// `comfy/latent_formats.py` `SD15.latent_rgb_factors`: rows are the latent
/// channels, columns R, G, B.
const SD15_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// ComfyUI's format code for PNG previews (`server.py` `send_image`).
pub const PNG: u32 = 2;

/// The previewer for `method`, or None.
pub fn previewer(method: PreviewMethod, max_size: u32) -> Option<Previewer> {
    match method {
        PreviewMethod::None => None,
        PreviewMethod::Auto | PreviewMethod::Latent2rgb => {
            Some(Box::new(move |values: &[Value]| preview(values, max_size)))
        }
    }
}

/// The first float tensor shaped `[batch, 3 or 4, h, w]` among `values`.
fn latent(values: &[Value]) -> Option<&Tensor> {
    values.iter().find_map(|v| {
        v.as_tensor().filter(|t| {
            let s = t.size();
            s.len() == 4 && (s[1] == 3 || s[1] == 4) && s[0] > 0 && t.is_floating_point()
        })
    })
}

/// The first sample's RGB bytes `[h, w, 3]` (row-major).
pub fn to_rgb(x: &Tensor) -> Option<(u32, u32, Vec<u8>)> {
    let x = x.get(0).to_device(Device::Cpu).to_kind(Kind::Float);
    let hwc = x.permute([1, 2, 0]);
    let rgb = if x.size()[0] == 4 {
        let flat: Vec<f32> = SD15_RGB.iter().flatten().copied().collect();
        hwc.matmul(&Tensor::from_slice(&flat).view([4, 3]))
    } else {
        hwc
    };
    // As ComfyUI's `preview_to_image`: the cast to uint8 truncates.
    let bytes = ((rgb + 1.0) / 2.0)
        .clamp(0.0, 1.0)
        .multiply_scalar(255.0)
        .to_kind(Kind::Uint8)
        .contiguous()
        .view([-1]);
    let (h, w) = (x.size()[1] as u32, x.size()[2] as u32);
    Some((w, h, Vec::<u8>::try_from(&bytes).ok()?))
}

fn preview(values: &[Value], max_size: u32) -> Option<Preview> {
    let (w, h, data) = to_rgb(latent(values)?)?;
    let mut img = image::RgbImage::from_raw(w, h, data)?;
    if max_size > 0 && (w, h) != fit(w, h, max_size) {
        let (fw, fh) = fit(w, h, max_size);
        img = image::imageops::resize(&img, fw, fh, image::imageops::FilterType::Triangle);
    }
    let mut out = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Sub,
    );
    img.write_with_encoder(encoder).ok()?;
    Some(Preview {
        format: PNG,
        bytes: out,
    })
}

/// The largest size with `w:h`'s aspect that fits in `max` x `max`
/// (`PIL.ImageOps.contain`, which also enlarges).
fn fit(w: u32, h: u32, max: u32) -> (u32, u32) {
    if w >= h {
        (
            max,
            ((h as f64 * max as f64 / w as f64).round() as u32).max(1),
        )
    } else {
        (
            ((w as f64 * max as f64 / h as f64).round() as u32).max(1),
            max,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ComfyUI's arithmetic by hand for one pixel per channel count.
    #[test]
    fn latent_pixels_map_as_comfyui_does() {
        let lat = Tensor::from_slice(&[0.5f32, -0.25, 1.0, 0.0]).view([1, 4, 1, 1]);
        let (w, h, px) = to_rgb(&lat).unwrap();
        assert_eq!((w, h), (1, 1));
        for c in 0..3 {
            let v: f32 = [0.5f32, -0.25, 1.0, 0.0]
                .iter()
                .zip(SD15_RGB.iter())
                .map(|(x, row)| x * row[c])
                .sum();
            let want = (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8;
            assert_eq!(px[c], want, "channel {c}");
        }
        let rgb = Tensor::from_slice(&[-1.0f32, 0.0, 3.0]).view([1, 3, 1, 1]);
        assert_eq!(to_rgb(&rgb).unwrap().2, vec![0, 127, 255]);
    }

    #[test]
    fn previews_fit_the_size_and_skip_what_is_not_a_latent() {
        let make = previewer(PreviewMethod::Auto, 32).unwrap();
        let lat = Value::Tensor(diffgraph::value::SharedTensor::new(Tensor::zeros(
            [2, 4, 8, 16],
            (Kind::Float, Device::Cpu),
        )));
        let p = make(&[Value::Int(3), lat]).expect("a preview");
        assert_eq!(p.format, PNG);
        let img = image::load_from_memory(&p.bytes).unwrap();
        assert_eq!((img.width(), img.height()), (32, 16));
        assert!(make(&[Value::Int(3)]).is_none());
        assert!(previewer(PreviewMethod::None, 32).is_none());
    }
}
