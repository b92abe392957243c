//! guided-diffusion's respacing and float64 tables (gaussian_diffusion.py,
//! respace.py) against the reference's own values
//! (tests/fixtures/adm/sampling.json, scripts/fixtures/make_adm_fixtures.py):
//! timestep maps exact, tables to 1e-12 relative (numpy's float64 on the
//! same formulas; exact in practice).
use diffgraph_diffusion::gaussian::{named_beta_schedule, GaussianDiffusion};
use serde_json::Value;

fn fixture() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/adm/sampling.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn respaced_timestep_maps_are_exact() {
    let fx = fixture();
    let maps = fx["respacing"].as_object().unwrap();
    assert!(maps.len() >= 8);
    let betas = named_beta_schedule("linear", 1000).unwrap();
    for (spec, want) in maps {
        let want: Vec<usize> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let d = GaussianDiffusion::spaced(&betas, spec).unwrap();
        assert_eq!(d.timestep_map, want, "respacing `{spec}`");
    }
}

#[test]
fn respaced_tables_match_the_reference() {
    let fx = fixture();
    for (key, tables) in fx["tables"].as_object().unwrap() {
        let parts: Vec<&str> = key.split('/').collect();
        let betas = named_beta_schedule(parts[0], parts[1].parse().unwrap()).unwrap();
        let d = GaussianDiffusion::spaced(&betas, parts[2]).unwrap();
        let ours: [(&str, &Vec<f64>); 9] = [
            ("betas", &d.betas),
            ("alphas_cumprod", &d.alphas_cumprod),
            ("alphas_cumprod_prev", &d.alphas_cumprod_prev),
            ("posterior_variance", &d.posterior_variance),
            (
                "posterior_log_variance_clipped",
                &d.posterior_log_variance_clipped,
            ),
            ("posterior_mean_coef1", &d.posterior_mean_coef1),
            ("posterior_mean_coef2", &d.posterior_mean_coef2),
            ("sqrt_recip_alphas_cumprod", &d.sqrt_recip_alphas_cumprod),
            (
                "sqrt_recipm1_alphas_cumprod",
                &d.sqrt_recipm1_alphas_cumprod,
            ),
        ];
        for (name, got) in ours {
            let want: Vec<f64> = tables[name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(got.len(), want.len(), "{key} {name}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let rel = (g - w).abs() / w.abs().max(1e-300);
                assert!(rel <= 1e-12, "{key} {name}[{i}]: {g} vs {w}");
            }
        }
    }
}
