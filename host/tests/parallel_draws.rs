//! Seeded noise drawn by executors on parallel threads (a server's workers,
//! the test harness) equals noise drawn alone: libtorch has one global CPU
//! generator, and seeding it and drawing from it must not interleave between
//! jobs (`diffgraph_sdk::rng`, the host's lock lent through the ABI).
mod common;

use diffgraph::{Executor, SharedCache};

fn noise(exec: &Executor, seed: i64) -> Vec<f32> {
    // A fresh cache each time, so every run draws.
    let mut exec = Executor::with_cache(exec.registry.clone(), SharedCache::default());
    let graph = format!(
        r#"{{"nodes": {{"n": {{"type": "GaussianNoise", "inputs": {{"seed": {seed}, "shape": [1, 4, 64, 64]}}}}}}}}"#
    );
    let out = common::run_text(&mut exec, &graph, Some(&["n"]));
    common::core_support::floats(&common::core_support::tensor_out(&out, "n", "noise"))
}

#[test]
fn noise_drawn_on_parallel_executors_equals_noise_drawn_alone() {
    let base = Executor::new(common::registry_with(&["diffgraph_nodes_core"]));
    let alone: Vec<Vec<f32>> = (0..4).map(|seed| noise(&base, seed)).collect();
    std::thread::scope(|scope| {
        for (seed, expected) in alone.iter().enumerate() {
            let base = &base;
            scope.spawn(move || {
                for round in 0..150 {
                    let got = noise(base, seed as i64);
                    assert!(
                        got == *expected,
                        "seed {seed}, round {round}: another thread's draw got in between"
                    );
                }
            });
        }
    });
}
