//! Area conditioning as ComfyUI's sampler combines it (`comfy/samplers.py`
//! `get_area_and_mult` and `_calc_cond_batch`): a cond with an `area`
//! `[h, w, y, x]` (latent units, from `ConditioningSetArea`) is evaluated
//! on that crop of the sample only; each cond's denoised prediction is
//! added into its place weighted by `mult` (its strength, faded in over
//! the crop's inner edges), and the sum is divided by the summed weights
//! (started at 1e-37, so a pixel no cond covers comes out 0).
use crate::Result;
use tch::Tensor;

/// The area clamped to a [.., H, W] sample as ComfyUI clamps it
/// (`area[i] = min(dim - offset, area[i])`), or an error when nothing of
/// it is inside.
pub fn clamp(area: [i64; 4], dims: [i64; 2]) -> Result<[i64; 4]> {
    let [h, w, y, x] = area;
    let (h, w) = ((dims[0] - y).min(h), (dims[1] - x).min(w));
    if h <= 0 || w <= 0 || y < 0 || x < 0 {
        return Err(format!(
            "the area [h, w, y, x] = {area:?} (latent units) has nothing inside the {}x{} latent",
            dims[0], dims[1]
        )
        .into());
    }
    Ok([h, w, y, x])
}

/// `x[:, :, y:y+h, x:x+w]` of a clamped area.
pub fn crop(x: &Tensor, area: [i64; 4]) -> Result<Tensor> {
    let [h, w, y, xo] = area;
    Ok(x.f_narrow(2, y, h)?.f_narrow(3, xo, w)?)
}

/// `mult` of `get_area_and_mult` for a crop of `crop_shape` (no mask):
/// `strength` everywhere, each inner edge's first rr = min(8, size // 4)
/// rows or columns scaled by (t + 1) / rr. `area` is clamped; `dims` the
/// whole sample's H and W.
pub fn mult(
    crop_shape: &[i64],
    area: Option<[i64; 4]>,
    dims: [i64; 2],
    strength: f64,
) -> Result<Tensor> {
    let ones = Tensor::f_ones(crop_shape, (tch::Kind::Float, tch::Device::Cpu))?;
    let mult = ones.f_mul_scalar(strength)?;
    let Some(area) = area else { return Ok(mult) };
    for i in 0..2 {
        let dim = 2 + i as i64;
        let (size, offset) = (area[i], area[2 + i]);
        let rr = 8.min(mult.size()[2 + i] / 4);
        let fade = |row: i64, t: i64| -> Result<()> {
            let mut m = mult.f_narrow(dim, row, 1)?;
            let _ = m.f_mul_scalar_((1.0 / rr as f64) * (t + 1) as f64)?;
            Ok(())
        };
        if offset != 0 {
            for t in 0..rr {
                fade(t, t)?;
            }
        }
        if size + offset < dims[i] {
            for t in 0..rr {
                fade(size - 1 - t, t)?;
            }
        }
    }
    Ok(mult)
}

/// Adds one cond's denoised prediction (of its crop) into the running
/// `sum` and `count` (both the whole sample's shape), in place.
pub fn accumulate(
    sum: &Tensor,
    count: &Tensor,
    denoised: &Tensor,
    mult: &Tensor,
    area: Option<[i64; 4]>,
) -> Result<()> {
    let mult = mult.f_to_device(sum.device())?;
    let (mut s, mut c) = match area {
        Some(a) => (crop(sum, a)?, crop(count, a)?),
        None => (sum.shallow_clone(), count.shallow_clone()),
    };
    let _ = s.f_add_(&denoised.f_mul(&mult)?)?;
    let _ = c.f_add_(&mult)?;
    Ok(())
}

/// Parity with ComfyUI's `get_area_and_mult`: tests/fixtures/comfy/
/// area.safetensors, made by scripts/fixtures/make_comfy_area_fixtures.py.
/// Tolerance 0 (the same float32 multiplications in the same order).
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn crops_and_mults_equal_comfyuis() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/comfy/area.safetensors");
        let f: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .unwrap()
            .into_iter()
            .collect();
        let ints =
            |t: &Tensor| -> [i64; 4] { Vec::<i64>::try_from(t).unwrap().try_into().unwrap() };
        let mut n = 0;
        while let Some(x) = f.get(&format!("{n}/x")) {
            let key = |k: &str| &f[&format!("{n}/{k}")];
            let s = x.size();
            let area = clamp(ints(key("area")), [s[2], s[3]]).unwrap();
            assert_eq!(area, ints(key("clamped")), "case {n}");
            let crop = crop(x, area).unwrap();
            assert!(crop.equal(key("input_x")), "case {n}");
            let strength = key("strength").double_value(&[]);
            let mult = mult(&crop.size(), Some(area), [s[2], s[3]], strength).unwrap();
            assert!(
                mult.equal(key("mult")),
                "case {n}: {mult} vs {}",
                key("mult")
            );
            n += 1;
        }
        assert_eq!(n, 7);
        assert!(clamp([4, 4, 9, 0], [8, 8]).is_err());
    }
}
