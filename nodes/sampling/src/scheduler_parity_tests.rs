//! Parity of every sampler with diffusers, against
//! tests/fixtures/schedulers_reference*.json (made by
//! scripts/fixtures/scheduler_reference.py): timesteps, sigmas and
//! init_noise_sigma for every sampler x spacing x Karras; 10-step
//! trajectories with a synthetic model for every prediction type (stochastic
//! samplers seeded); img2img at strength 0.6; LMS coefficients; numpy's
//! float32 log. The loops run through `SchedulerState`, as the graph does.
//!
//! There is one fixture per kind of libtorch CPU math (MKL's vector math
//! rounds torch's float32 sqrt, log and exp differently on Intel AVX-512,
//! Intel AVX2 and non-Intel CPUs; see the script's docstring); [`fixture`]
//! picks the one made under the math of the machine running the tests.
use crate::config::{ConfigFile, Overrides};
use crate::demo::synthetic::synthetic_output;
use crate::noise::NoiseStream;
use crate::quadrature::lms_coefficient;
use crate::samplers;
use crate::state::SchedulerState;
use diffgraph_diffusion::{numpy, sigmas, ConfigName, Schedule, ScheduleConfig};
use diffgraph_sdk::prelude::*;
use serde_json::{json, Value as Json};

/// The tests/fixtures/schedulers_reference*.json whose `training_sigmas`
/// (SD's, from diffusers' torch ops on the machine that made it) equal bit
/// for bit the ones libtorch computes here: every value in it depends on
/// the same libtorch math, which the Rust side calls too.
pub fn fixture() -> Json {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
    let sd = ConfigFile::stable_diffusion();
    let schedule = Schedule::new(sd.schedule(ScheduleConfig::default()).unwrap()).unwrap();
    let here = sigmas::training_sigmas(&schedule).unwrap();
    let mut tried = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("schedulers_reference") && n.ends_with(".json"))
        .collect();
    names.sort();
    for name in names {
        let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        let f: Json = serde_json::from_str(&text).expect("fixture is JSON");
        let want = floats(&f["training_sigmas"]);
        let differ = (want.len() != here.len()) as usize
            + here
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
        if differ == 0 {
            eprintln!("scheduler reference: tests/fixtures/{name}");
            return f;
        }
        tried.push(format!("{name}: {differ} differ"));
    }
    panic!(
        "no scheduler fixture was made under this machine's libtorch math (SD training \
         sigmas: {}); make one with scripts/fixtures/scheduler_reference.py NAME",
        tried.join(", ")
    )
}

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn tensor(f: &Json, key: &str) -> Tensor {
    let shape: Vec<i64> = f["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    Tensor::from_slice(&floats(&f[key])).view(shape.as_slice())
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ: {a:?} vs {b:?}");
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max)
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(Kind::Float).reshape([-1])).unwrap()
}

/// The case's scheduler state, built as the `Scheduler` node builds it.
fn state_for(f: &Json, case: &Json, strength: f64) -> SchedulerState {
    let info = samplers::find("", case["sampler"].as_str().unwrap()).unwrap();
    let name = |key: &str| case.get(key).map(|v| v.as_str().unwrap());
    let o = Overrides {
        prediction_type: name("prediction_type").map(|p| ConfigName::parse("", p).unwrap()),
        timestep_spacing: name("spacing").map(|s| ConfigName::parse("", s).unwrap()),
        use_karras_sigmas: case
            .get("karras")
            .and_then(Json::as_bool)
            .filter(|_| info.karras),
        ..Overrides::default()
    };
    // The case's extra config keys, over SD's config file.
    let mut file = ConfigFile(f["sd_config"].as_object().unwrap().clone());
    if let Some(Json::Object(extra)) = case.get("config") {
        file.0.extend(extra.clone());
    }
    let steps = case["steps"].as_i64().unwrap();
    let eta = case.get("eta").and_then(Json::as_f64).unwrap_or(0.0);
    let sampler = samplers::build(info, &file, &o, steps, eta).unwrap();
    let start =
        crate::nodes::scheduler::img2img_start(steps, strength).unwrap() as usize * sampler.order();
    let seed = case["seed"].as_i64().unwrap_or(0);
    SchedulerState::new(sampler, start, NoiseStream::new(seed, 0))
}

/// The pipeline's loop with the synthetic model; returns the final sample and the last x0.
fn run(state: SchedulerState, mut x: Tensor, direction: &Tensor) -> (Tensor, Tensor) {
    let mut state = state;
    let mut x0 = None;
    for t in state.run_timesteps() {
        let t = f64::from(t);
        let input = state.scale_model_input(&x, Some(t)).unwrap();
        let out = synthetic_output(&input, t, direction, 0.1, 100.0).unwrap();
        let (step, next) = state.step(&out, Some(t), &x).unwrap();
        x = step.prev_sample;
        x0 = Some(step.pred_original_sample);
        state = next;
    }
    (x, x0.unwrap())
}

