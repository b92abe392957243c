//! ComfyUI's samplers against ComfyUI's own code
//! (tests/fixtures/comfy/ksampler_reference.json, written by
//! scripts/fixtures/comfy_sampler_reference.py): every implemented sampler
//! with every scheduler (10 steps, cfg 4, txt2img), img2img (denoise 0.6,
//! cfg 1), v-prediction, and KSamplerAdvanced's split, on the fixture's toy
//! eps-model, which this file implements with the same libtorch ops.
use super::{evaluations, method, prepare_mask, Inpaint, KRun};
use crate::noise::seeded_randn;
use diffgraph_diffusion::cfg::cfg_mix;
use diffgraph_diffusion::comfy::{
    ksampler_sigmas, truncate_steps, DiscreteSampling, ModelPrediction,
};
use diffgraph_sdk::tch::{Kind, Tensor};
use serde_json::Value;

/// Max abs difference allowed for a whole trajectory (fp32 CPU).
pub(super) const TOL: f64 = 1e-5;

fn fixture() -> Value {
    named_fixture("ksampler_reference.json")
}

/// A fixture of tests/fixtures/comfy/.
pub(super) fn named_fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/comfy/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

pub(super) fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn toy_eps(xc: &Tensor, t: i64, (a, b): (f64, f64)) -> Tensor {
    let t = Tensor::from_slice(&[t as f32]).reshape([-1, 1, 1, 1]);
    (xc * a + t * b).tanh() * 0.5 + xc * 0.3
}

/// The fixture's guider: both branches' denoised, ComfyUI's CFG mix.
fn denoise(ms: &DiscreteSampling, x: &Tensor, sigma: f32, cfg: f64, toy: &Value) -> Tensor {
    let pair = |k: &str| (toy[k][0].as_f64().unwrap(), toy[k][1].as_f64().unwrap());
    let branch = |p| {
        let xc = ms.calculate_input(sigma, x).unwrap();
        let out = toy_eps(&xc, ms.timestep(sigma).unwrap(), p);
        ms.calculate_denoised(sigma, &out, x).unwrap()
    };
    let cond = branch(pair("cond"));
    let uncond = if (cfg - 1.0).abs() <= 1e-9 {
        cond.zeros_like()
    } else {
        branch(pair("uncond"))
    };
    cfg_mix(&cond, &uncond, cfg, 0.0).unwrap()
}

pub(super) struct Case<'a> {
    pub sampler: &'a str,
    pub sigmas: Vec<f32>,
    pub cfg: f64,
    pub seed: i64,
    pub latent: Tensor,
    pub add_noise: bool,
    pub prediction: ModelPrediction,
    pub mask: Option<Tensor>,
}

/// nodes.common_ksampler -> KSAMPLER.sample -> sample_*, with the toy model.
pub(super) fn run(case: Case, toy: &Value) -> Tensor {
    let ms = DiscreteSampling::sd(case.prediction).unwrap();
    let shape = case.latent.size();
    let noise = if case.add_noise {
        seeded_randn(case.seed, &shape).unwrap()
    } else {
        Tensor::zeros(&shape, (Kind::Float, diffgraph_sdk::tch::Device::Cpu))
    };
    let s0 = case.sigmas[0];
    let x = ms
        .noise_scaling(s0, &noise, &case.latent, ms.max_denoise(s0).unwrap())
        .unwrap();
    let m = method(case.sampler).unwrap();
    let total = evaluations(m, &case.sigmas).unwrap();
    let mut krun = KRun::new(m, ms, case.sigmas, case.seed, x);
    if let Some(mask) = &case.mask {
        let noise = if case.sampler == "ddim" {
            seeded_randn(case.seed + 1, &shape).unwrap()
        } else {
            noise
        };
        let mask = prepare_mask(mask, &shape).unwrap();
        krun = krun
            .with_inpaint(Inpaint {
                mask,
                latent: case.latent.copy(),
                noise,
            })
            .unwrap();
    }
    let mut calls = 0;
    while !krun.done() {
        let (x, sigma) = krun.model_input().unwrap();
        let den = denoise(krun.sampling(), &x, sigma, case.cfg, toy);
        krun = krun.feed(&den).unwrap();
        calls += 1;
    }
    assert_eq!(calls, total, "evaluations() counts the model calls");
    krun.x().shallow_clone()
}

pub(super) fn max_diff(got: &Tensor, want: &[f32]) -> f64 {
    let got: Vec<f32> = Vec::try_from(&got.flatten(0, -1)).unwrap();
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max)
}

