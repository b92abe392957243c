//! The ComfyUI node types diffgraph runs, with ComfyUI's input names, types,
//! ranges and output order (ComfyUI's `nodes.py` `INPUT_TYPES` /
//! `RETURN_TYPES`), and the validation of a workflow against them: every
//! problem at once, named by the workflow's node ids and input names, with
//! ComfyUI's error kinds where they overlap (`execution.py`,
//! `validate_inputs`).
use super::models::ModelFolders;
use super::workflow::{ApiInput, Workflow};
use crate::graph::{ErrorKind, GraphError};
use serde_json::Value as Json;

/// What an input takes.
#[derive(Clone, Copy, Debug)]
pub enum Ty {
    /// A link to an output of this ComfyUI type.
    Link(&'static str),
    Int(i64, i64),
    Float(f64, f64),
    Str,
    Choice(&'static [&'static str]),
    /// A file name in this kind of model folder.
    Model(&'static str),
}

pub struct Spec {
    pub class: &'static str,
    pub inputs: &'static [(&'static str, Ty)],
    pub outputs: &'static [&'static str],
    /// Output nodes (what a run needs at least one of).
    pub output_node: bool,
}

/// ComfyUI's `sampler_name`s with a diffgraph sampler today (diffusers'
/// numerics of the same method; see README "ComfyUI workflows").
pub const SAMPLERS: &[&str] = &[
    "euler",
    "euler_ancestral",
    "heun",
    "lms",
    "dpmpp_2m",
    "ddim",
    "ddpm",
];
/// ComfyUI's `scheduler`s with a diffgraph schedule today.
pub const SCHEDULERS: &[&str] = &["normal", "karras", "sgm_uniform"];

/// The samplers that have a Karras schedule (the diffusers classes that offer
/// `use_karras_sigmas`).
pub const KARRAS_SAMPLERS: &[&str] = &["euler", "heun", "lms", "dpmpp_2m"];

/// ComfyUI's MAX_RESOLUTION.
const MAX_RES: i64 = 16384;
/// ComfyUI's seeds go to 2^64 - 1; libtorch's `manual_seed` here takes an i64.
const MAX_SEED: i64 = i64::MAX;

pub const SPECS: &[Spec] = &[
    Spec {
        class: "CheckpointLoaderSimple",
        inputs: &[("ckpt_name", Ty::Model("checkpoints"))],
        outputs: &["MODEL", "CLIP", "VAE"],
        output_node: false,
    },
    Spec {
        class: "CLIPSetLastLayer",
        inputs: &[
            ("clip", Ty::Link("CLIP")),
            ("stop_at_clip_layer", Ty::Int(-24, -1)),
        ],
        outputs: &["CLIP"],
        output_node: false,
    },
    Spec {
        class: "CLIPTextEncode",
        inputs: &[("text", Ty::Str), ("clip", Ty::Link("CLIP"))],
        outputs: &["CONDITIONING"],
        output_node: false,
    },
    Spec {
        class: "EmptyLatentImage",
        inputs: &[
            ("width", Ty::Int(16, MAX_RES)),
            ("height", Ty::Int(16, MAX_RES)),
            ("batch_size", Ty::Int(1, 4096)),
        ],
        outputs: &["LATENT"],
        output_node: false,
    },
    Spec {
        class: "KSampler",
        inputs: &[
            ("model", Ty::Link("MODEL")),
            ("seed", Ty::Int(0, MAX_SEED)),
            ("steps", Ty::Int(1, 10000)),
            ("cfg", Ty::Float(0.0, 100.0)),
            ("sampler_name", Ty::Choice(SAMPLERS)),
            ("scheduler", Ty::Choice(SCHEDULERS)),
            ("positive", Ty::Link("CONDITIONING")),
            ("negative", Ty::Link("CONDITIONING")),
            ("latent_image", Ty::Link("LATENT")),
            // ComfyUI's min is 0 (nothing runs); diffgraph needs a step.
            ("denoise", Ty::Float(0.01, 1.0)),
        ],
        outputs: &["LATENT"],
        output_node: false,
    },
    Spec {
        class: "VAEDecode",
        inputs: &[("samples", Ty::Link("LATENT")), ("vae", Ty::Link("VAE"))],
        outputs: &["IMAGE"],
        output_node: false,
    },
    Spec {
        class: "VAEEncode",
        inputs: &[("pixels", Ty::Link("IMAGE")), ("vae", Ty::Link("VAE"))],
        outputs: &["LATENT"],
        output_node: false,
    },
    Spec {
        class: "SaveImage",
        inputs: &[("images", Ty::Link("IMAGE")), ("filename_prefix", Ty::Str)],
        outputs: &[],
        output_node: true,
    },
    Spec {
        class: "PreviewImage",
        inputs: &[("images", Ty::Link("IMAGE"))],
        outputs: &[],
        output_node: true,
    },
];

/// Every supported node type (the loaders besides the checkpoint's are in
/// `loaders`).
fn all_specs() -> impl Iterator<Item = &'static Spec> {
    SPECS.iter().chain(super::loaders::SPECS)
}

pub fn spec(class: &str) -> Option<&'static Spec> {
    all_specs().find(|s| s.class == class)
}

