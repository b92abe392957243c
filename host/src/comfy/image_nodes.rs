//! ComfyUI's loader, image, mask and latent-batch nodes (`nodes.py`
//! `CheckpointLoader`, `LoadImage`, `LoadImageMask`, `LatentUpscale`,
//! `LatentUpscaleBy`, `ImageScale`, `ImageScaleBy`, `ImageInvert`,
//! `LatentFromBatch`, `RepeatLatentBatch`, `EmptyImage`, `ImageBatch`,
//! `LatentComposite`; `comfy_extras/nodes_mask.py` `MaskToImage`,
//! `ImageToMask`, `InvertMask`): their schemas (names, inputs, ranges,
//! output order exactly as ComfyUI's) and their expansion into the core
//! plugin's nodes (`Resize`, `LoadImage`, `LoadMask`, `BatchSlice`, ...),
//! which carry ComfyUI's pixel math and are parity-tested against it.
//!
//! ComfyUI's MASK is a float [B,H,W] tensor, 1 marking what is masked
//! (transparent pixels of a loaded image). Its LATENT is a dict whose
//! `batch_index` (set by LatentFromBatch) picks each item's noise in the
//! sampler; here the latent is the tensor and `BatchSlice` also outputs the
//! indices (`batch_index`), for a sampler expansion to use.
use super::expand::Ctx;
use super::models::ModelFolders;
use super::schema::{Spec, Ty};
use super::workflow::ApiNode;
use serde_json::{json, Value as Json};

const MAX_RES: i64 = 16384;
const LATENT_METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic", "bislerp"];
const IMAGE_METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];
const CROPS: &[&str] = &["disabled", "center"];

const fn spec(
    class: &'static str,
    inputs: &'static [(&'static str, Ty)],
    outputs: &'static [&'static str],
) -> Spec {
    Spec {
        class,
        inputs,
        outputs,
        output_node: false,
    }
}

pub const SPECS: &[Spec] = &[
    spec(
        "CheckpointLoader",
        &[
            ("config_name", Ty::Model("configs")),
            ("ckpt_name", Ty::Model("checkpoints")),
        ],
        &["MODEL", "CLIP", "VAE"],
    ),
    spec("LoadImage", &[("image", Ty::Input)], &["IMAGE", "MASK"]),
    spec(
        "LoadImageMask",
        &[
            ("image", Ty::Input),
            ("channel", Ty::Choice(&["alpha", "red", "green", "blue"])),
        ],
        &["MASK"],
    ),
    spec(
        "LatentUpscale",
        &[
            ("samples", Ty::Link("LATENT")),
            ("upscale_method", Ty::Choice(LATENT_METHODS)),
            ("width", Ty::Int(0, MAX_RES)),
            ("height", Ty::Int(0, MAX_RES)),
            ("crop", Ty::Choice(CROPS)),
        ],
        &["LATENT"],
    ),
    spec(
        "LatentUpscaleBy",
        &[
            ("samples", Ty::Link("LATENT")),
            ("upscale_method", Ty::Choice(LATENT_METHODS)),
            ("scale_by", Ty::Float(0.01, 8.0)),
        ],
        &["LATENT"],
    ),
    spec(
        "ImageScale",
        &[
            ("image", Ty::Link("IMAGE")),
            ("upscale_method", Ty::Choice(IMAGE_METHODS)),
            ("width", Ty::Int(0, MAX_RES)),
            ("height", Ty::Int(0, MAX_RES)),
            ("crop", Ty::Choice(CROPS)),
        ],
        &["IMAGE"],
    ),
    spec(
        "ImageScaleBy",
        &[
            ("image", Ty::Link("IMAGE")),
            ("upscale_method", Ty::Choice(IMAGE_METHODS)),
            ("scale_by", Ty::Float(0.01, 8.0)),
        ],
        &["IMAGE"],
    ),
    spec("ImageInvert", &[("image", Ty::Link("IMAGE"))], &["IMAGE"]),
    spec(
        "LatentFromBatch",
        &[
            ("samples", Ty::Link("LATENT")),
            ("batch_index", Ty::Int(0, 63)),
            ("length", Ty::Int(1, 64)),
        ],
        &["LATENT"],
    ),
    spec(
        "RepeatLatentBatch",
        &[("samples", Ty::Link("LATENT")), ("amount", Ty::Int(1, 64))],
        &["LATENT"],
    ),
    spec(
        "EmptyImage",
        &[
            ("width", Ty::Int(1, MAX_RES)),
            ("height", Ty::Int(1, MAX_RES)),
            ("batch_size", Ty::Int(1, 4096)),
            ("color", Ty::Int(0, 0xFF_FFFF)),
        ],
        &["IMAGE"],
    ),
    spec(
        "ImageBatch",
        &[("image1", Ty::Link("IMAGE")), ("image2", Ty::Link("IMAGE"))],
        &["IMAGE"],
    ),
    spec(
        "LatentComposite",
        &[
            ("samples_to", Ty::Link("LATENT")),
            ("samples_from", Ty::Link("LATENT")),
            ("x", Ty::Int(0, MAX_RES)),
            ("y", Ty::Int(0, MAX_RES)),
            ("feather", Ty::Int(0, MAX_RES)),
        ],
        &["LATENT"],
    ),
    spec("MaskToImage", &[("mask", Ty::Link("MASK"))], &["IMAGE"]),
    spec(
        "ImageToMask",
        &[
            ("image", Ty::Link("IMAGE")),
            ("channel", Ty::Choice(&["red", "green", "blue", "alpha"])),
        ],
        &["MASK"],
    ),
    spec("InvertMask", &[("mask", Ty::Link("MASK"))], &["MASK"]),
];

