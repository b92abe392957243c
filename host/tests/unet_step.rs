//! UNetStep's batching, seen through a TorchScript probe model that reports
//! the batch size of each call and the context each sample got
//! (tests/fixtures/torchscript, made by scripts/fixtures/make_torchscript_probe.py):
//! conditional and unconditional branches share ONE call, unconditional
//! first (diffusers' order); at guidance 1 the unconditional branch is not
//! computed at all; a batch-1 conditioning serves the whole batch.
mod common;

use diffgraph::{Executor, Silent, Value};
use std::path::Path;
use tch::Tensor;

fn run(guidance: Option<f64>, with_uncond: bool) -> (Tensor, Tensor) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/torchscript");
    let probe = dir.join("batch_probe.pt");
    let inputs = dir.join("probe_inputs.safetensors");
    let mut exec = Executor::new(common::registry_with(&[
        "diffgraph_nodes_core",
        "diffgraph_nodes_sd",
    ]));
    let g = guidance
        .map(|g| format!(r#", "guidance_scale": {g}"#))
        .unwrap_or_default();
    let u = if with_uncond {
        r#", "uncond": ["u", "tensor"]"#
    } else {
        ""
    };
    let text = format!(
        r#"{{"nodes": {{
        "m": {{"type": "LoadTorchScriptDenoiser", "inputs": {{"path": {probe:?}}}}},
        "x": {{"type": "LoadTensor", "inputs": {{"path": {inputs:?}, "key": "x"}}}},
        "c": {{"type": "LoadTensor", "inputs": {{"path": {inputs:?}, "key": "cond"}}}},
        "u": {{"type": "LoadTensor", "inputs": {{"path": {inputs:?}, "key": "uncond"}}}},
        "step": {{"type": "UNetStep", "inputs": {{"model": ["m", "model"], "sample": ["x", "tensor"], "timestep": 500,
                  "cond": ["c", "tensor"]{u}{g}}}}}}}}}"#
    );
    let checked =
        diffgraph::parse_graph(&text, &[], &exec.registry, false).unwrap_or_else(|e| panic!("{e}"));
    let out = exec
        .run(&checked, Some(&["step"]), &Silent)
        .unwrap_or_else(|e| panic!("{e}"));
    let get = |name| match out.output("step", name) {
        Some(Value::Tensor(t)) => t.tensor().shallow_clone(),
        other => panic!("{name}: {other:?}"),
    };
    (get("output_cond"), get("output_uncond"))
}

/// (batch size of the call, context value) seen by every sample.
fn seen(t: &Tensor) -> Vec<(f64, f64)> {
    (0..t.size()[0])
        .map(|i| (t.double_value(&[i, 0, 0]), t.double_value(&[i, 1, 0])))
        .collect()
}

#[test]
fn cond_and_uncond_share_one_batched_call() {
    let (c, u) = run(Some(7.5), true);
    // 3 samples: one call of 6, cond samples got context 7, uncond got -1.
    assert_eq!(seen(&c), vec![(6.0, 7.0); 3]);
    assert_eq!(seen(&u), vec![(6.0, -1.0); 3]);
    // Without a guidance scale input the unconditional branch still runs.
    let (c, u) = run(None, true);
    assert_eq!((seen(&c)[0], seen(&u)[0]), ((6.0, 7.0), (6.0, -1.0)));
}

#[test]
fn guidance_one_skips_the_unconditional_branch() {
    let (c, u) = run(Some(1.0), true);
    assert_eq!(
        seen(&c),
        vec![(3.0, 7.0); 3],
        "the call must be of batch 3, conditional only"
    );
    assert_eq!(seen(&u), seen(&c));
    // Without `uncond` (UNetStep refuses a guidance scale other than 1 then).
    let (c, _) = run(None, false);
    assert_eq!(seen(&c), vec![(3.0, 7.0); 3]);
}
