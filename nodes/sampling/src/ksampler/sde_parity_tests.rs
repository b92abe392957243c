//! The SDE samplers against ComfyUI's own code and torchsde
//! (tests/fixtures/comfy/ksampler_sde_reference.json, written by
//! `scripts/fixtures/comfy_sampler_reference.py --sde`): numpy SeedSequence
//! states, raw torchsde BrownianTree increments, and dpmpp_sde /
//! dpmpp_2m_sde (midpoint, heun) / dpmpp_3m_sde and their `_gpu` names with
//! every scheduler (10 steps, cfg 4), img2img (denoise 0.6, cfg 1, a seed
//! above 2^32), v-prediction, KSamplerAdvanced's split and inpainting.
use super::parity_tests::{
    check_inpainting, check_trajectories, floats, max_diff, named_fixture, run, shape_of, Case, TOL,
};
use crate::brownian::seed_sequence::SeedSequence;
use crate::brownian::BrownianTree;
use diffgraph_diffusion::comfy::{
    ksampler_sigmas, truncate_steps, DiscreteSampling, ModelPrediction,
};
use diffgraph_sdk::tch::{Device, Kind, Tensor};
use serde_json::Value;

fn fixture() -> Value {
    named_fixture("ksampler_sde_reference.json")
}

fn big(v: &Value) -> u128 {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn seed_sequences_match_numpy() {
    let fx = fixture();
    let cases = fx["seed_sequences"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for c in cases {
        let key: Vec<u128> = c["spawn_key"].as_array().unwrap().iter().map(big).collect();
        let got = SeedSequence::new(big(&c["entropy"]), &key, 24).generate_state(4);
        let want: Vec<u32> = c["state"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, want, "{c}");
    }
}

#[test]
fn brownian_tree_increments_match_torchsde() {
    let fx = fixture();
    let shape = shape_of(&fx);
    for c in fx["trees"].as_array().unwrap() {
        // torch.tensor(t) is float32; torchsde reads float(t).
        let f = |k: &str| f64::from(c[k].as_f64().unwrap() as f32);
        let tree =
            BrownianTree::new(f("t0"), f("t1"), &shape, Kind::Float, big(&c["seed"])).unwrap();
        let w = tree.increment(f("ta"), f("tb")).unwrap();
        assert_eq!(max_diff(&w, &floats(&c["w"])), 0.0, "{}", c["ta"]);
    }
}

#[test]
fn sde_samplers_match_comfyui() {
    // 8 names x 11 cases; measured: 0.0 for every one of them.
    let worst = check_trajectories(&fixture(), 88);
    assert!(worst <= TOL);
}

#[test]
fn sde_advanced_split_and_inpainting_match_comfyui() {
    let fx = fixture();
    let shape = shape_of(&fx);
    let ms = DiscreteSampling::sd(ModelPrediction::Eps).unwrap();
    let zeros = Tensor::zeros(&shape, (Kind::Float, Device::Cpu));
    for c in fx["advanced"].as_array().unwrap() {
        let sampler = c["sampler"].as_str().unwrap();
        let (cfg, seed) = (c["cfg"].as_f64().unwrap(), c["seed"].as_i64().unwrap());
        let split = c["split"].as_u64().unwrap() as usize;
        let all = ksampler_sigmas(&ms, "karras", sampler, 10, 1.0).unwrap();
        let case = |sigmas, latent, add_noise| Case {
            sampler,
            sigmas,
            cfg,
            seed,
            latent,
            add_noise,
            prediction: ModelPrediction::Eps,
            mask: None,
        };
        let first_sigmas = truncate_steps(&all, Some(0), Some(split), false).unwrap();
        let first = run(case(first_sigmas, zeros.copy(), true), &fx["toy"]);
        let d = max_diff(&first, &floats(&c["first"]));
        assert!(d <= TOL, "{sampler} first half: {d:e}");
        let second_sigmas = truncate_steps(&all, Some(split), Some(10_000), true).unwrap();
        let second = run(case(second_sigmas, first, false), &fx["toy"]);
        let d = max_diff(&second, &floats(&c["second"]));
        assert!(d <= TOL, "{sampler} second half: {d:e}");
        eprintln!("{sampler} KSamplerAdvanced split: second half max |diff| {d:e}");
    }
    check_inpainting(&fx, 4);
}
