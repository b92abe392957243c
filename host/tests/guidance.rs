//! Guidance verified on the analytic model (docs/guidance.md): a 2-D Gaussian
//! mixture whose exact denoisers and exact noise-aware classifier are the
//! TorchScript fixtures of tests/fixtures/gmm (scripts/fixtures/make_gmm_fixtures.py).
//! The tests run the project's graphs (graphs/gmm_*.json: GaussianNoise
//! [20000, 2] -> Loop over the Scheduler's timesteps with UNetStep ->
//! CFGMixer / ClassifierGuidance -> SchedulerStep, or the DDPM step ->
//! ClassifierGuidanceDDPM) and compare sample statistics with the exact ones.
//!
//! Steps: the DDIM ODE's discretisation shrinks the samples' spread (standard
//! deviation of component 2, σ = 0.3: 1.7% low at 250 steps, 0.8% at 500),
//! so the distribution tests of classifier guidance run DDIM with 500 steps,
//! CFG with the graph's 250 (asserting relative effects and an exact
//! comparison), DDPM with 1000 (the paper's setting; bias within sampling
//! noise). With 20000 samples a mean's standard error is 0.007σ and a
//! variance's 0.01σ²: the tolerances (means 0.05σ, covariances 0.05σ²) leave
//! at least 3 standard errors beyond the measured discretisation bias.
//!
//! Runs are serialised: GaussianNoise and the DDPM noise reseed libtorch's
//! global generator, and the tiny tensors gain nothing from parallel threads.
mod common;

#[path = "guidance/gmm.rs"]
mod gmm;
#[path = "guidance/graphs.rs"]
mod graphs;

use diffgraph::graph::overrides::Override;
use diffgraph::{Executor, RunError, RunOutcome, Silent};
use gmm::{assert_component, gmm, mean_cov};
use graphs::{graph_text, root, with_scaled_input, without};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

const PLUGINS: &[&str] = &[
    "diffgraph_nodes_core",
    "diffgraph_nodes_sampling",
    "diffgraph_nodes_sd",
    "diffgraph_nodes_guidance",
];
static SERIAL: Mutex<()> = Mutex::new(());

fn try_run(text: &str, sets: &[&str], targets: &[&str]) -> Result<RunOutcome, RunError> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let mut exec = Executor::new(common::registry_with(PLUGINS));
    let sets: Vec<Override> = sets.iter().map(|s| s.parse().expect("override")).collect();
    let checked = diffgraph::parse_graph(text, &sets, &exec.registry, false)
        .unwrap_or_else(|e| panic!("{e}"));
    exec.run(&checked, Some(targets), &Silent)
}

fn tensor(outcome: &RunOutcome, node: &str, name: &str) -> Tensor {
    let v = outcome
        .output(node, name)
        .unwrap_or_else(|| panic!("no output {node}.{name}"));
    v.as_tensor()
        .expect("a tensor")
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
}

/// The final samples [N, 2] of a graph's `sampling` loop.
fn samples(graph: &str, sets: &[&str]) -> Tensor {
    samples_of(&graph_text(graph), sets)
}

fn samples_of(text: &str, sets: &[&str]) -> Tensor {
    let outcome = try_run(text, sets, &["sampling"]).unwrap_or_else(|e| panic!("{e}"));
    tensor(&outcome, "sampling", "latent")
}

#[test]
fn fixture_schedule_is_the_schedulers() {
    let outcome = try_run(&graph_text("gmm_cfg.json"), &[], &["scheduler"]).unwrap();
    let sched = tensor(&outcome, "scheduler", "alphas_cumprod");
    let all =
        Tensor::read_safetensors(format!("{}/tests/fixtures/gmm/gmm.safetensors", root())).unwrap();
    let fixture = all
        .iter()
        .find(|(n, _)| n == "alphas_cumprod")
        .unwrap()
        .1
        .to_kind(Kind::Double);
    let err = (&sched - &fixture).abs().max().double_value(&[]);
    assert_eq!(sched.size(), vec![1000]);
    assert!(
        err <= 1e-6,
        "the modules' alphas_cumprod differs from the scheduler's by {err}"
    );
}

