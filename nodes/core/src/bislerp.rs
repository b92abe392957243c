//! ComfyUI's `bislerp` resize (`comfy/utils.py` `bislerp`): bilinear
//! resampling whose blend of two neighbours is a spherical interpolation of
//! their channel vectors (directions slerped, lengths mixed linearly), first
//! along the width, then along the height. Its sampling positions are those
//! of libtorch's bilinear kernel applied to the index ramp, so the same
//! kernel computes them here.
use diffgraph_sdk::prelude::*;

/// Resizes [N,C,H,W] to [N,C,height,width], computed in float32 and
/// returned in the input's kind.
pub fn bislerp(samples: &Tensor, width: i64, height: i64) -> Result<Tensor, NodeError> {
    let kind = samples.kind();
    let x = samples.f_to_kind(Kind::Float)?;
    let [n, c, h, w] =
        <[i64; 4]>::try_from(x.size()).map_err(|s| format!("bislerp: shape {s:?}"))?;
    let dev = x.device();

    // Along the width.
    let (ratios, i1, i2) = positions(w, width, dev)?;
    let i1 = i1.f_expand([n, c, h, width], false)?;
    let i2 = i2.f_expand([n, c, h, width], false)?;
    let ratios = ratios.f_expand([n, 1, h, width], false)?;
    let a = flat_pixels(&x.f_gather(-1, &i1, false)?, c)?;
    let b = flat_pixels(&x.f_gather(-1, &i2, false)?, c)?;
    let r = ratios.f_movedim(1, -1)?.f_reshape([-1, 1])?;
    let row = slerp(&a, &b, &r)?
        .f_reshape([n, h, width, c])?
        .f_movedim(-1, 1)?;

    // Along the height.
    let (ratios, i1, i2) = positions(h, height, dev)?;
    let i1 = i1
        .f_reshape([1, 1, -1, 1])?
        .f_expand([n, c, height, width], false)?;
    let i2 = i2
        .f_reshape([1, 1, -1, 1])?
        .f_expand([n, c, height, width], false)?;
    let ratios = ratios
        .f_reshape([1, 1, -1, 1])?
        .f_expand([n, 1, height, width], false)?;
    let a = flat_pixels(&row.f_gather(-2, &i1, false)?, c)?;
    let b = flat_pixels(&row.f_gather(-2, &i2, false)?, c)?;
    let r = ratios.f_movedim(1, -1)?.f_reshape([-1, 1])?;
    let out = slerp(&a, &b, &r)?
        .f_reshape([n, height, width, c])?
        .f_movedim(-1, 1)?;
    Ok(out.f_to_kind(kind)?)
}

/// [N,C,H,W] to one C-vector per row: [N*H*W, C].
fn flat_pixels(t: &Tensor, c: i64) -> Result<Tensor, NodeError> {
    Ok(t.f_movedim(1, -1)?.f_reshape([-1, c])?)
}

/// For each of `new` output positions along a side of `old`: the blend
/// ratio and the two source indices ([1,1,1,new] each), from the bilinear
/// kernel applied to the ramps 0..old and 1..old (its last entry kept at
/// old - 1).
fn positions(old: i64, new: i64, dev: Device) -> Result<(Tensor, Tensor, Tensor), NodeError> {
    let ramp = Tensor::f_arange(old, (Kind::Float, dev))?.f_reshape([1, 1, 1, -1])?;
    let c1 = ramp.f_upsample_bilinear2d([1, new], false, None, None)?;
    let ratios = c1.f_sub(&c1.f_floor()?)?;
    let next = ramp.f_add_scalar(1.0)?;
    let _ = next.f_narrow(-1, old - 1, 1)?.f_sub_scalar_(1.0)?;
    let c2 = next.f_upsample_bilinear2d([1, new], false, None, None)?;
    Ok((
        ratios,
        c1.f_to_kind(Kind::Int64)?,
        c2.f_to_kind(Kind::Int64)?,
    ))
}

/// Slerps rows of `b1` towards `b2` by `r` ([M,C], [M,C], [M,1]): unit
/// directions interpolated on the sphere, scaled by the linearly mixed
/// lengths; nearly equal directions keep `b1`, nearly opposite ones mix
/// linearly; a zero vector has the zero direction.
fn slerp(b1: &Tensor, b2: &Tensor, r: &Tensor) -> Result<Tensor, NodeError> {
    let c = b1.size()[1];
    let n1 = b1.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?;
    let n2 = b2.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?;
    let unit = |b: &Tensor, n: &Tensor| -> Result<Tensor, NodeError> {
        let zero = n.f_expand([-1, c], false)?.f_eq(0.0)?;
        Ok(b.f_div(n)?.f_masked_fill(&zero, 0.0)?)
    };
    let (u1, u2) = (unit(b1, &n1)?, unit(b2, &n2)?);
    let dot = u1
        .f_mul(&u2)?
        .f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?;
    let omega = dot.f_acos()?;
    let so = omega.f_sin()?;
    let rs = r.f_squeeze_dim(1)?;
    let one_minus = rs.f_neg()?.f_add_scalar(1.0)?;
    let w1 = one_minus
        .f_mul(&omega)?
        .f_sin()?
        .f_div(&so)?
        .f_unsqueeze(1)?;
    let w2 = rs.f_mul(&omega)?.f_sin()?.f_div(&so)?.f_unsqueeze(1)?;
    let mut res = w1.f_mul(&u1)?.f_add(&w2.f_mul(&u2)?)?;
    let r_minus = r.f_neg()?.f_add_scalar(1.0)?;
    let length = n1.f_mul(&r_minus)?.f_add(&n2.f_mul(r)?)?;
    res = res.f_mul(&length.f_expand([-1, c], false)?)?;
    let same = dot.f_gt(1.0 - 1e-5)?.f_unsqueeze(1)?;
    res = b1.f_where_self(&same, &res)?;
    let opposite = dot.f_lt(1e-5 - 1.0)?.f_unsqueeze(1)?;
    let linear = b1.f_mul(&r_minus)?.f_add(&b2.f_mul(r)?)?;
    Ok(linear.f_where_self(&opposite, &res)?)
}
