//! Classifier guidance (Dhariwal & Nichol 2021), in its two forms:
//!
//! - `ClassifierGuidance`, the DDIM form (Sec. 4.2, Algorithm 2): from
//!   ∇ log(p(x_t)·p(y|x_t)) = −ε(x_t)/√(1−ᾱ_t) + ∇ log p_φ(y|x_t),
//!
//!   ```text
//!   ε̂(x_t) = ε_θ(x_t) − s·√(1−ᾱ_t)·∇_{x_t} log p_φ(y | x_t)
//!   ```
//!
//!   a modified model output that any scheduler consuming ε can step with.
//!   v- and x_0-predictions are converted to ε at x_t, guided, and converted
//!   back (`diffgraph_diffusion::PredictionType`).
//!
//! - `ClassifierGuidanceDDPM`, the paper's Algorithm 1 (Sec. 4.1): the
//!   ancestral step samples x_{t−1} ~ N(μ + s·Σ·∇_{x_t} log p_φ(y | x_t), Σ).
//!   Placed after a DDPM scheduler step, which drew x_{t−1} = μ + √Σ·z, it
//!   adds s·Σ·∇ with Σ the variance diffusers' DDPMScheduler used for that
//!   step, which is exactly a draw from the shifted Gaussian.
//!
//! ᾱ_t is `alphas_cumprod[t]` of the scheduler, so timesteps must be
//! integers; `ClassifierGuidance` also takes ᾱ_t directly (`alpha_bar`, from
//! `SchedulerAlphaBar`) for the sigma samplers, whose model input
//! x/√(σ²+1) is x_t at ᾱ = 1/(σ²+1).
//! With several targets the gradient is that of Σ_i w_i·log p_φ(y_i | x_t).
use crate::classifier::{log_prob_grad, Classifier, Targets, CLASSIFIER};
use crate::schedule;
use diffgraph_diffusion::variance::ddpm_variance;
use diffgraph_diffusion::{ConfigName, PredictionType, VarianceType};
use diffgraph_sdk::prelude::*;

/// The inputs both forms share: the classifier, the targets, the scale.
fn classifier_inputs(schema: NodeSchema) -> NodeSchema {
    schema
        .input(InputSpec::new("classifier", PortType::object(CLASSIFIER)))
        .input(
            InputSpec::new("target", PortType::list(PortType::Int))
                .optional()
                .doc("the class y to guide every sample towards, or several (see target_weights)"),
        )
        .input(
            InputSpec::new("labels", PortType::Any)
                .optional()
                .doc("instead of `target`: one class per sample (LIST<INT> or an integer TENSOR [B]); the gradient of Σ_b log p(y_b | x_b)"),
        )
        .input(
            InputSpec::new("target_weights", PortType::list(PortType::Float))
                .optional()
                .doc("w_i of the objective Σ_i w_i·log p(y_i | x_t); each 1 when absent"),
        )
        .input(
            InputSpec::float("scale")
                .default(1.0)
                .doc("s; 1 samples p(x | y) given an exact model and classifier"),
        )
}

fn check_same(a: &Tensor, a_name: &str, b: &Tensor, b_name: &str) -> Result<(), NodeError> {
    if a.size() != b.size() || a.device() != b.device() {
        return Err(format!(
            "inputs `{a_name}` ({:?} on {:?}) and `{b_name}` ({:?} on {:?}) must have the same shape and device",
            a.size(),
            a.device(),
            b.size(),
            b.device()
        )
        .into());
    }
    Ok(())
}

/// The DDIM form: ε̂ = ε − s·√(1−ᾱ)·∇ (in the model's prediction type).
pub fn guide_model_output(
    model_output: &Tensor,
    prediction: PredictionType,
    x: &Tensor,
    alpha_bar: f64,
    grad: &Tensor,
    scale: f64,
) -> Result<Tensor, NodeError> {
    let eps = prediction
        .to_eps(model_output, x, alpha_bar)
        .map_err(String::from)?;
    let guided = eps.f_sub(&grad.f_mul_scalar(scale * (1.0 - alpha_bar).sqrt())?)?;
    Ok(prediction
        .from_eps(&guided, x, alpha_bar)
        .map_err(String::from)?)
}

