//! Shared by the latent-diffusion tests (`ldm_parity`, `ldm_ckpt`): the
//! fixture folder and the fp32 CPU comparison.
#![allow(dead_code)]
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// fp32 on the CPU.
pub const TOLERANCE: f64 = 1e-4;

/// tests/fixtures/ldm.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/ldm")
}

/// Asserts the max abs difference is within [`TOLERANCE`], printing it.
pub fn check(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let d = (got.to_kind(Kind::Double) - want.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[]);
    println!("{what}: max abs diff {d:.3e}");
    assert!(d <= TOLERANCE, "{what}: max abs diff {d:e} > {TOLERANCE:e}");
}