/// The latent shape of a fixture.
pub(super) fn shape_of(fx: &Value) -> Vec<i64> {
    fx["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// Runs every case of a fixture's `trajectories` (at least `min_cases`)
/// and fails listing those beyond [`TOL`]; the worst max |diff|.
pub(super) fn check_trajectories(fx: &Value, min_cases: usize) -> f64 {
    let image = Tensor::from_slice(&floats(&fx["image_latent"])).reshape(shape_of(fx));
    let mut report = Vec::new();
    let mut worst: f64 = 0.0;
    let cases = fx["trajectories"].as_array().unwrap();
    assert!(cases.len() >= min_cases);
    for c in cases {
        let prediction = ModelPrediction::parse(c["prediction"].as_str().unwrap()).unwrap();
        let ms = DiscreteSampling::sd(prediction).unwrap();
        let sampler = c["sampler"].as_str().unwrap();
        let sigmas = ksampler_sigmas(
            &ms,
            c["scheduler"].as_str().unwrap(),
            sampler,
            c["steps"].as_u64().unwrap() as usize,
            c["denoise"].as_f64().unwrap(),
        )
        .unwrap();
        let latent = if c["latent"] == "image" {
            image.copy()
        } else {
            image.zeros_like()
        };
        let got = run(
            Case {
                sampler,
                sigmas,
                cfg: c["cfg"].as_f64().unwrap(),
                seed: c["seed"].as_i64().unwrap(),
                latent,
                add_noise: true,
                prediction,
                mask: None,
            },
            &fx["toy"],
        );
        let d = max_diff(&got, &floats(&c["out"]));
        worst = worst.max(d);
        if d > TOL {
            report.push(format!(
                "{sampler} {} {} {}: max |diff| {d:e}",
                c["scheduler"], c["prediction"], c["denoise"]
            ));
        }
    }
    eprintln!(
        "worst max |diff| over {} trajectories: {worst:e}",
        cases.len()
    );
    assert!(
        report.is_empty(),
        "{} of {} trajectories differ:\n{}",
        report.len(),
        cases.len(),
        report.join("\n")
    );
    worst
}

#[test]
fn every_sampler_and_scheduler_matches_comfyui() {
    // Measured: 0.0 for all of them (every op is libtorch's, in ComfyUI's order).
    check_trajectories(&fixture(), 101);
}

#[test]
fn advanced_split_matches_comfyui_and_the_whole_run() {
    let fx = fixture();
    let shape: Vec<i64> = fx["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let ms = DiscreteSampling::sd(ModelPrediction::Eps).unwrap();
    for c in fx["advanced"].as_array().unwrap() {
        let sampler = c["sampler"].as_str().unwrap();
        let (cfg, seed) = (c["cfg"].as_f64().unwrap(), c["seed"].as_i64().unwrap());
        let split = c["split"].as_u64().unwrap() as usize;
        let all = ksampler_sigmas(
            &ms,
            c["scheduler"].as_str().unwrap(),
            sampler,
            c["steps"].as_u64().unwrap() as usize,
            1.0,
        )
        .unwrap();
        let zeros = Tensor::zeros(&shape, (Kind::Float, diffgraph_sdk::tch::Device::Cpu));
        let first_sigmas = truncate_steps(&all, Some(0), Some(split), false).unwrap();
        let first = run(
            Case {
                sampler,
                sigmas: first_sigmas,
                cfg,
                seed,
                latent: zeros.copy(),
                add_noise: true,
                prediction: ModelPrediction::Eps,
                mask: None,
            },
            &fx["toy"],
        );
        assert!(
            max_diff(&first, &floats(&c["first"])) <= TOL,
            "{sampler} first half"
        );
        let second_sigmas = truncate_steps(&all, Some(split), Some(10_000), true).unwrap();
        let second = run(
            Case {
                sampler,
                sigmas: second_sigmas,
                cfg,
                seed,
                latent: first,
                add_noise: false,
                prediction: ModelPrediction::Eps,
                mask: None,
            },
            &fx["toy"],
        );
        assert!(
            max_diff(&second, &floats(&c["second"])) <= TOL,
            "{sampler} second half"
        );
        if sampler == "euler" || sampler == "heun" {
            // One-step methods: two advanced samplers are one KSampler, bit for bit
            // (dpmpp_2m restarts its history at the split, in ComfyUI too).
            assert_eq!(
                max_diff(&second, &floats(&c["whole"])),
                0.0,
                "{sampler} split vs whole"
            );
        }
    }
}

/// Runs every case of a fixture's `inpaint` (at least `min_cases`) with its
/// `inpaint_mask` on `image_latent`; each within [`TOL`]. The worst max |diff|.
pub(super) fn check_inpainting(fx: &Value, min_cases: usize) -> f64 {
    let image = Tensor::from_slice(&floats(&fx["image_latent"])).reshape(shape_of(fx));
    let mask = Tensor::from_slice(&floats(&fx["inpaint_mask"])).reshape([1, 8, 8]);
    let ms = DiscreteSampling::sd(ModelPrediction::Eps).unwrap();
    let cases = fx["inpaint"].as_array().unwrap();
    assert!(cases.len() >= min_cases);
    let mut worst: f64 = 0.0;
    for c in cases {
        let sampler = c["sampler"].as_str().unwrap();
        let denoise = c["denoise"].as_f64().unwrap();
        let sigmas = ksampler_sigmas(
            &ms,
            "normal",
            sampler,
            c["steps"].as_u64().unwrap() as usize,
            denoise,
        )
        .unwrap();
        let case = Case {
            sampler,
            sigmas,
            cfg: c["cfg"].as_f64().unwrap(),
            seed: c["seed"].as_i64().unwrap(),
            latent: image.copy(),
            add_noise: true,
            prediction: ModelPrediction::Eps,
            mask: Some(mask.copy()),
        };
        let d = max_diff(&run(case, &fx["toy"]), &floats(&c["out"]));
        assert!(d <= TOL, "{sampler} denoise {denoise}: max |diff| {d:e}");
        worst = worst.max(d);
    }
    eprintln!(
        "worst max |diff| over {} inpainting runs: {worst:e}",
        cases.len()
    );
    worst
}

#[test]
fn inpainting_masks_match_comfyuis_ksampler_x0_inpaint() {
    check_inpainting(&fixture(), 12);
}
