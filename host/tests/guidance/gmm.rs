//! The analytic model's parameters (tests/fixtures/gmm/gmm.safetensors) and
//! the sample statistics the guidance tests assert on.
use tch::{Kind, Tensor};

/// tests/fixtures/gmm/NAME.
pub fn fixture(name: &str) -> String {
    format!(
        "{}/../tests/fixtures/gmm/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The mixture's parameters (float64).
pub struct Gmm {
    pub means: Tensor,
    pub sigmas: Tensor,
    pub weights: Tensor,
}

pub fn gmm() -> Gmm {
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
    }
}

impl Gmm {
    pub fn sigma(&self, k: i64) -> f64 {
        self.sigmas.double_value(&[k])
    }
    /// The exact classifier at t = 0: p(k | x_0), [N, K].
    pub fn posterior(&self, x: &Tensor) -> Tensor {
        let var = self.sigmas.square();
        let sq = (x.unsqueeze(1) - self.means.unsqueeze(0))
            .square()
            .sum_dim_intlist(2, false, Kind::Double);
        (self.weights.log() - var.log() - sq / (var.unsqueeze(0) * 2.0)).softmax(1, Kind::Double)
    }
    /// Index of the nearest component mean (Euclidean), [N].
    pub fn nearest(&self, x: &Tensor) -> Tensor {
        (x.unsqueeze(1) - self.means.unsqueeze(0))
            .square()
            .sum_dim_intlist(2, false, Kind::Double)
            .argmin(1, false)
    }
    /// Mean p(y | x_0) and the fraction of samples nearest another component.
    pub fn class_stats(&self, x: &Tensor, y: i64) -> (f64, f64) {
        let p = self
            .posterior(x)
            .select(1, y)
            .mean(Kind::Double)
            .double_value(&[]);
        let other = self
            .nearest(x)
            .ne(y)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        (p, other)
    }
}

pub fn mean_cov(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let m = x.mean_dim(0, false, Kind::Double);
    let c = x.transpose(0, 1).cov(1, None::<Tensor>, None::<Tensor>);
    (
        Vec::<f64>::try_from(m).unwrap(),
        Vec::<f64>::try_from(c.reshape([-1])).unwrap(),
    )
}

/// Checks that `x` is distributed as N(μ_y, σ_y² I): mean within 0.05σ and
/// covariance entries within 0.05σ² per coordinate.
pub fn assert_component(g: &Gmm, x: &Tensor, y: i64, what: &str) {
    let (m, c) = mean_cov(x);
    let s = g.sigma(y);
    let mu = Vec::<f64>::try_from(g.means.get(y)).unwrap();
    let mean_err = (0..2).map(|i| (m[i] - mu[i]).abs() / s).fold(0.0, f64::max);
    let want = [s * s, 0.0, 0.0, s * s];
    let cov_err = (0..4)
        .map(|i| (c[i] - want[i]).abs() / (s * s))
        .fold(0.0, f64::max);
    eprintln!("{what}: mean {m:.4?} vs {mu:?} (err {mean_err:.4}σ), cov {c:.4?} vs σ²={:.4} (err {cov_err:.4}σ²)", s * s);
    assert!(mean_err <= 0.05, "{what}: mean off by {mean_err}σ");
    assert!(cov_err <= 0.05, "{what}: covariance off by {cov_err}σ²");
}