/// Validates the whole workflow; Ok when it can be expanded.
pub fn check(wf: &Workflow, models: &ModelFolders) -> Result<(), Vec<GraphError>> {
    let mut errors = Vec::new();
    // ComfyUI refuses an unknown class anywhere before anything else.
    for (id, node) in wf {
        if spec(&node.class_type).is_none() {
            errors.push(
                GraphError::new(
                    ErrorKind::UnknownNodeType,
                    format!(
                        "ComfyUI node type `{}` is not supported by diffgraph",
                        node.class_type
                    ),
                )
                .node(id)
                .expected(all_specs().map(|s| s.class).collect::<Vec<_>>().join(", ")),
            );
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for (id, node) in wf {
        let spec = spec(&node.class_type).expect("checked above");
        for (name, ty) in spec.inputs {
            let err = |kind, msg: String| GraphError::new(kind, msg).node(id).input(name);
            match (node.input(name), ty) {
                (None, _) => errors.push(err(
                    ErrorKind::RequiredInputMissing,
                    "required input missing".into(),
                )),
                (Some(ApiInput::Link { node: src, output }), _) => {
                    if let Err(e) = check_link(wf, src, *output, ty) {
                        errors.push(err(e.0, e.1));
                    }
                }
                (Some(ApiInput::Const(v)), ty) => {
                    if let Err(e) = check_const(v, ty, models) {
                        errors.push(err(e.0, e.1));
                    }
                }
            }
        }
    }
    for (id, node) in wf {
        if let Some(e) = check_combination(node) {
            errors.push(e.node(id));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Sampler and scheduler pairs diffgraph does not have.
fn check_combination(node: &super::workflow::ApiNode) -> Option<GraphError> {
    let text = |name| match node.input(name) {
        Some(ApiInput::Const(Json::String(s))) => Some(s.as_str()),
        _ => None,
    };
    if node.class_type == "KSampler" && text("scheduler") == Some("karras") {
        let sampler = text("sampler_name")?;
        if !KARRAS_SAMPLERS.contains(&sampler) {
            return Some(
                GraphError::new(
                    ErrorKind::ValueNotInList,
                    format!("the karras scheduler is not available with sampler_name `{sampler}` in diffgraph"),
                )
                .input("scheduler")
                .expected(format!("karras with one of {}", KARRAS_SAMPLERS.join(", "))),
            );
        }
    }
    None
}

type Problem = (ErrorKind, String);

fn check_link(wf: &Workflow, src: &str, output: usize, ty: &Ty) -> Result<(), Problem> {
    let Ty::Link(want) = ty else {
        return Err((
            ErrorKind::TypeMismatch,
            format!("a link to `{src}` where a constant is expected (diffgraph takes constants for ComfyUI's widget inputs)"),
        ));
    };
    let Some(node) = wf.get(src) else {
        return Err((
            ErrorKind::LinkToMissingNode,
            format!("links to node `{src}`, which is not in the workflow"),
        ));
    };
    let outputs = spec(&node.class_type).map_or(&[][..], |s| s.outputs);
    match outputs.get(output) {
        None => Err((
            ErrorKind::LinkToMissingOutput,
            format!(
                "links to output {output} of `{src}` ({}), which has {} output(s)",
                node.class_type,
                outputs.len()
            ),
        )),
        Some(got) if got != want => Err((
            ErrorKind::TypeMismatch,
            format!(
                "return type mismatch: expected {want}, output {output} of `{src}` ({}) is {got}",
                node.class_type
            ),
        )),
        Some(_) => Ok(()),
    }
}

fn check_const(v: &Json, ty: &Ty, models: &ModelFolders) -> Result<(), Problem> {
    let received = || super::super::graph::model::json_kind(v);
    let mismatch = |what: &str| {
        Err((
            ErrorKind::TypeMismatch,
            format!("expected {what}, received {} ({v})", received()),
        ))
    };
    let range = |x: f64, lo: f64, hi: f64| {
        if x < lo {
            Err((
                ErrorKind::ValueSmallerThanMin,
                format!("value {v} smaller than min of {lo}"),
            ))
        } else if x > hi {
            Err((
                ErrorKind::ValueBiggerThanMax,
                format!("value {v} bigger than max of {hi}"),
            ))
        } else {
            Ok(())
        }
    };
    match ty {
        Ty::Link(t) => Err((
            ErrorKind::TypeMismatch,
            format!(
                "expected a link [\"node id\", output index] to a {t} output, received {} ({v})",
                received()
            ),
        )),
        Ty::Int(lo, hi) => match v.as_i64() {
            Some(x) => range(x as f64, *lo as f64, *hi as f64),
            None => mismatch("an int"),
        },
        Ty::Float(lo, hi) => match v.as_f64() {
            Some(x) => range(x, *lo, *hi),
            None => mismatch("a number"),
        },
        Ty::Str => match v {
            Json::String(_) => Ok(()),
            _ => mismatch("a string"),
        },
        Ty::Choice(list) => match v.as_str() {
            Some(s) if list.contains(&s) => Ok(()),
            _ => Err((
                ErrorKind::ValueNotInList,
                format!("value not in list: {v} (diffgraph has {})", list.join(", ")),
            )),
        },
        Ty::Model(kind) => match v.as_str() {
            Some(name) => models
                .resolve(kind, name)
                .map(|_| ())
                .map_err(|m| (ErrorKind::ValueNotInList, m)),
            None => mismatch("a file name"),
        },
    }
}
