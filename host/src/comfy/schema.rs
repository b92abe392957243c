//! The ComfyUI node types diffgraph runs, with ComfyUI's input names, types,
//! ranges and output order (ComfyUI's `nodes.py` `INPUT_TYPES` /
//! `RETURN_TYPES`), and the validation of a workflow against them: every
//! problem at once, named by the workflow's node ids and input names, with
//! ComfyUI's error kinds where they overlap (`execution.py`,
//! `validate_inputs`).
use super::models::ModelFolders;
use super::sampler_specs::{implemented, SAMPLER_SPECS};
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
    /// ComfyUI's BOOLEAN widget.
    Bool,
    /// A file name in this kind of model folder.
    Model(&'static str),
    /// An image file name in the input folder (LoadImage's `image`).
    Input,
}

pub struct Spec {
    pub class: &'static str,
    pub inputs: &'static [(&'static str, Ty)],
    pub outputs: &'static [&'static str],
    /// Output nodes (what a run needs at least one of).
    pub output_node: bool,
}

/// ComfyUI's MAX_RESOLUTION.
const MAX_RES: i64 = 16384;

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

/// Every ComfyUI node type diffgraph translates: `SPECS`, the sampler
/// nodes (`sampler_specs`) and the image, mask and batch nodes
/// (`image_nodes`) and the loaders besides the checkpoint's (`loaders`).
pub fn all_specs() -> impl Iterator<Item = &'static Spec> {
    SPECS
        .iter()
        .chain(SAMPLER_SPECS)
        .chain(super::image_nodes::SPECS.iter())
        .chain(super::loaders::SPECS)
        .chain(super::inpaint::SPECS)
        .chain(super::conditioning::SPECS)
}

pub fn spec(class: &str) -> Option<&'static Spec> {
    all_specs().find(|s| s.class == class)
}

/// Validates the whole workflow; Ok when it can be expanded.
pub fn check(wf: &Workflow, models: &ModelFolders) -> Result<(), Vec<GraphError>> {
    let mut errors = Vec::new();
    // ComfyUI refuses an unknown class anywhere before anything else.
    for (id, node) in wf {
        if let Some(why) = super::conditioning::refusal(&node.class_type) {
            errors.push(
                GraphError::new(
                    ErrorKind::UnknownNodeType,
                    format!("ComfyUI node type `{}` is refused: {why}", node.class_type),
                )
                .node(id),
            );
        } else if spec(&node.class_type).is_none() {
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
        errors.extend(super::inpaint::check(wf));
        errors.extend(super::conditioning::check(wf));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A `sampler_name` of ComfyUI's list that diffgraph does not implement.
fn check_combination(node: &super::workflow::ApiNode) -> Option<GraphError> {
    match node.input("sampler_name") {
        Some(ApiInput::Const(Json::String(s))) if !implemented(s) => Some(
            GraphError::new(
                ErrorKind::ValueNotInList,
                format!("ComfyUI's sampler `{s}` is not implemented in diffgraph"),
            )
            .input("sampler_name")
            .expected(diffgraph_diffusion::comfy::names::SAMPLERS.join(", ")),
        ),
        _ => None,
    }
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
        Ty::Bool => match v {
            Json::Bool(_) => Ok(()),
            _ => mismatch("a boolean"),
        },
        Ty::Input => match v.as_str() {
            Some(name) => models
                .resolve_input(name)
                .map(|_| ())
                .map_err(|m| (ErrorKind::ValueNotInList, m)),
            None => mismatch("an image file name"),
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
