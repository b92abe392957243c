//! Integration tests for the `core` plugin (nodes/core): each runs a small
//! graph through the real host and checks the results against known values.
//! Saving and loading images: core_images.rs.
mod common;

use common::core_support::*;
use diffgraph::Value;
use tch::{Kind, Tensor};

#[test]
fn gaussian_noise_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let mut exec = executor(dir.path());
    let graph = r#"{"nodes": {
        "n": {"type": "GaussianNoise", "inputs": {"seed": 42, "shape": [2, 3]}},
        "s": {"type": "GaussianNoise", "inputs": {"seed": 0, "shape": [5], "scale": 2.5}}
    }}"#;
    let out = common::run_text(&mut exec, graph, Some(&["n", "s"]));
    let n = tensor_out(&out, "n", "noise");
    assert_eq!(n.size(), vec![2, 3]);
    assert_eq!(n.kind(), Kind::Float);
    // torch.randn(2, 3, generator=torch.Generator().manual_seed(42)), torch 2.11
    let expected = [
        0.33669036626815796,
        0.12880940735340118,
        0.23446236550807953,
        0.23033303022384644,
        -1.1228563785552979,
        -0.18632829189300537,
    ];
    for (got, want) in floats(&n).iter().zip(expected) {
        assert!(
            (*got as f64 - want).abs() < 1e-6,
            "got {:?}, want {expected:?}",
            floats(&n)
        );
    }
    // torch.randn(5, generator=torch.Generator().manual_seed(0)) * 2.5
    let expected = [
        3.8524901867,
        -0.7335722446,
        -5.4469733238,
        1.4210782051,
        -2.7113058567,
    ];
    for (got, want) in floats(&tensor_out(&out, "s", "noise")).iter().zip(expected) {
        assert!(
            (*got as f64 - want).abs() < 1e-6,
            "scaled noise: got {got}, want {want}"
        );
    }
}

#[test]
fn gaussian_noise_same_seed_same_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut exec = executor(dir.path());
    let graph = |seed: i64| {
        format!(
            r#"{{"nodes": {{"n": {{"type": "GaussianNoise", "inputs": {{"seed": {seed}, "shape": [1, 4, 8, 8]}}}}}}}}"#
        )
    };
    let first = tensor_out(
        &common::run_text(&mut exec, &graph(7), Some(&["n"])),
        "n",
        "noise",
    );
    exec.cache.clear();
    let other = tensor_out(
        &common::run_text(&mut exec, &graph(8), Some(&["n"])),
        "n",
        "noise",
    );
    exec.cache.clear();
    let out = common::run_text(&mut exec, &graph(7), Some(&["n"]));
    assert_eq!(
        out.executed,
        vec!["n".to_string()],
        "the second draw must really run, not come from the cache"
    );
    let again = tensor_out(&out, "n", "noise");
    assert_eq!(first.size(), vec![1, 4, 8, 8]);
    assert!(first.equal(&again), "same seed gave different noise");
    assert!(!first.equal(&other), "seeds 7 and 8 gave the same noise");
}

#[test]
fn empty_latent_and_latent_to_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut exec = executor(dir.path());
    let graph = r#"{"nodes": {
        "z": {"type": "EmptyLatent", "inputs": {"shape": [1, 3, 2, 2]}},
        "zi": {"type": "LatentToImage", "inputs": {"latent": ["z", "latent"]}},
        "n": {"type": "GaussianNoise", "inputs": {"seed": 1, "shape": [64], "scale": 3.0}},
        "ni": {"type": "LatentToImage", "inputs": {"latent": ["n", "noise"]}}
    }}"#;
    let out = common::run_text(&mut exec, graph, Some(&["z", "zi", "n", "ni"]));
    assert_eq!(floats(&tensor_out(&out, "z", "latent")), vec![0.0; 12]);
    assert_eq!(floats(&tensor_out(&out, "zi", "image")), vec![0.5; 12]);
    for (x, y) in floats(&tensor_out(&out, "n", "noise"))
        .iter()
        .zip(floats(&tensor_out(&out, "ni", "image")))
    {
        assert_eq!(y, (x * 0.5 + 0.5).clamp(0.0, 1.0));
    }
}

