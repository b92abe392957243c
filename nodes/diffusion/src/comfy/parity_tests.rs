//! ComfyUI's own numbers (tests/fixtures/comfy/ksampler_reference.json, made
//! by scripts/fixtures/comfy_sampler_reference.py running ComfyUI's code):
//! the SD sigma table, sigma <-> timestep, and every scheduler's table for
//! several step counts and denoise values, compared bit for bit.
use super::*;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/comfy/ksampler_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().map_or(f32::NAN, |x| x as f32))
        .collect()
}

#[test]
fn sd_sigmas_and_timesteps_are_comfyuis() {
    let fx = fixture();
    let ms = DiscreteSampling::sd(ModelPrediction::Eps).unwrap();
    let want = floats(&fx["sigmas"]);
    let got: Vec<f32> = Vec::try_from(&ms.sigmas).unwrap();
    assert_eq!(got, want);
    let probe = &fx["timestep_of_sigma"];
    for (s, t) in floats(&probe["sigma"]).into_iter().zip(floats(&probe["t"])) {
        assert_eq!(ms.timestep(s).unwrap() as f32, t, "timestep({s})");
    }
    let probe = &fx["sigma_of_timestep"];
    for (t, s) in floats(&probe["t"]).into_iter().zip(floats(&probe["sigma"])) {
        assert_eq!(ms.sigma(t).unwrap(), s, "sigma({t})");
    }
}

#[test]
fn every_scheduler_matches_comfyui_bit_for_bit() {
    let fx = fixture();
    let ms = DiscreteSampling::sd(ModelPrediction::Eps).unwrap();
    let names: Vec<&str> = fx["scheduler_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(names, SCHEDULER_NAMES);
    let cases = fx["schedules"].as_array().unwrap();
    assert!(cases.len() >= 200);
    let mut bad = Vec::new();
    for c in cases {
        let got = ksampler_sigmas(
            &ms,
            c["scheduler"].as_str().unwrap(),
            c["sampler"].as_str().unwrap(),
            c["steps"].as_u64().unwrap() as usize,
            c["denoise"].as_f64().unwrap(),
        )
        .unwrap();
        let want = floats(&c["sigmas"]);
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
        if !same {
            bad.push(format!(
                "{} {} {} {}: {got:?} vs {want:?}",
                c["scheduler"], c["sampler"], c["steps"], c["denoise"]
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

#[test]
fn advanced_step_window() {
    let s = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0];
    assert_eq!(
        schedulers::truncate_steps(&s, Some(0), Some(2), false).unwrap(),
        vec![5.0, 4.0, 3.0]
    );
    assert_eq!(
        schedulers::truncate_steps(&s, Some(0), Some(2), true).unwrap(),
        vec![5.0, 4.0, 0.0]
    );
    assert_eq!(
        schedulers::truncate_steps(&s, Some(2), Some(10_000), true).unwrap(),
        vec![3.0, 2.0, 1.0, 0.0]
    );
    assert!(schedulers::truncate_steps(&s, Some(5), None, false).is_none());
}