#[test]
fn numpy_float32_log_is_reproduced() {
    let f = fixture();
    let sd = ConfigFile::stable_diffusion();
    let schedule = Schedule::new(sd.schedule(ScheduleConfig::default()).unwrap()).unwrap();
    let got = sigmas::log_sigmas(&sigmas::training_sigmas(&schedule).unwrap());
    let want = floats(&f["log_sigmas"]);
    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    let libm_differ = sigmas::training_sigmas(&schedule)
        .unwrap()
        .iter()
        .zip(&want)
        .filter(|(s, w)| s.ln() != **w)
        .count();
    eprintln!("np.log float32: {differ} of 1000 differ (libm logf: {libm_differ})");
    assert_eq!(differ, 0);
    assert_eq!(numpy::log_f32(1.0), 0.0);
}

#[test]
fn timesteps_and_sigmas_match_diffusers() {
    let f = fixture();
    let (mut worst_t, mut worst_s, mut worst_init) = (0.0f64, 0.0f64, 0.0f64);
    let cases = f["schedules"].as_array().unwrap();
    for case in cases {
        let state = state_for(&f, case, 1.0);
        let what = format!(
            "{} {} karras={} n={}",
            case["sampler"], case["spacing"], case["karras"], case["steps"]
        );
        let (ts, sig, init) = state.with_sampler(|s| {
            (
                s.timesteps().to_vec(),
                s.sigmas().to_vec(),
                s.init_noise_sigma().unwrap(),
            )
        });
        let et = max_abs(&ts, &floats(&case["timesteps"]));
        let es = max_abs(&sig, &floats(&case["sigmas"]));
        let ei = f64::from((init - case["init_noise_sigma"].as_f64().unwrap() as f32).abs());
        assert!(
            et <= 1e-6 && es <= 1e-6 && ei <= 1e-6,
            "{what}: timesteps {et}, sigmas {es}, init {ei}\n{ts:?}\n{}",
            case["timesteps"]
        );
        (worst_t, worst_s, worst_init) = (worst_t.max(et), worst_s.max(es), worst_init.max(ei));
    }
    eprintln!(
        "{} schedules: timesteps max abs error {worst_t:e}, sigmas {worst_s:e}, init_noise_sigma {worst_init:e}",
        cases.len()
    );
}

#[test]
fn lms_coefficients_match_scipy_quad() {
    let f = fixture();
    let mut worst = 0.0f64;
    for case in f["lms_coefficients"].as_array().unwrap() {
        let c = json!({"sampler": "lms", "spacing": case["spacing"], "karras": case["karras"], "steps": case["steps"]});
        let sigmas = state_for(&f, &c, 1.0).with_sampler(|s| s.sigmas().to_vec());
        for (t, row) in case["coefficients"].as_array().unwrap().iter().enumerate() {
            let row = row.as_array().unwrap();
            for (j, want) in row.iter().enumerate() {
                let got = lms_coefficient(&sigmas, row.len(), t, j);
                let err = (got - want.as_f64().unwrap()).abs();
                worst = worst.max(err);
                assert!(err <= 1e-6, "t={t} j={j}: {got} vs {want}");
            }
        }
    }
    eprintln!("LMS coefficients: max abs error vs scipy.integrate.quad {worst:e}");
}

#[test]
fn trajectories_match_diffusers() {
    let f = fixture();
    let (init, direction) = (tensor(&f, "init"), tensor(&f, "direction"));
    let mut worst = std::collections::BTreeMap::<String, f64>::new();
    for case in f["trajectories"].as_array().unwrap() {
        let state = state_for(&f, case, 1.0);
        let what = format!(
            "{} {} {} karras={} eta={}",
            case["sampler"], case["spacing"], case["prediction_type"], case["karras"], case["eta"]
        );
        assert_eq!(state.run_timesteps(), floats(&case["timesteps"]), "{what}");
        let sigma = state.with_sampler(|s| s.init_noise_sigma()).unwrap();
        let (x, x0) = run(
            state,
            init.f_mul_scalar(f64::from(sigma)).unwrap(),
            &direction,
        );
        let err = max_abs(&to_vec(&x), &floats(&case["final"]));
        assert!(err <= 1e-5, "{what}: final latent max abs error {err}");
        if !case["pred_original_sample"].is_null() {
            let e0 = max_abs(&to_vec(&x0), &floats(&case["pred_original_sample"]));
            assert!(
                e0 <= 1e-5,
                "{what}: pred_original_sample max abs error {e0}"
            );
        }
        let w = worst
            .entry(case["sampler"].as_str().unwrap().to_string())
            .or_default();
        *w = w.max(err);
    }
    eprintln!("10-step trajectories, final latent max abs error per sampler: {worst:?}");
}