/// A [1,3,2,2] image with known values, saved as a .safetensors input file.
#[test]
fn save_tensor_then_load_tensor_round_trips() {
    let out_dir = tempfile::tempdir().unwrap();
    let mut exec = executor(out_dir.path());
    let save = r#"{"nodes": {
        "n": {"type": "GaussianNoise", "inputs": {"seed": 3, "shape": [2, 3, 4]}},
        "save": {"type": "SaveTensor", "inputs": {"tensor": ["n", "noise"], "filename": "sub/x.safetensors", "key": "weights"}}
    }}"#;
    let out = common::run_text(&mut exec, save, Some(&["n", "save"]));
    let original = tensor_out(&out, "n", "noise");
    let written = out_dir.path().join("sub").join("x.safetensors");
    assert_eq!(
        out.output("save", "path").map(|v| v.to_string()),
        Some(written.to_string_lossy().into_owned())
    );
    assert_eq!(
        listing(written.parent().unwrap()),
        vec!["x.safetensors"],
        "temporary files were left behind"
    );

    for key in [r#", "key": "weights""#, ""] {
        let load = format!(
            r#"{{"nodes": {{"load": {{"type": "LoadTensor", "inputs": {{"path": {:?}{key}}}}}}}}}"#,
            written.to_str().unwrap()
        );
        let loaded = tensor_out(
            &common::run_text(&mut exec, &load, Some(&["load"])),
            "load",
            "tensor",
        );
        assert_eq!(loaded.kind(), Kind::Float);
        assert!(
            loaded.equal(&original),
            "LoadTensor{key} did not give back the saved tensor"
        );
    }

    let err = run_err(
        &mut exec,
        &save.replace("sub/x.safetensors", "../x.safetensors"),
    );
    assert!(
        err.contains("input `filename`") && err.contains(".."),
        "{err}"
    );
}

#[test]
fn load_tensor_wrong_key_lists_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.safetensors");
    let a = Tensor::from_slice(&[1i64, 2]);
    let b = Tensor::from_slice(&[1.5f32]);
    Tensor::write_safetensors(&[("beta", &b), ("alpha", &a)], &path).unwrap();
    let mut exec = executor(dir.path());
    let graph = |key: &str| {
        format!(
            r#"{{"nodes": {{
                "load": {{"type": "LoadTensor", "inputs": {{"path": {:?}{key}}}}},
                "save": {{"type": "SaveTensor", "inputs": {{"tensor": ["load", "tensor"]}}}}
            }}}}"#,
            path.to_str().unwrap()
        )
    };
    let err = run_err(&mut exec, &graph(r#", "key": "gamma""#));
    assert!(
        err.contains(path.to_str().unwrap()),
        "error should name the file: {err}"
    );
    assert!(
        err.contains("\"gamma\"") && err.contains("alpha, beta"),
        "error should list the keys: {err}"
    );
    let err = run_err(&mut exec, &graph(""));
    assert!(
        err.contains("holds 2 tensors") && err.contains("alpha, beta"),
        "{err}"
    );

    let out = common::run_text(&mut exec, &graph(r#", "key": "alpha""#), Some(&["load"]));
    let t = tensor_out(&out, "load", "tensor");
    assert_eq!(t.kind(), Kind::Int64);
    assert_eq!(Vec::<i64>::try_from(&t).unwrap(), vec![1, 2]);
}

#[test]
fn range_follows_python_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let mut exec = executor(dir.path());
    let graph = r#"{"nodes": {
        "a": {"type": "Range", "inputs": {"stop": 4}},
        "b": {"type": "Range", "inputs": {"start": 10, "stop": 0, "step": -3}},
        "c": {"type": "Range", "inputs": {"start": 1, "stop": 10, "step": 3}},
        "d": {"type": "Range", "inputs": {"start": 5, "stop": 0}},
        "l": {"type": "IntList", "inputs": {"values": [3, 1, 2]}}
    }}"#;
    let out = common::run_text(&mut exec, graph, Some(&["a", "b", "c", "d", "l"]));
    assert_eq!(ints(out.output("a", "values")), vec![0, 1, 2, 3]);
    assert_eq!(ints(out.output("b", "values")), vec![10, 7, 4, 1]);
    assert_eq!(ints(out.output("c", "values")), vec![1, 4, 7]);
    assert_eq!(ints(out.output("d", "values")), Vec::<i64>::new());
    assert_eq!(ints(out.output("l", "values")), vec![3, 1, 2]);

    let zero = r#"{"nodes": {
        "r": {"type": "Range", "inputs": {"stop": 3, "step": 0}},
        "s": {"type": "SaveTensor", "inputs": {"tensor": ["e", "latent"]}},
        "e": {"type": "EmptyLatent", "inputs": {"shape": ["r", "values"]}}
    }}"#;
    let err = run_err(&mut exec, zero);
    assert!(
        err.contains("input `step`") && err.contains("nonzero"),
        "{err}"
    );
}