/// One step, no loop: ClassifierGuidance at s = 1 on the exact unconditional
/// ε is the exact class-conditional ε (ε − √(1−ᾱ)∇ log p(y|x) = ε(x|y)).
#[test]
fn classifier_guidance_node_turns_the_unconditional_model_into_the_conditional() {
    let text = graph_text("gmm_classifier_guidance.json");
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let nodes = doc["nodes"].as_object_mut().unwrap();
    let body = nodes.remove("sampling").unwrap()["body"].clone();
    nodes.remove("save");
    for id in ["eps", "guide"] {
        let mut node = body[id].clone();
        let inputs = node["inputs"].as_object_mut().unwrap();
        inputs.insert("sample".into(), serde_json::json!(["noise", "noise"]));
        inputs.insert("timestep".into(), serde_json::json!(["t", "value"]));
        nodes.insert(id.into(), node);
    }
    nodes.insert(
        "t".into(),
        serde_json::json!({"type": "IntConstant", "inputs": {"value": 500}}),
    );
    let cond_model = text.replace("gmm_uncond.pt", "gmm_cond.pt");
    let cond_doc: serde_json::Value = serde_json::from_str(&cond_model).unwrap();
    nodes.insert("cond_model".into(), cond_doc["nodes"]["model"].clone());
    nodes.insert(
        "class".into(),
        serde_json::json!({"type": "LoadTensor", "inputs": {
        "path": format!("{}/tests/fixtures/gmm/context.safetensors", root()), "key": "class1"}}),
    );
    nodes.insert(
        "eps_c".into(),
        serde_json::json!({"type": "UNetStep", "inputs": {"model": ["cond_model", "model"],
        "sample": ["noise", "noise"], "timestep": ["t", "value"], "cond": ["class", "tensor"]}}),
    );
    let text = doc.to_string();
    for t in [1, 200, 500, 999] {
        for y in 0..4 {
            let sets = [
                format!("t.value={t}"),
                format!("guide.target=[{y}]"),
                format!("class.key=class{y}"),
            ];
            let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
            let outcome = try_run(&text, &sets, &["guide", "eps_c"]).unwrap();
            let err = (tensor(&outcome, "guide", "output")
                - tensor(&outcome, "eps_c", "output_cond"))
            .abs()
            .max()
            .double_value(&[]);
            assert!(err <= 2e-5, "t={t} y={y}: guided ε vs conditional ε: {err}");
        }
    }
}

#[test]
fn classifier_guidance_at_scale_one_samples_the_class_conditional() {
    // Component 2: >99.99% of N(μ2, σ2² I) lies nearer μ2 than any other mean.
    let g = gmm();
    let x = samples(
        "gmm_classifier_guidance.json",
        &["guide.target=[2]", "scheduler.steps=500"],
    );
    assert_eq!(x.size(), vec![20000, 2]);
    assert_component(
        &g,
        &x,
        2,
        "classifier guidance DDIM form (500 steps), y=2, s=1",
    );
    let (p, other) = g.class_stats(&x, 2);
    eprintln!("y=2: mean p(y|x0) {p:.4}, nearest another component {other:.4}");
    assert!(
        other <= 0.01,
        "{other} of the samples are nearest another component"
    );
    // Unguided, the same graph samples the mixture: a control that the check can fail.
    let x0 = samples(
        "gmm_classifier_guidance.json",
        &["guide.scale=0", "scheduler.steps=50"],
    );
    assert!(g.class_stats(&x0, 2).1 > 0.5);
}

