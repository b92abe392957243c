//! DDIM parity with diffusers, against tests/fixtures/ddim_reference.json
//! (made by scripts/fixtures/ddim_reference.py): schedules, timesteps for
//! every step count, DDIM steps (eta > 0 with generator noise of a shape
//! that is not a multiple of 16, the replayed path of `crate::noise`).
use crate::noise::NoiseStream;
use crate::sampler::{ClipSample, Sampler, StepInput};
use crate::samplers::ddim::{Ddim, DdimConfig, INFO};
use crate::samplers::testing::sd_schedule;
use diffgraph_diffusion::timesteps::timesteps;
use diffgraph_diffusion::{
    BetaSchedule, ConfigName, PredictionType, Schedule, ScheduleConfig, TimestepSpacing,
};
use diffgraph_sdk::tch::Tensor;
use serde_json::Value as Json;

fn fixture() -> Json {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/ddim_reference.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn ints(v: &Json) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("int"))
        .collect()
}

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

fn config_of(c: &Json) -> ScheduleConfig {
    ScheduleConfig {
        num_train_timesteps: c["num_train_timesteps"].as_i64().unwrap(),
        beta_start: c["beta_start"].as_f64().unwrap(),
        beta_end: c["beta_end"].as_f64().unwrap(),
        beta_schedule: BetaSchedule::parse("", c["beta_schedule"].as_str().unwrap()).unwrap(),
        steps_offset: c["steps_offset"].as_i64().unwrap(),
        timestep_spacing: TimestepSpacing::parse("", c["timestep_spacing"].as_str().unwrap())
            .unwrap(),
        prediction_type: PredictionType::parse("", c["prediction_type"].as_str().unwrap()).unwrap(),
        ..ScheduleConfig::default()
    }
}

/// DDIM's own keys of a fixture case.
fn ddim_of(c: &Json) -> DdimConfig {
    DdimConfig {
        clip: ClipSample {
            clip: c["clip_sample"].as_bool().unwrap(),
            range: 1.0,
        },
        set_alpha_to_one: c["set_alpha_to_one"].as_bool().unwrap(),
        use_clipped_model_output: false,
    }
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max)
}

#[test]
fn alphas_cumprod_match_diffusers() {
    let f = fixture();
    for (name, s) in f["schedules"].as_object().unwrap() {
        let schedule = Schedule::new(config_of(&s["config"])).unwrap();
        let got: Vec<f32> = ints(&s["indices"])
            .iter()
            .map(|&i| schedule.alphas_cumprod[i as usize])
            .collect();
        let err = max_abs(&got, &floats(&s["alphas_cumprod"]));
        eprintln!("{name}: alphas_cumprod max abs error {err:e}");
        assert!(err <= 1e-6, "{name}: {err}");
        assert_eq!(
            schedule.final_alpha_cumprod(ddim_of(&s["config"]).set_alpha_to_one),
            s["final_alpha_cumprod"].as_f64().unwrap() as f32
        );
    }
}

#[test]
fn timesteps_match_diffusers() {
    let f = fixture();
    for case in f["timesteps"].as_array().unwrap() {
        let config = ScheduleConfig {
            timestep_spacing: TimestepSpacing::parse("", case["spacing"].as_str().unwrap())
                .unwrap(),
            steps_offset: case["steps_offset"].as_i64().unwrap(),
            ..sd_schedule(&INFO)
        };
        let n = case["steps"].as_i64().unwrap();
        let want = ints(&case["timesteps"]);
        let got = timesteps(&config, n).unwrap();
        check_against(&got, &want, n, &format!("{case}"));
    }
}

/// Ours equal diffusers' exactly, except that we drop the spurious trailing
/// -1 that diffusers adds for some counts (see `crate::spacing`).
fn check_against(got: &[i64], want: &[i64], n: i64, what: &str) {
    assert_eq!(got.len() as i64, n, "{what}");
    if want.len() as i64 == n + 1 {
        assert_eq!(want.last(), Some(&-1), "{what}");
        assert_eq!(got, &want[..n as usize], "{what}");
    } else {
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn timesteps_match_diffusers_for_every_step_count() {
    let f = fixture();
    let mut extra = 0;
    for (spacing, sums) in f["timestep_checksums"].as_object().unwrap() {
        let config = ScheduleConfig {
            timestep_spacing: TimestepSpacing::parse("", spacing).unwrap(),
            ..sd_schedule(&INFO)
        };
        for (i, entry) in sums.as_array().unwrap().iter().enumerate() {
            let n = i as i64 + 1;
            let (len, sum) = (entry[0].as_i64().unwrap(), entry[1].as_i64().unwrap());
            let got = timesteps(&config, n).unwrap();
            // diffusers' extra last value -1 at position n + 1 adds -(n + 1).
            let want_sum = if len == n + 1 {
                extra += 1;
                sum + (n + 1)
            } else {
                assert_eq!(len, n, "{spacing} n={n}");
                sum
            };
            assert_eq!(got.len() as i64, n, "{spacing} n={n}");
            let got_sum: i64 = got
                .iter()
                .enumerate()
                .map(|(i, t)| (i as i64 + 1) * t)
                .sum();
            assert_eq!(got_sum, want_sum, "{spacing} n={n}");
        }
    }
    assert_eq!(
        extra, 62,
        "the step counts where diffusers adds a -1 (trailing)"
    );
}

#[test]
fn ddim_steps_match_diffusers() {
    let f = fixture();
    let steps = &f["steps"];
    let shape = ints(&steps["shape"]);
    let sample = Tensor::from_slice(&floats(&steps["sample"])).view(shape.as_slice());
    let model_output = Tensor::from_slice(&floats(&steps["model_output"])).view(shape.as_slice());
    let mut worst: f64 = 0.0;
    for case in steps["cases"].as_array().unwrap() {
        let config = ScheduleConfig {
            prediction_type: PredictionType::parse("", case["prediction_type"].as_str().unwrap())
                .unwrap(),
            timestep_spacing: TimestepSpacing::parse(
                "",
                case["timestep_spacing"].as_str().unwrap(),
            )
            .unwrap(),
            ..sd_schedule(&INFO)
        };
        let n = case["steps"].as_i64().unwrap();
        let (eta, seed) = (
            case["eta"].as_f64().unwrap(),
            case["seed"].as_i64().unwrap(),
        );
        let mut ddim = Ddim::new(config, ddim_of(case), n, eta).unwrap();
        let noise = NoiseStream::new(seed, 0);
        for r in case["results"].as_array().unwrap() {
            let t = r["timestep"].as_i64().unwrap();
            let index = r["step_index"].as_u64().unwrap() as usize;
            assert_eq!(ddim.timesteps()[index], t as f32);
            let draw = |like: &Tensor| noise.noise(index, n as usize, like);
            let out = ddim
                .step(StepInput {
                    index,
                    timestep: t as f32,
                    model_output: &model_output,
                    sample: &sample,
                    noise: &draw,
                })
                .unwrap();
            for (name, got) in [
                ("prev_sample", &out.prev_sample),
                ("pred_original_sample", &out.pred_original_sample),
            ] {
                let got = Vec::<f32>::try_from(&got.reshape([-1])).unwrap();
                let err = max_abs(&got, &floats(&r[name]));
                worst = worst.max(err);
                let what = format!(
                    "{} {} n={n} eta={eta}",
                    case["prediction_type"], case["timestep_spacing"]
                );
                assert!(err <= 1e-5, "{what} t={t} {name}: max abs error {err}");
            }
        }
    }
    eprintln!("DDIM steps: max abs error {worst:e}");
}
