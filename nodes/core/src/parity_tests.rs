//! Parity with ComfyUI's own code: tests/fixtures/comfy/image_ops.safetensors,
//! made by scripts/fixtures/make_comfy_image_fixtures.py from ComfyUI's
//! `comfy/utils.py` `common_upscale` and `nodes.py` `LoadImage`,
//! `LoadImageMask`, `LatentComposite`, `ImageBatch`, `EmptyImage`.
//! Tolerances: 0 (bit for bit) for everything computed by the same libtorch
//! kernels or by integer arithmetic (interpolate methods, lanczos, masks,
//! composite, batches); bislerp 1e-6 max abs (its float32 chain of norms,
//! acos and sin follows the reference's order, so it is exact on this
//! machine; the bound allows another CPU's vector math).
use crate::batch::concat;
use crate::image_io::{decode_oriented, rgb_floats};
use crate::image_ops::{composite, solid};
use crate::masks::{channel_mask, image_mask};
use crate::resize::common_upscale;
use diffgraph_sdk::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/comfy")
}

fn fixture() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir().join("image_ops.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    a.f_sub(b).unwrap().abs().max().double_value(&[])
}

#[test]
fn resizing_matches_common_upscale() {
    let f = fixture();
    let mut checked = 0;
    for (key, want) in &f {
        let parts: Vec<&str> = key.split('/').collect();
        let (input, method, crop, size) = match parts.as_slice() {
            [i @ ("latent" | "image"), m, c, s] => (&f[*i], *m, *c, *s),
            _ => continue,
        };
        let (w, h) = size.split_once('x').unwrap();
        let got = common_upscale(
            input,
            w.parse().unwrap(),
            h.parse().unwrap(),
            method,
            crop == "center",
        )
        .unwrap();
        let tolerance = if method == "bislerp" { 1e-6 } else { 0.0 };
        let d = max_diff(&got, want);
        assert!(d <= tolerance, "{key}: max abs {d}");
        if d > 0.0 {
            eprintln!("{key}: max abs {d}");
        }
        checked += 1;
    }
    assert_eq!(checked, 5 * 2 * 3 + 5 * 2 * 4);
}

#[test]
fn images_and_masks_load_as_comfyui_loads_them() {
    let f = fixture();
    for name in ["rgba.png", "rgb.png", "la.png", "palette.png"] {
        let path = dir().join("images").join(name);
        let img = decode_oriented(path.to_str().unwrap()).unwrap();
        let (w, h) = (img.width() as i64, img.height() as i64);
        let pixels = Tensor::from_slice(&rgb_floats(&img))
            .view([h, w, 3])
            .permute([2, 0, 1])
            .unsqueeze(0);
        assert_eq!(
            max_diff(&pixels, &f[&format!("load/{name}/image")]),
            0.0,
            "{name}"
        );
        let mask = image_mask(&img).unwrap();
        assert_eq!(
            max_diff(&mask, &f[&format!("load/{name}/mask")]),
            0.0,
            "{name} mask"
        );
        for (index, channel) in ["red", "green", "blue", "alpha"].iter().enumerate() {
            let m = channel_mask(&img, index).unwrap();
            let want = &f[&format!("mask/{name}/{channel}")];
            assert_eq!(max_diff(&m, want), 0.0, "{name} {channel}");
        }
    }
}

#[test]
fn composite_batch_and_solid_match_comfyui() {
    let f = fixture();
    let (to, from) = (&f["composite/to"], &f["composite/from"]);
    let mut checked = 0;
    for (key, want) in &f {
        let Some(rest) = key.strip_prefix("composite/") else {
            continue;
        };
        let Ok(v) = rest
            .split('/')
            .map(str::parse::<i64>)
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        let got = composite(to, from, v[0] / 8, v[1] / 8, v[2] / 8).unwrap();
        assert_eq!(max_diff(&got, want), 0.0, "{key}");
        checked += 1;
    }
    assert_eq!(checked, 6);
    let batch = concat(&f["batch/a"], &f["batch/b"]).unwrap();
    assert_eq!(max_diff(&batch, &f["batch/out"]), 0.0);
    let empty = solid(3, 2, 2, 0x12AB7F).unwrap();
    assert_eq!(max_diff(&empty, &f["empty/3x2x2/0x12AB7F"]), 0.0);
}
