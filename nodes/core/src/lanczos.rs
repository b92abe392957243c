//! ComfyUI's `lanczos` resize (`comfy/utils.py` `lanczos`): each image goes
//! to 8-bit pixels (`clip(255 * x, 0, 255)`, truncated), is resized with
//! Pillow's `Image.resize(..., LANCZOS)`, and comes back as `u8 / 255`.
//! The resampling is Pillow's separable convolution (`libImaging/Resample.c`,
//! `precompute_coeffs`, `normalize_coeffs_8bpc`, the horizontal then the
//! vertical 8-bit pass): a Lanczos-3 kernel widened by the downscale factor,
//! weights normalised to sum 1 and rounded to 22-bit fixed point, sums
//! rounded and clamped to 0..=255. Every channel is resampled alike.
use diffgraph_sdk::prelude::*;

/// Pillow's fixed-point precision for 8-bit images: 32 - 8 - 2 bits.
const PRECISION_BITS: u32 = 22;
const SUPPORT: f64 = 3.0;

/// Resizes [N,C,H,W] (values in [0,1]) to [N,C,height,width].
pub fn lanczos(samples: &Tensor, width: i64, height: i64) -> Result<Tensor, NodeError> {
    let kind = samples.kind();
    let device = samples.device();
    let [n, c, h, w] =
        <[i64; 4]>::try_from(samples.size()).map_err(|s| format!("lanczos: shape {s:?}"))?;
    let pixels = samples
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_mul_scalar(255.0)?
        .f_clamp(0.0, 255.0)?
        .f_to_kind(Kind::Uint8)?
        .f_contiguous()?;
    let bytes = Vec::<u8>::try_from(&pixels.f_flatten(0, -1)?)?;
    let (w, h, nw, nh) = (w as usize, h as usize, width as usize, height as usize);
    let horizontal = Coeffs::new(w, nw);
    let vertical = Coeffs::new(h, nh);
    let mut out = Vec::with_capacity(n as usize * c as usize * nw * nh);
    for plane in bytes.chunks_exact(w * h) {
        let rows = if nw != w {
            resample(plane, w, h, &horizontal, true)
        } else {
            plane.to_vec()
        };
        let done = if nh != h {
            resample(&rows, nw, h, &vertical, false)
        } else {
            rows
        };
        out.extend(done.into_iter().map(|v| v as f32 / 255.0));
    }
    Ok(Tensor::f_from_slice(&out)?
        .f_view([n, c, height, width])?
        .f_to_kind(kind)?
        .f_to_device(device)?)
}

/// Pillow's `sinc(x) * sinc(x / 3)` on [-3, 3).
fn lanczos_filter(x: f64) -> f64 {
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
    };
    if (-SUPPORT..SUPPORT).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Per output position: the first source index and the fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i64>,
}

impl Coeffs {
    /// `precompute_coeffs(in_size, 0, in_size, out_size)` then
    /// `normalize_coeffs_8bpc`.
    fn new(in_size: usize, out_size: usize) -> Coeffs {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i64; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                let v = lanczos_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = v;
                ww += v;
            }
            for (x, kx) in k.iter_mut().enumerate() {
                let v = if x < xmax && ww != 0.0 {
                    *kx / ww
                } else if x < xmax {
                    *kx
                } else {
                    0.0
                };
                let fixed = v * (1i64 << PRECISION_BITS) as f64;
                weights[xx * ksize + x] = if v < 0.0 {
                    (-0.5 + fixed) as i64
                } else {
                    (0.5 + fixed) as i64
                };
            }
            bounds.push((xmin, xmax));
        }
        Coeffs {
            bounds,
            ksize,
            weights,
        }
    }
}

/// One 8-bit pass over a `w`x`h` plane: along rows (`horizontal`) to
/// `coeffs`' output width, or along columns to its output height.
fn resample(plane: &[u8], w: usize, h: usize, coeffs: &Coeffs, horizontal: bool) -> Vec<u8> {
    let out_len = coeffs.bounds.len();
    let (ow, oh) = if horizontal {
        (out_len, h)
    } else {
        (w, out_len)
    };
    let mut out = vec![0u8; ow * oh];
    for yy in 0..oh {
        for xx in 0..ow {
            let o = if horizontal { xx } else { yy };
            let (min, len) = coeffs.bounds[o];
            let k = &coeffs.weights[o * coeffs.ksize..];
            let mut ss: i64 = 1 << (PRECISION_BITS - 1);
            for (i, weight) in k.iter().enumerate().take(len) {
                let src = if horizontal {
                    plane[yy * w + min + i]
                } else {
                    plane[(min + i) * w + xx]
                };
                ss += src as i64 * weight;
            }
            out[yy * ow + xx] = (ss >> PRECISION_BITS).clamp(0, 255) as u8;
        }
    }
    out
}
