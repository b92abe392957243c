//! The sd plugin checks shapes before libtorch sees them (libtorch's
//! non-`f_` calls abort or panic on them): conditioning branches of
//! different shapes (prompt and negative prompt from different
//! checkpoints), and samples or latents with a zero dimension, get a clear
//! node error naming the inputs.
mod common;

use diffgraph::{Executor, RunError, Silent};
use std::path::Path;
use tch::Tensor;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn run_err(text: &str) -> String {
    let mut exec = Executor::new(common::registry_with(&[
        "diffgraph_nodes_core",
        "diffgraph_nodes_sd",
    ]));
    let checked =
        diffgraph::parse_graph(text, &[], &exec.registry, false).unwrap_or_else(|e| panic!("{e}"));
    match exec.run(&checked, None, &Silent) {
        Ok(_) => panic!("expected a node error"),
        Err(e @ RunError::Node { .. }) => e.to_string(),
        Err(other) => panic!("expected a node error, not {other}"),
    }
}

#[test]
fn unet_step_refuses_mismatched_branches_and_empty_samples() {
    let ts = fixtures().join("torchscript");
    let (probe, inputs) = (
        ts.join("batch_probe.pt"),
        ts.join("probe_inputs.safetensors"),
    );
    let tensors = Tensor::read_safetensors(&inputs).unwrap();
    let get = |k: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == k)
            .unwrap()
            .1
            .shallow_clone()
    };
    let (x, cond) = (get("x"), get("cond"));
    // An unconditional context of another width, and an empty batch.
    let wide = Tensor::cat(&[&cond, &cond], -1);
    let mut empty_shape = x.size();
    empty_shape[0] = 0;
    let empty = Tensor::zeros(empty_shape.as_slice(), (x.kind(), x.device()));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.safetensors");
    Tensor::write_safetensors(&[("wide", &wide), ("empty", &empty)], &file).unwrap();
    let graph = |sample: (&Path, &str), uncond: (&Path, &str)| {
        format!(
            r#"{{"nodes": {{
            "m": {{"type": "LoadTorchScriptDenoiser", "inputs": {{"path": {probe:?}}}}},
            "x": {{"type": "LoadTensor", "inputs": {{"path": {:?}, "key": "{}"}}}},
            "c": {{"type": "LoadTensor", "inputs": {{"path": {inputs:?}, "key": "cond"}}}},
            "u": {{"type": "LoadTensor", "inputs": {{"path": {:?}, "key": "{}"}}}},
            "step": {{"type": "UNetStep", "inputs": {{"model": ["m", "model"], "sample": ["x", "tensor"], "timestep": 500,
                      "cond": ["c", "tensor"], "uncond": ["u", "tensor"], "guidance_scale": 7.5}}}},
            "save": {{"type": "SaveTensor", "inputs": {{"tensor": ["step", "model_output"]}}}}}}}}"#,
            sample.0, sample.1, uncond.0, uncond.1
        )
    };
    let e = run_err(&graph((&inputs, "x"), (&file, "wide")));
    assert!(
        e.contains("inputs `cond` and `uncond`") && e.contains("different checkpoints"),
        "{e}"
    );
    let e = run_err(&graph((&file, "empty"), (&inputs, "uncond")));
    assert!(
        e.contains("input `sample`") && e.contains("no zero dimension"),
        "{e}"
    );
}

#[test]
fn vae_decode_refuses_a_latent_with_a_zero_dimension() {
    let ckpt = fixtures().join("sd/sd1-tiny");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lat.safetensors");
    let lat = Tensor::zeros([1, 4, 0, 8], (tch::Kind::Float, tch::Device::Cpu));
    Tensor::write_safetensors(&[("lat", &lat)], &file).unwrap();
    let e = run_err(&format!(
        r#"{{"nodes": {{
        "ckpt": {{"type": "LoadCheckpoint", "inputs": {{"path": {ckpt:?}}}}},
        "lat": {{"type": "LoadTensor", "inputs": {{"path": {file:?}}}}},
        "dec": {{"type": "VAEDecode", "inputs": {{"vae": ["ckpt", "vae"], "latent": ["lat", "tensor"]}}}},
        "save": {{"type": "SaveImage", "inputs": {{"image": ["dec", "image"]}}}}}}}}"#
    ));
    assert!(
        e.contains("no zero dimension") && e.contains("[1, 4, 0, 8]"),
        "{e}"
    );
}
