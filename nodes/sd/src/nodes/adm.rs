//! The ADM nodes (family [`crate::family::adm`]): `LoadADM` (the U-Net as a
//! MODEL plus the diffusion flags the schedule needs), `LoadADMClassifier`,
//! `ADMClassifierGradient` (classifier_sample.py's `cond_fn`) and
//! `ClassLabels` (a list of classes, one per sample, as a label tensor).
use super::labels::class_labels;
use crate::family::adm::classifier::AdmClassifier;
use crate::family::adm::config::{preset, Flags};
use crate::family::adm::{load_classifier, load_unet, torso_kind, Adm, PRECISIONS};
use crate::family::{check_labels, Model, MODEL};
use diffgraph_sdk::prelude::*;
use std::path::Path;
use std::sync::Mutex;

/// Port type of loaded ADM noisy classifiers.
pub const ADM_CLASSIFIER: &str = "ADM_CLASSIFIER";

/// The flags text: the file at `flags`, else the named `preset`.
fn flags_text(inputs: &Inputs) -> Result<String, NodeError> {
    let (file, name) = (inputs.str("flags")?, inputs.str("preset")?);
    match (file.is_empty(), name.is_empty()) {
        (false, true) => std::fs::read_to_string(file)
            .map_err(|e| NodeError::new(format!("input `flags`: cannot read {file}: {e}"))),
        (true, false) => Ok(preset(name)
            .map_err(|e| format!("input `preset`: {e}"))?
            .to_string()),
        _ => Err(
            "give exactly one of `flags` (a JSON file of guided-diffusion flags) and `preset`"
                .into(),
        ),
    }
}

fn weights(path: &str) -> Result<std::collections::BTreeMap<String, Tensor>, NodeError> {
    Ok(diffgraph_checkpoint::read_state_dict(Path::new(path))?)
}

fn flags_inputs(schema: NodeSchema) -> NodeSchema {
    schema
        .input(InputSpec::string("path").file().doc("the checkpoint: a torch.save .pt state dict (read without running code) or .safetensors"))
        .input(InputSpec::string("flags").default("").file().doc(
            "a JSON file of guided-diffusion's flags as script_util.py names them (or its `--name value` command line); \
             unset flags take script_util.py's defaults",
        ))
        .input(InputSpec::string("preset").default("").doc(
            "instead of `flags`: a released checkpoint's flags (64x64_diffusion, 128x128_diffusion, 256x256_diffusion, \
             256x256_diffusion_uncond, 512x512_diffusion; 64x64_classifier, 128x128_classifier, 256x256_classifier, \
             512x512_classifier)",
        ))
        .input(InputSpec::string("precision").default("float32").choices(&PRECISIONS).doc(
            "how the torso computes: float32 (default, the more precise); flags: as the reference, float16 when \
             the flags say use_fp16 (classifier_use_fp16); float16; bfloat16. In float16/bfloat16 the input, middle \
             and output blocks' convolutions run in that type, the embeddings, GroupNorm, attention softmax and the \
             output head in float32 (unet.py convert_to_fp16)",
        ))
}

pub struct LoadADM;

impl Node for LoadADM {
    fn schema(&self) -> NodeSchema {
        flags_inputs(NodeSchema::new("LoadADM", "loaders").description(
            "Loads a guided-diffusion ADM U-Net (Dhariwal & Nichol 2021) as a MODEL for UNetStep (class labels when \
             class_cond; output eps, then the learned-range variance channels when learn_sigma), with the diffusion \
             flags ADMSchedule needs. Every missing, unexpected or mis-shaped key is listed.",
        ))
        .output(OutputSpec::new("model", PortType::object(MODEL)))
        .output(OutputSpec::new("diffusion_steps", PortType::Int))
        .output(OutputSpec::new("noise_schedule", PortType::String))
        .output(OutputSpec::new("learn_sigma", PortType::Bool))
        .output(OutputSpec::new("predict_xstart", PortType::Bool))
        .output(OutputSpec::new("rescale_timesteps", PortType::Bool))
        .output(OutputSpec::new("image_size", PortType::Int))
        .output(OutputSpec::new("class_cond", PortType::Bool))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let flags =
            Flags::model(&flags_text(inputs)?).map_err(|e| format!("input `flags`: {e}"))?;
        let arch = flags.unet_arch()?;
        let path = inputs.str("path")?;
        let mut unet = load_unet(weights(path)?, &arch, ctx.device(), path)?;
        unet.convert_torso(
            torso_kind(inputs.str("precision")?, flags.bool("use_fp16")?)
                .map_err(|e| format!("input `precision`: {e}"))?,
        );
        let model = Adm::new(unet, &flags)?;
        Ok(vec![
            Object::new(MODEL, Model::new(model)).into(),
            flags.int("diffusion_steps")?.into(),
            flags.str("noise_schedule")?.into(),
            flags.bool("learn_sigma")?.into(),
            flags.bool("predict_xstart")?.into(),
            flags.bool("rescale_timesteps")?.into(),
            arch.image_size.into(),
            arch.num_classes.is_some().into(),
        ])
    }
}