#[test]
fn img2img_matches_diffusers() {
    let f = fixture();
    let (clean, noise, direction) = (
        tensor(&f, "clean"),
        tensor(&f, "noise"),
        tensor(&f, "direction"),
    );
    let mut worst = (0.0f64, 0.0f64);
    for case in f["img2img"].as_array().unwrap() {
        let state = state_for(&f, case, case["strength"].as_f64().unwrap());
        let what = format!("img2img {} karras={}", case["sampler"], case["karras"]);
        assert_eq!(state.run_timesteps(), floats(&case["timesteps"]), "{what}");
        let noisy = state.add_noise(&clean, &noise, None).unwrap();
        let en = max_abs(&to_vec(&noisy), &floats(&case["noisy"]));
        let (x, _) = run(state, noisy, &direction);
        let ef = max_abs(&to_vec(&x), &floats(&case["final"]));
        assert!(en <= 1e-6 && ef <= 1e-5, "{what}: noisy {en}, final {ef}");
        worst = (worst.0.max(en), worst.1.max(ef));
    }
    eprintln!(
        "img2img strength 0.6: noised latent max abs error {:e}, final {:e}",
        worst.0, worst.1
    );
}

#[test]
fn config_variants_match_diffusers() {
    let f = fixture();
    let (init, direction) = (tensor(&f, "init"), tensor(&f, "direction"));
    let mut worst: f64 = 0.0;
    for case in f["variants"].as_array().unwrap() {
        let state = state_for(&f, case, 1.0);
        let what = format!("{} {}", case["sampler"], case["config"]);
        let (ts, sig, init_sigma) = state.with_sampler(|s| {
            (
                s.timesteps().to_vec(),
                s.sigmas().to_vec(),
                s.init_noise_sigma().unwrap(),
            )
        });
        assert_eq!(ts, floats(&case["timesteps"]), "{what}");
        assert!(max_abs(&sig, &floats(&case["sigmas"])) <= 1e-6, "{what}");
        let (x, _) = run(
            state,
            init.f_mul_scalar(f64::from(init_sigma)).unwrap(),
            &direction,
        );
        let err = max_abs(&to_vec(&x), &floats(&case["final"]));
        assert!(err <= 1e-5, "{what}: final latent max abs error {err}");
        worst = worst.max(err);
    }
    eprintln!("config variants: final latent max abs error {worst:e}");
}

#[test]
fn pipeline_draws_continue_after_the_initial_latents() {
    let f = fixture();
    let direction = tensor(&f, "direction");
    for case in f["pipeline"].as_array().unwrap() {
        let seed = case["seed"].as_i64().unwrap();
        let state = state_for(&f, case, 1.0);
        let state = state.with_sampler(|s| s.box_clone());
        let sigma = state.init_noise_sigma().unwrap();
        // The pipeline's first draw (GaussianNoise with the same seed), then skip_draws = 1.
        let first = NoiseStream::new(seed, 0).noise(0, 1, &direction).unwrap();
        let state = SchedulerState::new(state, 0, NoiseStream::new(seed, 1));
        let (x, _) = run(
            state,
            first.f_mul_scalar(f64::from(sigma)).unwrap(),
            &direction,
        );
        let err = max_abs(&to_vec(&x), &floats(&case["final"]));
        eprintln!(
            "{} txt2img with the pipeline's own draws: max abs error {err:e}",
            case["sampler"]
        );
        assert!(err <= 1e-5, "{}: {err}", case["sampler"]);
    }
}

/// On a CUDA device (skipped without one): the same trajectories with the
/// tensors on the GPU (noise still drawn on the CPU, as diffusers does).
#[test]
fn trajectories_on_cuda_are_close() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: no CUDA device");
        return;
    }
    let f = fixture();
    let cuda = Device::Cuda(0);
    let init = tensor(&f, "init").to_device(cuda);
    let direction = tensor(&f, "direction").to_device(cuda);
    let mut worst: f64 = 0.0;
    for case in f["trajectories"].as_array().unwrap() {
        let state = state_for(&f, case, 1.0);
        let sigma = state.with_sampler(|s| s.init_noise_sigma()).unwrap();
        let (x, _) = run(
            state,
            init.f_mul_scalar(f64::from(sigma)).unwrap(),
            &direction,
        );
        assert_eq!(x.device(), cuda);
        let err = max_abs(&to_vec(&x.to_device(Device::Cpu)), &floats(&case["final"]));
        assert!(err <= 1e-4, "{case}: {err}");
        worst = worst.max(err);
    }
    eprintln!("CUDA trajectories: final latent max abs error {worst:e}");
}
