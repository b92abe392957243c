//! Classifier-guided ADM sampling against guided-diffusion's own
//! p_sample_loop / ddim_sample_loop with classifier_sample.py's cond_fn
//! (scripts/fixtures/make_adm_fixtures.py `sampling`): the tiny
//! class-conditional learned-sigma U-Net and the attention-pool classifier,
//! respaced schedules (sections, ddimN, plain N), clipping on and off, eta,
//! rescaled timesteps; samples within 1e-3 (fp32 CPU). The per-step draws
//! (torch.manual_seed(seed), one randn_like per step) are reproduced exactly.
use diffgraph_diffusion::gaussian::{named_beta_schedule, GaussianDiffusion, ModelVar};
use diffgraph_nodes_sd::family::adm::config::Flags;
use diffgraph_nodes_sd::family::adm::{load_classifier, load_unet};
use tch::{Device, Kind, Tensor};

mod adm_common;
use adm_common::*;

const TOL: f64 = 1e-3;

#[test]
fn guided_samples_match_the_reference() {
    let tiny = json("tiny.json");
    let fx = json("sampling.json");
    let io = tensors("sampling.safetensors");
    let arch = Flags::model(&tiny["unet_a"]["flags"].to_string())
        .unwrap()
        .unet_arch()
        .unwrap();
    let unet = load_unet(
        det_state_dict(&keys(&tiny["unet_a"])),
        &arch,
        Device::Cpu,
        "unet_a",
    )
    .unwrap();
    let carch = Flags::classifier(&tiny["cls_attention"]["flags"].to_string())
        .unwrap()
        .classifier_arch()
        .unwrap();
    let classifier = load_classifier(
        det_state_dict(&keys(&tiny["cls_attention"])),
        &carch,
        Device::Cpu,
        "cls",
    )
    .unwrap();
    let y = &io["y"];
    for (name, run) in fx["runs"].as_object().unwrap() {
        let steps = run["diffusion_steps"].as_u64().unwrap() as usize;
        let betas = named_beta_schedule(run["noise_schedule"].as_str().unwrap(), steps).unwrap();
        let d =
            GaussianDiffusion::spaced(&betas, run["timestep_respacing"].as_str().unwrap()).unwrap();
        let (ddim, clip) = (
            run["use_ddim"].as_bool().unwrap(),
            run["clip_denoised"].as_bool().unwrap(),
        );
        let (eta, scale) = (run["eta"].as_f64().unwrap(), run["scale"].as_f64().unwrap());
        let rescale = run["rescale_timesteps"].as_bool().unwrap();
        let n = d.num_timesteps();
        tch::manual_seed(run["schedule_seed"].as_i64().unwrap());
        let draws: Vec<Tensor> = (0..n)
            .map(|_| Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu)))
            .collect();
        let draws = Tensor::stack(&draws, 0);
        assert!(
            draws.equal(&io[&format!("{name}.draws")]),
            "{name}: per-step draws"
        );
        let mut x = io["x_T"].shallow_clone();
        for (k, i) in (0..n).rev().enumerate() {
            let ts = Tensor::full(
                [2],
                d.model_timestep(i, rescale),
                (Kind::Float, Device::Cpu),
            );
            let out = tch::no_grad(|| unet.forward(&x, &ts, Some(y)));
            let mv = d
                .p_mean_variance(&out, &x, i, ModelVar::LearnedRange, false, clip)
                .unwrap();
            let grad =
                (scale != 0.0).then(|| cond_grad(|v| classifier.forward(v, &ts), &x, y) * scale);
            let noise = draws.get(k as i64);
            x = if ddim {
                d.ddim_sample(&mv, &x, i, grad.as_ref(), eta, &noise)
                    .unwrap()
            } else {
                d.p_sample(&mv, i, grad.as_ref(), &noise)
            };
        }
        let want = &io[&format!("{name}.sample")];
        let err = max_abs(&x, want);
        eprintln!(
            "{name}: {n} steps, max abs {err:e} (sample scale {:.3})",
            want.abs().max().double_value(&[])
        );
        assert!(err <= TOL, "{name}: max abs {err:e}");
    }
}