/// A loaded classifier (behind a lock: tensors are not Sync).
pub struct Classifier(pub Mutex<AdmClassifier>);

pub struct LoadADMClassifier;

impl Node for LoadADMClassifier {
    fn schema(&self) -> NodeSchema {
        flags_inputs(NodeSchema::new("LoadADMClassifier", "loaders").description(
            "Loads a guided-diffusion noisy classifier (EncoderUNetModel: pools attention, adaptive, spatial, \
             spatial_v2) from its classifier_* flags, for ADMClassifierGradient.",
        ))
        .output(OutputSpec::new("classifier", PortType::object(ADM_CLASSIFIER)))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let flags =
            Flags::classifier(&flags_text(inputs)?).map_err(|e| format!("input `flags`: {e}"))?;
        let arch = flags.classifier_arch()?;
        let path = inputs.str("path")?;
        let mut c = load_classifier(weights(path)?, &arch, ctx.device(), path)?;
        c.convert_torso(
            torso_kind(inputs.str("precision")?, flags.bool("classifier_use_fp16")?)
                .map_err(|e| format!("input `precision`: {e}"))?,
        );
        Ok(vec![
            Object::new(ADM_CLASSIFIER, Classifier(Mutex::new(c))).into()
        ])
    }
}

pub struct ADMClassifierGradient;

impl Node for ADMClassifierGradient {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ADMClassifierGradient", "guidance")
            .description(
                "classifier_sample.py's cond_fn: scale · ∇ₓ Σᵢ log softmax(classifier(x, t))[i, yᵢ], each sample's \
                 gradient toward its own label; feed it to ADMStep's `grad` (DDPM: mean + Σ·grad; DDIM: \
                 ε − √(1−ᾱ)·grad).",
            )
            .input(InputSpec::new("classifier", PortType::object(ADM_CLASSIFIER)))
            .input(InputSpec::new("sample", PortType::Latent))
            .input(InputSpec::float("timestep").doc("the original timestep (the loop's item)"))
            .input(InputSpec::new("labels", PortType::Any).doc("an int, LIST<INT> or integer TENSOR [1 or B]"))
            .input(InputSpec::float("scale").default(1.0).doc("classifier_scale"))
            .input(InputSpec::float("timestep_scale").default(1.0).doc("ADMSchedule's timestep_scale (rescale_timesteps)"))
            .output(OutputSpec::new("grad", PortType::Tensor))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let c: &Classifier = inputs.object("classifier")?;
        let x = inputs.tensor("sample")?;
        let b = x.size().first().copied().unwrap_or(0);
        let y = class_labels(inputs, "labels", x.device())?.ok_or("input `labels` is required")?;
        let y = crate::family::conditioning::expand(&y, b, "labels")?;
        let c =
            c.0.lock()
                .map_err(|_| NodeError::new("the classifier was poisoned by an earlier panic"))?;
        let k = c.arch.arch.out_channels;
        check_labels(&y, k, "labels")?;
        let t = (inputs.float("timestep")? as f32 * inputs.float("timestep_scale")? as f32) as f64;
        let ts = Tensor::full([b], t, (Kind::Float, x.device()));
        let xin = x.to_kind(Kind::Float).detach().set_requires_grad(true);
        let lp = c.forward(&xin, &ts).log_softmax(-1, Kind::Float);
        let selected = lp.gather(1, &y.unsqueeze(1), false).sum(Kind::Float);
        let grad = Tensor::run_backward(&[selected], &[&xin], false, false).remove(0);
        Ok(vec![(grad * inputs.float("scale")?).into()])
    }
}

pub struct ClassLabels;

impl Node for ClassLabels {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ClassLabels", "constants")
            .description("A list of class indices, one per sample, as an int64 label tensor [B] and its batch size B.")
            .input(InputSpec::new("value", PortType::list(PortType::Int)).doc("e.g. [207, 360, 387, 974]"))
            .output(OutputSpec::new("labels", PortType::Tensor))
            .output(OutputSpec::new("batch", PortType::Int))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let v = inputs.int_list("value")?;
        if v.is_empty() {
            return Err("input `value`: give at least one class".into());
        }
        if let Some(bad) = v.iter().find(|&&c| c < 0) {
            return Err(format!("input `value`: class {bad} is negative").into());
        }
        Ok(vec![
            Tensor::from_slice(&v).to_device(ctx.device()).into(),
            (v.len() as i64).into(),
        ])
    }
}