pub struct ClassifierGuidance;

impl Node for ClassifierGuidance {
    fn schema(&self) -> NodeSchema {
        let schema = NodeSchema::new("ClassifierGuidance", "guidance")
            .description(
                "Classifier guidance, DDIM form (Dhariwal & Nichol 2021, Algorithm 2): \
                 output = ε − s·√(1−ᾱ_t)·∇_{x_t} log p(y | x_t), for any scheduler that consumes the model \
                 output. The gradient is computed by autograd through the TorchScript classifier. \
                 ᾱ_t = alphas_cumprod[timestep] (integer timesteps), or `alpha_bar` when given. With v_prediction or sample \
                 models the output is converted to ε at x_t, guided, and converted back. Pass the sample the \
                 model saw (after ScaleModelInput) as `sample`.",
            )
            .input(InputSpec::tensor("model_output").doc("the (unconditional or CFG-mixed) model output at x_t"))
            .input(InputSpec::new("sample", PortType::Latent).doc("x_t, as the model received it"))
            .input(InputSpec::float("timestep").min(0.0))
            .input(InputSpec::tensor("alphas_cumprod").doc("the scheduler's alphas_cumprod"))
            .input(InputSpec::float("alpha_bar").optional().range(0.0, 1.0).doc(
                "overrides alphas_cumprod[timestep]: SchedulerAlphaBar's alpha_bar, for the sigma samplers \
                 (Euler, LMS, Heun), whose timesteps may be fractional",
            ));
        classifier_inputs(schema)
            .input(
                InputSpec::string("prediction_type")
                    .default("epsilon")
                    .choices(&PredictionType::names())
                    .doc("what model_output is (LoadTorchScriptDenoiser's prediction_type output fits here)"),
            )
            .output(OutputSpec::new("output", PortType::Tensor).doc("the guided model output, same type as model_output"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let model_output = inputs.tensor("model_output")?;
        let x = inputs.tensor("sample")?;
        check_same(model_output, "model_output", x, "sample")?;
        let timestep = inputs.float("timestep")?;
        let alpha_bar = match inputs.get("alpha_bar")? {
            InputValue::None => {
                let table = inputs.tensor("alphas_cumprod")?;
                let t =
                    schedule::integer_timestep("timestep", timestep, schedule::table_len(table)?)?;
                f64::from(schedule::alpha_bar(table, t)?)
            }
            _ => inputs.float("alpha_bar")?,
        };
        if !(alpha_bar > 0.0 && alpha_bar < 1.0) {
            return Err(format!("alpha_bar_t = {alpha_bar} at timestep {timestep}: guidance needs 0 < alpha_bar < 1").into());
        }
        let prediction =
            PredictionType::parse("input `prediction_type`:", inputs.str("prediction_type")?)
                .map_err(String::from)?;
        let targets = Targets::from_inputs(inputs)?;
        let scale = inputs.float("scale")?;
        if scale == 0.0 {
            return Ok(vec![model_output.shallow_clone().into()]);
        }
        let classifier: &Classifier = inputs.object("classifier")?;
        let (grad, _) = log_prob_grad(&classifier.module, x, timestep, &targets)?;
        let out = guide_model_output(model_output, prediction, x, alpha_bar, &grad, scale)?;
        Ok(vec![out.into()])
    }
}

/// The timestep after `timesteps[index]` (diffusers' `previous_timestep`),
/// −1 after the last, after checking that `timesteps[index]` is `t`.
pub fn previous_timestep(timesteps: &[f64], index: i64, t: i64) -> Result<i64, NodeError> {
    let at = usize::try_from(index)
        .ok()
        .and_then(|i| timesteps.get(i))
        .ok_or_else(|| {
            format!(
                "input `index`: {index} is outside `timesteps` ({} entries)",
                timesteps.len()
            )
        })?;
    if *at != t as f64 {
        return Err(format!(
            "input `timestep` is {t} but timesteps[{index}] is {at}: wire the Loop's item and index"
        )
        .into());
    }
    match timesteps.get(index as usize + 1) {
        None => Ok(-1),
        Some(&p) if p.fract() == 0.0 && p >= 0.0 => Ok(p as i64),
        Some(p) => {
            Err(format!("input `timesteps`: {p} is not a non-negative integer timestep").into())
        }
    }
}

pub struct ClassifierGuidanceDdpm;

impl Node for ClassifierGuidanceDdpm {
    fn schema(&self) -> NodeSchema {
        let schema = NodeSchema::new("ClassifierGuidanceDDPM", "guidance")
            .description(
                "Classifier guidance, DDPM form (Dhariwal & Nichol 2021, Algorithm 1): x_{t-1} ~ N(μ + sΣ∇_{x_t} \
                 log p(y | x_t), Σ). Place it after the DDPM SchedulerStep: it adds s·Σ·∇ to that step's sample, \
                 with Σ the variance DDPMScheduler used for the step (fixed_small: the posterior variance; 0 at \
                 t = 0, where no noise is added). The model output fed to the step must be unguided.",
            )
            .input(InputSpec::new("prev_sample", PortType::Latent).doc("x_{t-1} from the DDPM step"))
            .input(InputSpec::new("sample", PortType::Latent).doc("x_t, the step's input"))
            .input(InputSpec::float("timestep").min(0.0))
            .input(InputSpec::tensor("alphas_cumprod").doc("the scheduler's alphas_cumprod"))
            .input(
                InputSpec::new("timesteps", PortType::list(PortType::Float))
                    .doc("the scheduler's timesteps (the Loop's `over`)"),
            )
            .input(InputSpec::int("index").min(0.0).doc("the Loop's index"));
        classifier_inputs(schema)
            .input(
                InputSpec::string("variance_type")
                    .default("fixed_small")
                    .choices(&VarianceType::fixed_names())
                    .doc("the DDPM scheduler's variance_type"),
            )
            .output(
                OutputSpec::new("prev_sample", PortType::Latent)
                    .doc("x_{t-1} with the mean shifted by s·Σ·∇"),
            )
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let prev = inputs.tensor("prev_sample")?;
        let x = inputs.tensor("sample")?;
        check_same(prev, "prev_sample", x, "sample")?;
        let table = inputs.tensor("alphas_cumprod")?;
        let len = schedule::table_len(table)?;
        let t = schedule::integer_timestep("timestep", inputs.float("timestep")?, len)?;
        let timesteps: Vec<f64> = inputs
            .list("timesteps")?
            .iter()
            .map(|v| {
                v.as_float()
                    .ok_or_else(|| NodeError::new("input `timesteps`: expected numbers"))
            })
            .collect::<Result<_, _>>()?;
        let prev_t = previous_timestep(&timesteps, inputs.int("index")?, t)?;
        let variance_type =
            VarianceType::parse("input `variance_type`:", inputs.str("variance_type")?)
                .map_err(String::from)?;
        let targets = Targets::from_inputs(inputs)?;
        let scale = inputs.float("scale")?;
        let a_t = schedule::alpha_bar(table, t)?;
        let a_prev = if prev_t >= 0 {
            schedule::alpha_bar(
                table,
                schedule::integer_timestep("timesteps", prev_t as f64, len)?,
            )?
        } else {
            1.0
        };
        let variance = ddpm_variance(t, a_t, a_prev, variance_type).map_err(String::from)?;
        if scale == 0.0 || variance == 0.0 {
            return Ok(vec![prev.shallow_clone().into()]);
        }
        let classifier: &Classifier = inputs.object("classifier")?;
        let (grad, _) = log_prob_grad(&classifier.module, x, t as f64, &targets)?;
        let out = prev.f_add(&grad.f_mul_scalar(scale * f64::from(variance))?)?;
        Ok(vec![out.into()])
    }
}
