//! Shared by the ADM tests: fixture paths, the deterministic weights of
//! make_adm_fixtures.py, and classifier_sample.py's gradient.
#![allow(dead_code)]
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

pub fn fixtures() -> PathBuf {
    // nodes/sd (this crate) or host/ (which includes this module).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ["../../tests/fixtures/adm", "../tests/fixtures/adm"]
        .iter()
        .map(|p| dir.join(p))
        .find(|p| p.is_dir())
        .expect("tests/fixtures/adm")
}

pub fn json(name: &str) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn keys(entry: &Value) -> Vec<(String, Vec<i64>)> {
    entry["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let shape = k[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            (k[0].as_str().unwrap().to_string(), shape)
        })
        .collect()
}

/// make_adm_fixtures.py `det_param`: splitmix64 values, scaled by kind.
pub fn det_param(index: u64, name: &str, shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let base = (index << 32) + 1;
    let inv_fan = 1.0 / (shape.iter().skip(1).product::<i64>() as f64).sqrt();
    let vals: Vec<f32> = (0..n as u64)
        .map(|i| {
            let mut z = i.wrapping_add(base).wrapping_mul(0x9E3779B97F4A7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 * 2f64.powi(-53) * 2.0 - 1.0;
            let v = if shape.len() >= 2 {
                u * inv_fan
            } else if name.ends_with("weight") {
                1.0 + 0.1 * u
            } else {
                0.1 * u
            };
            v as f32
        })
        .collect();
    Tensor::from_slice(&vals).reshape(shape)
}

pub fn det_state_dict(keys: &[(String, Vec<i64>)]) -> BTreeMap<String, Tensor> {
    keys.iter()
        .enumerate()
        .map(|(i, (k, s))| (k.clone(), det_param(i as u64, k, s)))
        .collect()
}

/// Shape-only stand-ins: a broadcast scalar per key, no memory.
pub fn shapes_only(keys: &[(String, Vec<i64>)]) -> BTreeMap<String, Tensor> {
    keys.iter()
        .map(|(k, s)| {
            (
                k.clone(),
                Tensor::zeros([1], (Kind::Float, Device::Cpu)).expand(s.as_slice(), false),
            )
        })
        .collect()
}

pub fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// The tensors of a fixture file by name.
pub fn tensors(file: &str) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join(file))
        .unwrap()
        .into_iter()
        .collect()
}

pub fn inputs() -> BTreeMap<String, Tensor> {
    tensors("tiny.safetensors")
}

/// classifier_sample.py `cond_fn` without the scale: the gradient of the sum
/// of each sample's own log-probability.
pub fn cond_grad(logits_of: impl Fn(&Tensor) -> Tensor, x: &Tensor, y: &Tensor) -> Tensor {
    let x = x.detach().set_requires_grad(true);
    let lp = logits_of(&x).log_softmax(-1, Kind::Float);
    let selected = lp.gather(1, &y.unsqueeze(1), false).sum(Kind::Float);
    Tensor::run_backward(&[selected], &[&x], false, false).remove(0)
}
