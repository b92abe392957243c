//! Classifier guidance against the closed forms of the analytic model
//! (tests/fixtures/gmm, made by scripts/fixtures/make_gmm_fixtures.py): the
//! autograd gradient through the TorchScript classifier against the
//! closed-form ∇ log p(y | x_t), and the DDIM-form output at s = 1 on the
//! exact unconditional ε against the exact class-conditional ε.
use crate::classifier::{log_prob_grad, Targets};
use crate::guide::{guide_model_output, previous_timestep};
use diffgraph_diffusion::PredictionType;
use diffgraph_sdk::prelude::*;

fn fixture(name: &str) -> String {
    format!(
        "{}/../../tests/fixtures/gmm/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn module(name: &str) -> tch::CModule {
    let mut m = tch::CModule::load(fixture(name)).expect("fixture module");
    m.set_eval();
    m
}

/// The mixture's parameters, in float64.
struct Gmm {
    means: Tensor,
    sigmas: Tensor,
    weights: Tensor,
    alphas_cumprod: Tensor,
}

fn gmm() -> Gmm {
    let all = Tensor::read_safetensors(fixture("gmm.safetensors")).expect("gmm.safetensors");
    let get = |k: &str| {
        all.iter()
            .find(|(n, _)| n == k)
            .expect(k)
            .1
            .to_kind(Kind::Double)
    };
    Gmm {
        means: get("means"),
        sigmas: get("sigmas"),
        weights: get("weights"),
        alphas_cumprod: get("alphas_cumprod"),
    }
}

/// Closed form: ∇ log p(y | x_t) = (m_y − x)/v_y − Σ_k r_k (m_k − x)/v_k, with
/// m_k = √ᾱ μ_k, v_k = ᾱ σ_k² + 1 − ᾱ and r_k the responsibilities.
fn closed_form_grad(g: &Gmm, x: &Tensor, t: i64, y: i64) -> Tensor {
    let a = g.alphas_cumprod.double_value(&[t]);
    let m = &g.means * a.sqrt(); // [K, 2]
    let v = g.sigmas.square() * a + (1.0 - a); // [K]
    let diff = m.unsqueeze(0) - x.unsqueeze(1); // [B, K, 2]
    let sq = diff.square().sum_dim_intlist(2, false, Kind::Double); // [B, K]
    let log_joint = g.weights.log() - v.log() - &sq / (v.unsqueeze(0) * 2.0);
    let r = log_joint.softmax(1, Kind::Double);
    let per_k = &diff / v.view([1, -1, 1]);
    per_k.select(1, y) - (r.unsqueeze(2) * &per_k).sum_dim_intlist(1, false, Kind::Double)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn points() -> Tensor {
    diffgraph_sdk::rng::seeded(17, || Tensor::randn([256, 2], (Kind::Float, Device::Cpu))) * 1.5
}

#[test]
fn autograd_gradient_matches_the_closed_form() {
    let (clf, g, x) = (module("gmm_classifier.pt"), gmm(), points());
    let x64 = x.to_kind(Kind::Double);
    for t in [0i64, 50, 300, 700, 999] {
        for y in 0..4 {
            let (grad, _) = log_prob_grad(
                &clf,
                &x,
                t as f64,
                &Targets::new(vec![y], vec![1.0]).unwrap(),
            )
            .unwrap();
            let want = closed_form_grad(&g, &x64, t, y);
            let scale = want.abs().max().double_value(&[]).max(1.0);
            let err = max_abs(&grad, &want);
            assert!(
                err <= 1e-5 * scale,
                "t={t} y={y}: autograd vs closed form {err} (scale {scale})"
            );
        }
        // A weighted mixture of targets is the weighted sum of the gradients.
        let targets = Targets::new(vec![0, 1], vec![0.3, 0.7]).unwrap();
        let (grad, _) = log_prob_grad(&clf, &x, t as f64, &targets).unwrap();
        let want = closed_form_grad(&g, &x64, t, 0) * 0.3 + closed_form_grad(&g, &x64, t, 1) * 0.7;
        let scale = want.abs().max().double_value(&[]).max(1.0);
        assert!(
            max_abs(&grad, &want) <= 1e-5 * scale,
            "t={t}: weighted targets"
        );
    }
    // Grad mode is switched on inside, whatever the caller's mode.
    let targets = Targets::new(vec![2], vec![1.0]).unwrap();
    let (inside_no_grad, _) = tch::no_grad(|| log_prob_grad(&clf, &x, 300.0, &targets)).unwrap();
    let (normal, _) = log_prob_grad(&clf, &x, 300.0, &targets).unwrap();
    assert!(inside_no_grad.equal(&normal));
    assert!(!normal.requires_grad());
}

#[test]
fn targets_are_checked() {
    let (clf, x) = (module("gmm_classifier.pt"), points());
    let e = log_prob_grad(&clf, &x, 10.0, &Targets::new(vec![4], vec![1.0]).unwrap())
        .unwrap_err()
        .0;
    assert!(e.contains("class 4") && e.contains("4 classes"), "{e}");
    assert!(Targets::new(vec![1, 2], vec![1.0])
        .unwrap_err()
        .0
        .contains("one weight per target"));
    assert!(Targets::new(vec![], vec![]).is_err());
}

/// ε(x_t) − √(1−ᾱ)·∇ log p(y | x_t) = ε(x_t | y) for exact models: the DDIM
/// form at s = 1 turns the unconditional model into the conditional one.
#[test]
fn ddim_form_at_scale_one_gives_the_conditional_model() {
    let (uncond, cond, clf, g, x) = (
        module("gmm_uncond.pt"),
        module("gmm_cond.pt"),
        module("gmm_classifier.pt"),
        gmm(),
        points(),
    );
    let batch = x.size()[0];
    for t in [1i64, 100, 500, 900] {
        let a = f64::from(g.alphas_cumprod.double_value(&[t]) as f32);
        let ts = Tensor::full([batch], t as f64, (Kind::Float, Device::Cpu));
        let null = Tensor::eye(5, (Kind::Float, Device::Cpu)).narrow(0, 4, 1);
        let eps = uncond.forward_ts(&[&x, &ts, &null]).unwrap();
        for y in 0..4 {
            let (grad, _) = log_prob_grad(
                &clf,
                &x,
                t as f64,
                &Targets::new(vec![y], vec![1.0]).unwrap(),
            )
            .unwrap();
            let guided =
                guide_model_output(&eps, PredictionType::Epsilon, &x, a, &grad, 1.0).unwrap();
            let onehot = Tensor::eye(5, (Kind::Float, Device::Cpu)).narrow(0, y, 1);
            let want = cond.forward_ts(&[&x, &ts, &onehot]).unwrap();
            let err = max_abs(&guided, &want);
            assert!(
                err <= 2e-5,
                "t={t} y={y}: guided eps vs conditional eps {err}"
            );
            // The same through a v-prediction: v̂ = v − s·√(1−ᾱ)/√ᾱ·∇.
            let v = PredictionType::VPrediction.from_eps(&eps, &x, a).unwrap();
            let v_hat =
                guide_model_output(&v, PredictionType::VPrediction, &x, a, &grad, 1.0).unwrap();
            let direct = &v - &grad * ((1.0 - a).sqrt() / a.sqrt());
            assert!(
                max_abs(&v_hat, &direct) <= 1e-4 * (1.0 / a.sqrt()),
                "t={t}: v form"
            );
        }
    }
}

#[test]
fn previous_timestep_follows_the_schedule() {
    let ts = [999.0, 666.0, 333.0, 0.0];
    assert_eq!(previous_timestep(&ts, 0, 999).unwrap(), 666);
    assert_eq!(previous_timestep(&ts, 3, 0).unwrap(), -1);
    let e = previous_timestep(&ts, 1, 999).unwrap_err().0;
    assert!(e.contains("timesteps[1] is 666"), "{e}");
    assert!(previous_timestep(&ts, 4, 0).is_err());
}

/// Per-sample labels: each sample's gradient is that of its own class, as
/// guided-diffusion's cond_fn computes it for a batch of different classes.
#[test]
fn per_sample_labels_guide_each_sample_to_its_own_class() {
    let clf = module("gmm_classifier.pt");
    let x = Tensor::from_slice(&[0.3f32, -0.2, -0.5, 0.8, 1.0, 0.1]).reshape([3, 2]);
    let labels = Tensor::from_slice(&[2i64, 0, 1]);
    let per = Targets {
        classes: Vec::new(),
        weights: Vec::new(),
        per_sample: Some(labels),
    };
    let (grad, _) = log_prob_grad(&clf, &x, 100.0, &per).unwrap();
    for (b, y) in [(0i64, 2i64), (1, 0), (2, 1)] {
        let (one, _) =
            log_prob_grad(&clf, &x, 100.0, &Targets::new(vec![y], vec![1.0]).unwrap()).unwrap();
        let d = (grad.get(b) - one.get(b)).abs().max().double_value(&[]);
        assert!(d < 1e-6, "sample {b}: {d}");
    }
    let bad = Targets {
        classes: Vec::new(),
        weights: Vec::new(),
        per_sample: Some(Tensor::from_slice(&[1i64, 2])),
    };
    assert!(log_prob_grad(&clf, &x, 100.0, &bad)
        .unwrap_err()
        .to_string()
        .contains("2 labels for a batch of 3"));
}
