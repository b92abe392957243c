//! ComfyUI's loaders beside the checkpoint: `LoraLoader`,
//! `LoraLoaderModelOnly` and `VAELoader` (ComfyUI `nodes.py`), their
//! schemas and what each becomes: the native `LoadLora`,
//! `LoadLoraModelOnly` and `LoadVAE` of the sd plugin, keeping the node id.
//! A LoRA loader passes MODEL and CLIP through (patched), so the nodes that
//! follow a link back to the checkpoint (the KSampler's scheduler config,
//! CLIPSetLastLayer's clip_skip) walk through it ([`through`]).
use super::schema::{Spec, Ty};
use serde_json::{json, Value as Json};
use std::path::Path;

/// ComfyUI's strength range for LoRA loaders.
const STRENGTH: Ty = Ty::Float(-100.0, 100.0);

pub const SPECS: &[Spec] = &[
    Spec {
        class: "LoraLoader",
        inputs: &[
            ("model", Ty::Link("MODEL")),
            ("clip", Ty::Link("CLIP")),
            ("lora_name", Ty::Model("loras")),
            ("strength_model", STRENGTH),
            ("strength_clip", STRENGTH),
        ],
        outputs: &["MODEL", "CLIP"],
        output_node: false,
    },
    Spec {
        class: "LoraLoaderModelOnly",
        inputs: &[
            ("model", Ty::Link("MODEL")),
            ("lora_name", Ty::Model("loras")),
            ("strength_model", STRENGTH),
        ],
        outputs: &["MODEL"],
        output_node: false,
    },
    Spec {
        class: "VAELoader",
        inputs: &[("vae_name", Ty::Model("vae"))],
        outputs: &["VAE"],
        output_node: false,
    },
];

/// The native output name of a loader's output `index`.
pub fn output(class: &str, index: usize) -> Option<&'static str> {
    Some(match (class, index) {
        ("LoraLoader", 0) | ("LoraLoaderModelOnly", 0) => "model",
        ("LoraLoader", 1) => "clip",
        ("VAELoader", 0) => "vae",
        _ => return None,
    })
}

/// The input a pass-through loader takes the given output from: a LoRA
/// loader's MODEL comes from its `model` input, its CLIP from `clip`.
pub fn through(class: &str, index: usize) -> Option<&'static str> {
    match (class, index) {
        ("LoraLoader", 0) | ("LoraLoaderModelOnly", 0) => Some("model"),
        ("LoraLoader", 1) => Some("clip"),
        _ => None,
    }
}

/// The native node for a loader, given its links (already native), its
/// constants and its resolved file; with the (native, ComfyUI) input names
/// for error messages.
pub fn native(
    class: &str,
    links: &[(&str, Json)],
    konst: &dyn Fn(&str) -> Json,
    file: &Path,
) -> (Json, Vec<(&'static str, &'static str)>) {
    let path = json!(file.to_string_lossy());
    let mut inputs = serde_json::Map::new();
    for (name, link) in links {
        inputs.insert(name.to_string(), link.clone());
    }
    inputs.insert("path".into(), path);
    let (ty, renames): (&str, Vec<(&str, &str)>) = match class {
        "LoraLoader" => {
            inputs.insert("strength_model".into(), konst("strength_model"));
            inputs.insert("strength_clip".into(), konst("strength_clip"));
            let r = vec![
                ("model", "model"),
                ("clip", "clip"),
                ("path", "lora_name"),
                ("strength_model", "strength_model"),
                ("strength_clip", "strength_clip"),
            ];
            ("LoadLora", r)
        }
        "LoraLoaderModelOnly" => {
            inputs.insert("strength_model".into(), konst("strength_model"));
            let r = vec![
                ("model", "model"),
                ("path", "lora_name"),
                ("strength_model", "strength_model"),
            ];
            ("LoadLoraModelOnly", r)
        }
        _ => {
            inputs.insert("dtype".into(), json!("fp32"));
            ("LoadVAE", vec![("path", "vae_name")])
        }
    };
    (
        json!({ "type": ty, "inputs": Json::Object(inputs) }),
        renames,
    )
}

/// The model folder kind and input of a loader's file.
pub fn file_input(class: &str) -> Option<(&'static str, &'static str)> {
    match class {
        "LoraLoader" | "LoraLoaderModelOnly" => Some(("loras", "lora_name")),
        "VAELoader" => Some(("vae", "vae_name")),
        _ => None,
    }
}