#[test]
fn ddim_and_ddpm_forms_agree_in_distribution() {
    // Target 1 overlaps component 0: a third of p(x | y=1) lies nearer μ0.
    let g = gmm();
    let ddim = samples("gmm_classifier_guidance.json", &["scheduler.steps=500"]);
    let ddpm = samples("gmm_classifier_guidance_ddpm.json", &[]);
    assert_component(&g, &ddim, 1, "DDIM form (500 steps)");
    assert_component(&g, &ddpm, 1, "DDPM form (1000 steps)");
    let ((m1, c1), (m2, c2)) = (mean_cov(&ddim), mean_cov(&ddpm));
    let s2 = g.sigma(1).powi(2);
    let dm = (0..2).map(|i| (m1[i] - m2[i]).abs()).fold(0.0, f64::max) / g.sigma(1);
    let dc = (0..4).map(|i| (c1[i] - c2[i]).abs()).fold(0.0, f64::max) / s2;
    let ((p1, o1), (p2, o2)) = (g.class_stats(&ddim, 1), g.class_stats(&ddpm, 1));
    // The exact fraction of N(μ1, σ1² I) nearest another mean, by Monte Carlo (1e6 draws).
    let exact = {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(99);
        Tensor::randn([1_000_000, 2], (Kind::Double, Device::Cpu)) * g.sigma(1) + g.means.get(1)
    };
    let (pe, oe) = g.class_stats(&exact, 1);
    eprintln!("DDIM vs DDPM: means differ by {dm:.4}σ, covariances by {dc:.4}σ²; mean p(y|x0) {p1:.4} / {p2:.4} \
               (exact {pe:.4}); nearest other {o1:.4} / {o2:.4} (exact {oe:.4})");
    assert!(dm <= 0.05 && dc <= 0.05);
    for (what, v, e, tol) in [
        ("DDIM p", p1, pe, 0.01),
        ("DDPM p", p2, pe, 0.01),
        ("DDIM other", o1, oe, 0.02),
        ("DDPM other", o2, oe, 0.02),
    ] {
        assert!((v - e).abs() <= tol, "{what}: {v} vs exact {e}");
    }
}

#[test]
fn cfg_with_w0_reproduces_the_conditional_model() {
    let g = gmm();
    let cfg = samples("gmm_cfg.json", &["w.value=0"]);
    // The conditional model alone: no uncond, no CFGMixer.
    let mut doc: serde_json::Value = serde_json::from_str(&graph_text("gmm_cfg.json")).unwrap();
    let body = doc["nodes"]["sampling"]["body"].as_object_mut().unwrap();
    body.remove("cfg");
    let eps = body["eps"]["inputs"].as_object_mut().unwrap();
    eps.remove("uncond");
    eps.remove("guidance_scale");
    body["step"]["inputs"]["model_output"] = serde_json::json!(["eps", "output_cond"]);
    let alone = tensor(
        &try_run(&doc.to_string(), &[], &["sampling"]).unwrap(),
        "sampling",
        "latent",
    );
    let err = (&cfg - &alone).abs().max().double_value(&[]);
    // UNetStep evaluating both branches (no guidance_scale given to it): CFGMixer at w = 0 still gives cond.
    let both = samples_of(
        &without(&graph_text("gmm_cfg.json"), "eps", "guidance_scale"),
        &["w.value=0"],
    );
    let err_both = (&both - &alone).abs().max().double_value(&[]);
    eprintln!("CFG w=0 vs conditional model alone: max abs {err:e} (uncond skipped), {err_both:e} (uncond evaluated)");
    assert!(err <= 1e-5 && err_both <= 1e-5);
    assert_component(&g, &alone, 1, "conditional model y=1 (DDIM 250)");
}

#[test]
fn cfg_strength_raises_the_class_probability() {
    // CFG does not sample p(x|y)·p(y|x)^w exactly, so only the direction is asserted.
    let g = gmm();
    let stats: Vec<(f64, f64, f64)> = [0.0, 1.0, 3.0]
        .iter()
        .map(|w| {
            let (p, other) = g.class_stats(&samples("gmm_cfg.json", &[&format!("w.value={w}")]), 1);
            eprintln!("CFG y=1 w={w}: mean p(y|x0) {p:.4}, nearest another component {other:.4}");
            (*w, p, other)
        })
        .collect();
    for pair in stats.windows(2) {
        let ((w0, p0, o0), (w1, p1, o1)) = (pair[0], pair[1]);
        assert!(p1 > p0 + 0.005, "w {w0} -> {w1}: mean p(y|x0) {p0} -> {p1}");
        assert!(
            o1 < o0 - 0.02,
            "w {w0} -> {w1}: nearest another component {o0} -> {o1}"
        );
    }
}

