//! `TensorMul` and `TensorSelect` (nodes/core/src/tensor_ops.rs): the
//! elementwise product and the per-step pick from a pre-drawn noise tensor
//! that a hand-written reverse step needs. The draws are guided-diffusion's
//! own (tests/fixtures/adm/sampling.safetensors: one `randn_like(x)` per
//! DDPM step after `torch.manual_seed(5)`); a Loop's `index` picks step i's.
mod common;

use diffgraph::{Executor, Silent};
use tch::Tensor;

fn executor() -> Executor {
    Executor::new(common::registry_with(&["diffgraph_nodes_core"]))
}

fn draws_path() -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/adm/sampling.safetensors");
    p.to_str().unwrap().to_string()
}

fn reference_draws() -> Tensor {
    Tensor::read_safetensors(draws_path())
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "ddpm_cosine_sections.draws")
        .unwrap()
        .1
}

/// Runs `text` up to the node `target` (the graphs have no output node).
fn run(text: &str, target: &str) -> Result<diffgraph::RunOutcome, String> {
    let mut exec = executor();
    let checked =
        diffgraph::parse_graph(text, &[], &exec.registry, false).map_err(|e| e.to_string())?;
    exec.run(&checked, Some(&[target]), &Silent)
        .map_err(|e| e.to_string())
}

/// A Loop over the steps sums `draws[index] * w` into its carried tensor:
/// the result is Σ_i draws[i]·w, computed here from the reference's draws.
#[test]
fn a_loop_picks_each_steps_draw_and_multiplies_it() {
    let draws = reference_draws();
    let steps = draws.size()[0];
    let graph = format!(
        r#"{{"nodes": {{
            "draws": {{"type": "LoadTensor", "inputs": {{"path": {path:?}, "key": "ddpm_cosine_sections.draws"}}}},
            "zero": {{"type": "TensorScale", "inputs": {{"x": ["first", "selected"], "factor": 0.0}}}},
            "first": {{"type": "TensorSelect", "inputs": {{"x": ["draws", "tensor"], "index": 0}}}},
            "w": {{"type": "TensorSelect", "inputs": {{"x": ["draws", "tensor"], "index": -1}}}},
            "loop": {{"type": "Loop", "inputs": {{"over": {steps}, "acc": ["zero", "scaled"]}},
              "body": {{
                "pick": {{"type": "TensorSelect", "inputs": {{"x": ["draws", "tensor"], "index": ["loop", "index"]}}}},
                "prod": {{"type": "TensorMul", "inputs": {{"a": ["pick", "selected"], "b": ["w", "selected"]}}}},
                "sum": {{"type": "TensorAdd", "inputs": {{"a": ["loop", "acc"], "b": ["prod", "product"]}}}}
              }},
              "next": {{"acc": ["sum", "sum"]}}
            }}
        }}}}"#,
        path = draws_path()
    );
    let out = run(&graph, "loop").unwrap();
    let got = out
        .output("loop", "acc")
        .and_then(|v| v.as_tensor())
        .expect("the loop's tensor")
        .shallow_clone();
    let w = draws.get(steps - 1);
    let mut want = draws.get(0).zeros_like();
    for i in 0..steps {
        want += draws.get(i) * &w;
    }
    assert_eq!(got.size(), vec![2, 3, 8, 8]);
    assert_eq!((got - want).abs().max().double_value(&[]), 0.0);
}

#[test]
fn bad_indices_dims_and_shapes_are_clear_errors() {
    let path = draws_path();
    let graph = |index: i64, dim: i64| {
        format!(
            r#"{{"nodes": {{
                "d": {{"type": "LoadTensor", "inputs": {{"path": {path:?}, "key": "ddpm_cosine_sections.draws"}}}},
                "s": {{"type": "TensorSelect", "inputs": {{"x": ["d", "tensor"], "index": {index}, "dim": {dim}}}}}
            }}}}"#
        )
    };
    let e = run(&graph(10, 0), "s").unwrap_err();
    assert!(
        e.contains("input `index`: 10 is out of range for dimension 0 of size 10"),
        "{e}"
    );
    let e = run(&graph(0, 5), "s").unwrap_err();
    assert!(e.contains("input `dim`: 5 is not a dimension"), "{e}");
    let e = run(&format!(
        r#"{{"nodes": {{
            "d": {{"type": "LoadTensor", "inputs": {{"path": {path:?}, "key": "ddpm_cosine_sections.draws"}}}},
            "a": {{"type": "TensorSelect", "inputs": {{"x": ["d", "tensor"], "index": 0, "dim": 4}}}},
            "m": {{"type": "TensorMul", "inputs": {{"a": ["d", "tensor"], "b": ["a", "selected"]}}}}
        }}}}"#
    ), "m")
    .unwrap_err();
    assert!(e.contains("cannot be multiplied"), "{e}");
}