#[test]
fn constants_and_math() {
    let dir = tempfile::tempdir().unwrap();
    let mut exec = executor(dir.path());
    let input = dir.path().join("x.safetensors");
    Tensor::write_safetensors(
        &[("x", &Tensor::from_slice(&[1.0f32, 2.0, 3.0, 6.0]))],
        &input,
    )
    .unwrap();
    let graph = format!(
        r#"{{"nodes": {{
            "i": {{"type": "IntConstant", "inputs": {{"value": 40}}}},
            "sum": {{"type": "IntAdd", "inputs": {{"a": ["i", "value"], "b": 2}}}},
            "f": {{"type": "FloatConstant", "inputs": {{"value": 0.25}}}},
            "fsum": {{"type": "FloatAdd", "inputs": {{"a": ["f", "value"], "b": 1}}}},
            "b": {{"type": "BoolConstant", "inputs": {{"value": true}}}},
            "s": {{"type": "StringConstant", "inputs": {{"value": "hi"}}}},
            "x": {{"type": "LoadTensor", "inputs": {{"path": {:?}}}}},
            "scaled": {{"type": "TensorScale", "inputs": {{"x": ["x", "tensor"], "factor": ["fsum", "sum"]}}}},
            "added": {{"type": "TensorAdd", "inputs": {{"a": ["x", "tensor"], "b": ["scaled", "scaled"]}}}},
            "stats": {{"type": "TensorStats", "inputs": {{"x": ["x", "tensor"]}}}}
        }}}}"#,
        input.to_str().unwrap()
    );
    let out = common::run_text(
        &mut exec,
        &graph,
        Some(&["sum", "fsum", "b", "s", "added", "stats"]),
    );
    assert!(matches!(out.output("sum", "sum"), Some(Value::Int(42))));
    assert!(matches!(out.output("fsum", "sum"), Some(Value::Float(f)) if *f == 1.25));
    assert!(matches!(out.output("b", "value"), Some(Value::Bool(true))));
    assert_eq!(
        out.output("s", "value").map(|v| v.to_string()),
        Some("hi".into())
    );
    assert_eq!(
        floats(&tensor_out(&out, "added", "sum")),
        vec![2.25, 4.5, 6.75, 13.5]
    );
    let stat = |name: &str| match out.output("stats", name) {
        Some(Value::Float(f)) => *f,
        other => panic!("stats.{name} is {other:?}"),
    };
    // torch.tensor([1., 2., 3., 6.]).std() (unbiased) = sqrt(14 / 3)
    assert_eq!((stat("mean"), stat("min"), stat("max")), (3.0, 1.0, 6.0));
    assert!(
        (stat("std") - (14.0f64 / 3.0).sqrt()).abs() < 1e-12,
        "std {}",
        stat("std")
    );
}