/// For exact models ε(x|y) = ε(x) − √(1−ᾱ)·∇ log p(y|x), so classifier
/// guidance at scale s on the unconditional model is CFG at g = s: the two
/// graphs must follow the same trajectories (any step count; 50 here).
#[test]
fn classifier_guidance_at_scale_s_is_cfg_at_g_equal_s_for_exact_models() {
    for (s, w) in [(1.0, 0.0), (4.0, 3.0)] {
        let cg = samples(
            "gmm_classifier_guidance.json",
            &[&format!("guide.scale={s}"), "scheduler.steps=50"],
        );
        let cfg = samples(
            "gmm_cfg.json",
            &[&format!("w.value={w}"), "scheduler.steps=50"],
        );
        let err = (&cg - &cfg).abs().max().double_value(&[]);
        eprintln!(
            "classifier guidance s={s} vs CFG w={w}: max abs {err:e} over 20000 trajectories"
        );
        assert!(err <= 1e-4, "s={s}: {err}");
    }
}

/// Euler (a sigma sampler: the model sees x/√(σ²+1), i.e. x_t at ᾱ = 1/(σ²+1)):
/// classifier guidance at s = 1 with SchedulerAlphaBar's ᾱ follows the
/// conditional model's trajectories. With "linspace" spacing the timesteps
/// are fractional: the table lookup refuses them, `alpha_bar` serves, and the
/// fixture models' own round(t) lookup leaves a small mismatch.
#[test]
fn classifier_guidance_with_a_sigma_sampler_takes_alpha_bar() {
    for (spacing, tol) in [("leading", 1e-4), ("linspace", 2e-3)] {
        let spacing = format!("scheduler.timestep_spacing={spacing}");
        let sets = [
            "scheduler.sampler=euler",
            "scheduler.steps=50",
            &spacing,
            "w.value=0",
        ];
        let cg = samples_of(
            &with_scaled_input("gmm_classifier_guidance.json", true),
            &sets[..3],
        );
        let cond = samples_of(&with_scaled_input("gmm_cfg.json", false), &sets);
        let err = (&cg - &cond).abs().max().double_value(&[]);
        eprintln!(
            "Euler 50, {spacing}: classifier guidance s=1 vs conditional model: max abs {err:e}"
        );
        assert!(err <= tol, "{spacing}: {err}");
    }
    let text = without(
        &with_scaled_input("gmm_classifier_guidance.json", true),
        "guide",
        "alpha_bar",
    );
    let sets = [
        "scheduler.sampler=euler",
        "scheduler.steps=50",
        "scheduler.timestep_spacing=linspace",
    ];
    let e = node_error(&text, &sets, &["sampling"]);
    assert!(e.contains("not an integer"), "{e}");
}

fn node_error(text: &str, sets: &[&str], targets: &[&str]) -> String {
    match try_run(text, sets, targets) {
        Err(RunError::Node { message, .. }) => message,
        Err(e) => panic!("expected a node error, got {e}"),
        Ok(_) => panic!("expected a node error, the run succeeded"),
    }
}

#[test]
fn guidance_nodes_report_bad_inputs() {
    let text = graph_text("gmm_cfg.json");
    let both = node_error(
        &text,
        &["cfg.guidance_scale=4", "scheduler.steps=2"],
        &["sampling"],
    );
    assert!(
        both.contains("`w`") && both.contains("`guidance_scale`") && both.contains("g = w + 1"),
        "{both}"
    );
    let neither = node_error(
        &without(&text, "cfg", "w"),
        &["scheduler.steps=2"],
        &["sampling"],
    );
    assert!(
        neither.contains("neither `w` nor `guidance_scale`"),
        "{neither}"
    );
    let cg = graph_text("gmm_classifier_guidance.json");
    let bad = node_error(
        &cg,
        &["guide.target=[7]", "scheduler.steps=2"],
        &["sampling"],
    );
    assert!(
        bad.contains("class 7") && bad.contains("4 classes"),
        "{bad}"
    );
    let ddpm = graph_text("gmm_classifier_guidance_ddpm.json");
    let idx = node_error(
        &ddpm,
        &["guide.index=0", "scheduler.steps=3"],
        &["sampling"],
    );
    assert!(idx.contains("timesteps[0]"), "{idx}");
}