/// The native output a link to output `out` of one of these nodes reads.
pub fn output(class: &str, out: usize) -> Option<&'static str> {
    Some(match (class, out) {
        ("CheckpointLoader", 0) => "model",
        ("CheckpointLoader", 1) => "clip",
        ("CheckpointLoader", 2) => "vae",
        ("LoadImage", 0) => "image",
        ("LoadImage", 1) | ("LoadImageMask", 0) | ("ImageToMask", 0) => "mask",
        ("EmptyImage", 0) | ("MaskToImage", 0) => "image",
        (c, 0) if spec_of(c).is_some() => "out",
        _ => return None,
    })
}

fn spec_of(class: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.class == class)
}

impl Ctx<'_> {
    /// Expands one of `SPECS`' nodes; false for any other class.
    pub(super) fn image_node(&mut self, id: &str, n: &ApiNode, models: &ModelFolders) -> bool {
        let k = |name: &str| self.konst(n, name);
        let int = |name: &str| self.konst(n, name).as_i64().unwrap_or(0);
        let (ty, inputs, renames): (&str, Json, &[(&str, &str)]) = match n.class_type.as_str() {
            "CheckpointLoader" => {
                let mut inputs = self.checkpoint_inputs(n, models);
                let name = k("config_name");
                let config = models
                    .resolve("configs", name.as_str().unwrap_or_default())
                    .expect("schema::check resolved it");
                if let Json::Object(extra) = super::models::config_inputs(&config) {
                    inputs.as_object_mut().expect("an object").extend(extra);
                }
                (
                    "LoadCheckpoint",
                    inputs,
                    &[("path", "ckpt_name"), ("config", "config_name")],
                )
            }
            "LoadImage" | "LoadImageMask" => {
                let name = k("image");
                let path = models
                    .resolve_input(name.as_str().unwrap_or_default())
                    .expect("schema::check resolved it");
                let path = path.to_string_lossy();
                if n.class_type == "LoadImage" {
                    ("LoadImage", json!({ "path": path }), &[("path", "image")])
                } else {
                    let inputs = json!({ "path": path, "channel": k("channel") });
                    (
                        "LoadMask",
                        inputs,
                        &[("path", "image"), ("channel", "channel")],
                    )
                }
            }
            // Pixel sizes, at least 64, to latent units (// 8).
            "LatentUpscale" => (
                "Resize",
                json!({ "x": self.link(n, "samples"), "method": k("upscale_method"),
                    "crop": k("crop"), "width": k("width"), "height": k("height"),
                    "divisor": 8, "min_size": 64 }),
                &[
                    ("x", "samples"),
                    ("method", "upscale_method"),
                    ("width", "width"),
                    ("height", "height"),
                ],
            ),
            "ImageScale" => (
                "Resize",
                json!({ "x": self.link(n, "image"), "method": k("upscale_method"),
                    "crop": k("crop"), "width": k("width"), "height": k("height") }),
                &[
                    ("x", "image"),
                    ("method", "upscale_method"),
                    ("width", "width"),
                    ("height", "height"),
                ],
            ),
            "LatentUpscaleBy" | "ImageScaleBy" => {
                let x = if n.class_type == "ImageScaleBy" {
                    "image"
                } else {
                    "samples"
                };
                (
                    "Resize",
                    json!({ "x": self.link(n, x), "method": k("upscale_method"), "scale_by": k("scale_by") }),
                    &[
                        ("x", x),
                        ("method", "upscale_method"),
                        ("scale_by", "scale_by"),
                    ],
                )
            }
            "ImageInvert" => (
                "Invert",
                json!({ "x": self.link(n, "image") }),
                &[("x", "image")],
            ),
            "InvertMask" => (
                "Invert",
                json!({ "x": self.link(n, "mask") }),
                &[("x", "mask")],
            ),
            "LatentFromBatch" => (
                "BatchSlice",
                json!({ "x": self.link(n, "samples"), "start": k("batch_index"), "length": k("length") }),
                &[
                    ("x", "samples"),
                    ("start", "batch_index"),
                    ("length", "length"),
                ],
            ),
            "RepeatLatentBatch" => (
                "BatchRepeat",
                json!({ "x": self.link(n, "samples"), "amount": k("amount") }),
                &[("x", "samples"), ("amount", "amount")],
            ),
            "EmptyImage" => (
                "SolidImage",
                json!({ "width": k("width"), "height": k("height"),
                    "batch_size": k("batch_size"), "color": k("color") }),
                &[
                    ("width", "width"),
                    ("height", "height"),
                    ("batch_size", "batch_size"),
                    ("color", "color"),
                ],
            ),
            "ImageBatch" => (
                "BatchConcat",
                json!({ "a": self.link(n, "image1"), "b": self.link(n, "image2") }),
                &[("a", "image1"), ("b", "image2")],
            ),
            // ComfyUI's x, y and feather are pixels: // 8 to latent units.
            "LatentComposite" => (
                "Composite",
                json!({ "destination": self.link(n, "samples_to"), "source": self.link(n, "samples_from"),
                    "x": int("x") / 8, "y": int("y") / 8, "feather": int("feather") / 8 }),
                &[
                    ("destination", "samples_to"),
                    ("source", "samples_from"),
                    ("x", "x"),
                    ("y", "y"),
                    ("feather", "feather"),
                ],
            ),
            "MaskToImage" => (
                "MaskToImage",
                json!({ "mask": self.link(n, "mask") }),
                &[("mask", "mask")],
            ),
            "ImageToMask" => (
                "ImageToMask",
                json!({ "image": self.link(n, "image"), "channel": k("channel") }),
                &[("image", "image"), ("channel", "channel")],
            ),
            _ => return false,
        };
        self.put(id, json!({ "type": ty, "inputs": inputs }), renames, id);
        true
    }
}
