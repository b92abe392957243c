//! The model-family seam through UNetStep's evaluation (`nodes::denoise::evaluate`),
//! with a made-up class-conditional family: conditioning checked against what
//! the family accepts, branches batched, guidance mixed (prediction channels
//! only for learned-variance outputs), and g ≠ 1 without an unconditional
//! branch refused.
use diffgraph_diffusion::{PredictionType, VarianceType};
use diffgraph_nodes_sd::family::{Accepts, Conditioning, Denoiser, Model, OutputLayout, Use};
use diffgraph_nodes_sd::nodes::denoise::{evaluate, Guidance};
use diffgraph_sdk::prelude::*;
use std::sync::{Arc, Mutex};

/// Predicts `label + 0·x` in every prediction channel and `10·label` in the
/// variance channels (when it has them); records the batch size of each call.
struct ClassModel {
    layout: OutputLayout,
    calls: Arc<Mutex<Vec<i64>>>,
}

impl ClassModel {
    /// The model and its log of batch sizes.
    fn model(learned_variance: Option<VarianceType>) -> (Model, Arc<Mutex<Vec<i64>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let model = Model::new(ClassModel {
            layout: OutputLayout {
                prediction: PredictionType::Epsilon,
                learned_variance,
            },
            calls: calls.clone(),
        });
        (model, calls)
    }
}

impl Denoiser for ClassModel {
    fn family(&self) -> &'static str {
        "test class model"
    }
    fn accepts(&self) -> Accepts {
        Accepts {
            context: Use::Unused,
            class_labels: Use::Required,
            ..Accepts::TEXT
        }
    }
    fn output_layout(&self) -> &OutputLayout {
        &self.layout
    }
    fn kind(&self) -> Kind {
        Kind::Float
    }
    fn predict(&self, x: &Tensor, _t: f64, cond: &Conditioning) -> Result<Tensor, NodeError> {
        self.calls.lock().unwrap().push(x.size()[0]);
        let y = cond
            .class_labels
            .as_ref()
            .unwrap()
            .to_kind(Kind::Float)
            .view([-1, 1]);
        let eps = x * 0.0 + &y;
        Ok(match self.layout.learned_variance {
            Some(_) => Tensor::cat(&[&eps, &(x * 0.0 + &y * 10.0)], 1),
            None => eps,
        })
    }
}

fn labels(y: &[i64]) -> Conditioning {
    Conditioning {
        class_labels: Some(Tensor::from_slice(y)),
        ..Conditioning::default()
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.reshape([-1])).unwrap()
}

#[test]
fn class_labels_condition_and_guidance_mixes_them() {
    let (model, calls) = ClassModel::model(None);
    let x = Tensor::zeros([2, 1], (Kind::Float, Device::Cpu));
    let g = Guidance {
        scale: 3.0,
        rescale: 0.0,
    };
    let out = evaluate(
        &model,
        &x,
        10.0,
        &labels(&[2, 5]),
        Some(&labels(&[0])),
        Some(g),
    )
    .unwrap();
    assert_eq!(values(&out.cond), vec![2.0, 5.0]);
    assert_eq!(values(&out.uncond), vec![0.0, 0.0]);
    // uncond + g·(cond − uncond)
    assert_eq!(values(&out.model_output), vec![6.0, 15.0]);
    // g = 1: the unconditional branch is not computed; output_uncond is output_cond.
    let one = Guidance { scale: 1.0, ..g };
    let out = evaluate(
        &model,
        &x,
        10.0,
        &labels(&[2]),
        Some(&labels(&[0])),
        Some(one),
    )
    .unwrap();
    assert!(out.uncond.equal(&out.cond) && out.model_output.equal(&out.cond));
    assert_eq!(out.uncond.data_ptr(), out.cond.data_ptr());
    // One batched call of 2 × 2, then one of 2 alone.
    assert_eq!(*calls.lock().unwrap(), vec![4, 2]);
}

#[test]
fn learned_variance_channels_are_not_mixed() {
    let (model, _) = ClassModel::model(Some(VarianceType::LearnedRange));
    let x = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
    let g = Guidance {
        scale: 2.0,
        rescale: 0.0,
    };
    let out = evaluate(&model, &x, 1.0, &labels(&[3]), Some(&labels(&[1])), Some(g)).unwrap();
    // [eps, var] per branch: cond [3, 30], uncond [1, 10]; eps mixed 1 + 2·(3 − 1) = 5, var from cond.
    assert_eq!(values(&out.model_output), vec![5.0, 5.0, 30.0, 30.0]);
}

#[test]
fn missing_or_unusable_conditioning_is_an_error() {
    let (model, calls) = ClassModel::model(None);
    let x = Tensor::zeros([1, 1], (Kind::Float, Device::Cpu));
    let err = |r: Result<_, NodeError>| r.err().expect("an error").0;
    let e = err(evaluate(
        &model,
        &x,
        1.0,
        &Conditioning::default(),
        None,
        None,
    ));
    assert!(
        e.contains("needs class labels") && e.contains("`class_labels`"),
        "{e}"
    );
    let text = Conditioning {
        context: Some(Tensor::zeros([1, 4, 8], (Kind::Float, Device::Cpu))),
        ..labels(&[1])
    };
    let e = err(evaluate(&model, &x, 1.0, &text, None, None));
    assert!(
        e.contains("cannot use a text context") && e.contains("`cond`"),
        "{e}"
    );
    let e = err(evaluate(
        &model,
        &x,
        1.0,
        &labels(&[1]),
        Some(&Conditioning::default()),
        None,
    ));
    assert!(e.contains("`uncond_class_labels`"), "{e}");
    // A guidance scale without an unconditional branch says what is missing.
    let g = Guidance {
        scale: 4.0,
        rescale: 0.0,
    };
    let e = err(evaluate(&model, &x, 1.0, &labels(&[1]), None, Some(g)));
    assert!(
        e.contains("guidance_scale 4") && e.contains("`uncond`"),
        "{e}"
    );
    // Labels for a batch they do not fit.
    let x3 = Tensor::zeros([3, 1], (Kind::Float, Device::Cpu));
    let e = err(evaluate(&model, &x3, 1.0, &labels(&[1, 2]), None, None));
    assert!(
        e.contains("`class_labels`") && e.contains("batch of 2"),
        "{e}"
    );
    assert!(calls.lock().unwrap().is_empty(), "nothing evaluated");
}
