//! Integration tests for the `core` plugin's image nodes: PNGs written by
//! SaveImage (read back by hand and by LoadImage), batches, subfolders,
//! bad shapes and missing files.
mod common;

use common::core_support::*;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Width, height, bit depth and colour type from a PNG's IHDR chunk, read
/// by hand so that the check does not depend on the plugin's encoder.
fn png_header(path: &Path) -> (u32, u32, u8, u8) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20), bytes[24], bytes[25])
}

fn known_image(dir: &Path) -> (PathBuf, Vec<f32>) {
    let values = vec![
        0.0f32, 0.5, 1.0, 0.25, 1.5, -0.2, 0.1, 0.9, 0.5, 0.5, 0.0, 1.0,
    ];
    let t = Tensor::from_slice(&values).view([1, 3, 2, 2]);
    let path = dir.join("image.safetensors");
    Tensor::write_safetensors(&[("image", &t)], &path).unwrap();
    // diffusers: (clamp(0,1) * 255).round() -> 0.5 -> 127.5 -> 128 (half to even), 0.25 -> 63.75 -> 64.
    let expected = [0u8, 128, 255, 64, 255, 0, 26, 230, 128, 128, 0, 255];
    (path, expected.iter().map(|&v| v as f32 / 255.0).collect())
}

#[test]
fn save_image_writes_png_that_round_trips() {
    let input = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let (tensor_path, expected) = known_image(input.path());
    let mut exec = executor(out_dir.path());
    let graph = format!(
        r#"{{"nodes": {{
            "img": {{"type": "LoadTensor", "inputs": {{"path": {path:?}}}}},
            "save": {{"type": "SaveImage", "inputs": {{"image": ["img", "tensor"], "filename_prefix": "known"}}}}
        }}}}"#,
        path = tensor_path.to_str().unwrap()
    );
    let out = common::run_text(&mut exec, &graph, None);
    let png = out_dir.path().join("known.png");
    assert_eq!(
        strings(out.output("save", "paths")),
        vec![png.to_string_lossy().into_owned()]
    );
    assert_eq!(
        png_header(&png),
        (2, 2, 8, 2),
        "expected a 2x2 8-bit RGB PNG"
    );
    assert_eq!(
        listing(out_dir.path()),
        vec!["known.png"],
        "temporary files were left behind"
    );

    let load = format!(
        r#"{{"nodes": {{"load": {{"type": "LoadImage", "inputs": {{"path": {:?}}}}}}}}}"#,
        png.to_str().unwrap()
    );
    let loaded = tensor_out(
        &common::run_text(&mut exec, &load, Some(&["load"])),
        "load",
        "image",
    );
    assert_eq!(loaded.size(), vec![1, 3, 2, 2]);
    assert_eq!(
        floats(&loaded),
        expected,
        "pixels did not round-trip through the PNG"
    );
}

#[test]
fn save_image_batches_grayscale_and_subfolders() {
    let input = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let path = input.path().join("gray.safetensors");
    let t = Tensor::from_slice(&[0.0f32, 0.2, 0.4, 0.6, 0.8, 1.0]).view([2, 1, 1, 3]);
    Tensor::write_safetensors(&[("x", &t)], &path).unwrap();
    let mut exec = executor(out_dir.path());
    let graph = format!(
        r#"{{"nodes": {{
            "img": {{"type": "LoadTensor", "inputs": {{"path": {:?}}}}},
            "save": {{"type": "SaveImage", "inputs": {{"image": ["img", "tensor"], "filename_prefix": "runs/a"}}}}
        }}}}"#,
        path.to_str().unwrap()
    );
    let out = common::run_text(&mut exec, &graph, None);
    let runs = out_dir.path().join("runs");
    let want: Vec<String> = ["a_0.png", "a_1.png"]
        .iter()
        .map(|n| runs.join(n).to_string_lossy().into_owned())
        .collect();
    assert_eq!(strings(out.output("save", "paths")), want);
    assert_eq!(listing(&runs), vec!["a_0.png", "a_1.png"]);
    assert_eq!(
        png_header(&runs.join("a_1.png")),
        (3, 1, 8, 0),
        "expected a 3x1 8-bit grayscale PNG"
    );

    for bad in ["../escape", "/tmp/absolute"] {
        let graph = graph.replace("runs/a", bad);
        let err = run_err(&mut exec, &graph);
        assert!(
            err.contains("filename_prefix"),
            "error for {bad:?} should name the input: {err}"
        );
    }
    assert!(!out_dir.path().parent().unwrap().join("escape.png").exists());
}

#[test]
fn save_image_rejects_bad_shapes_and_missing_files() {
    let input = tempfile::tempdir().unwrap();
    let path = input.path().join("bad.safetensors");
    Tensor::write_safetensors(
        &[("x", &Tensor::zeros([2, 5], (Kind::Float, Device::Cpu)))],
        &path,
    )
    .unwrap();
    let mut exec = executor(input.path());
    let graph = format!(
        r#"{{"nodes": {{
            "img": {{"type": "LoadTensor", "inputs": {{"path": {:?}}}}},
            "save": {{"type": "SaveImage", "inputs": {{"image": ["img", "tensor"]}}}}
        }}}}"#,
        path.to_str().unwrap()
    );
    let err = run_err(&mut exec, &graph);
    assert!(
        err.contains("input `image`") && err.contains("[2, 5]"),
        "{err}"
    );

    let missing = input.path().join("nope.png");
    let graph = format!(
        r#"{{"nodes": {{
            "load": {{"type": "LoadImage", "inputs": {{"path": {p:?}}}}},
            "save": {{"type": "SaveImage", "inputs": {{"image": ["load", "image"]}}}}
        }}}}"#,
        p = missing.to_str().unwrap()
    );
    // A missing input file is found by validation, before anything runs.
    let Err(errs) = diffgraph::parse_graph(&graph, &[], &exec.registry, false) else {
        panic!("a missing file must not validate")
    };
    assert_eq!(
        errs.kinds(),
        vec![diffgraph::graph::ErrorKind::FileNotFound],
        "{errs}"
    );
    assert!(
        errs.to_string()
            .contains(&format!("{:?}", missing.display().to_string())),
        "{errs}"
    );
}
