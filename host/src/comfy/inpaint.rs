//! Inpainting and what a ComfyUI LATENT carries besides its samples.
//!
//! ComfyUI's LATENT is a dict: `samples`, and optionally `noise_mask`
//! (`nodes.py` `SetLatentNoiseMask`, `VAEEncodeForInpaint`) and
//! `batch_index` (`LatentFromBatch`). Most latent nodes `copy()` the dict and
//! replace `samples`, so both keys travel on through them (the samplers'
//! outputs, `LatentUpscale(By)`, `LatentComposite`'s `samples_to`), while
//! `LatentFromBatch` and `RepeatLatentBatch` slice or repeat them. Here the
//! native LATENT is the samples tensor alone, so the sampler expansion asks
//! [`noise_mask`] and [`batch_index`] where its latent's keys come from, by
//! walking the workflow back from the sampler's `latent_image`, and wires
//! them to `KSamplerStart`'s `mask` (ComfyUI's `denoise_mask`:
//! `KSamplerX0Inpaint`) and `GaussianNoise`'s `batch_index`
//! (`prepare_noise`'s `batch_inds`).
//!
//! Known difference: a `noise_mask` with 1 < B_mask < B_latent through
//! `LatentFromBatch` is sliced as it is (ComfyUI first repeats it to the
//! latent's batch); masks of batch 1 (the usual case) and of the latent's
//! batch are exact. A `batch_index` that would be sliced or repeated again
//! (LatentFromBatch or RepeatLatentBatch after a LatentFromBatch) is refused
//! at validation ([`check`]).
use super::expand::Ctx;
use super::schema::{Spec, Ty};
use super::workflow::{ApiInput, ApiNode, Workflow};
use crate::graph::{ErrorKind, GraphError};
use serde_json::{json, Value as Json};

pub const SPECS: &[Spec] = &[
    Spec {
        class: "SetLatentNoiseMask",
        inputs: &[("samples", Ty::Link("LATENT")), ("mask", Ty::Link("MASK"))],
        outputs: &["LATENT"],
        output_node: false,
    },
    Spec {
        class: "VAEEncodeForInpaint",
        inputs: &[
            ("pixels", Ty::Link("IMAGE")),
            ("vae", Ty::Link("VAE")),
            ("mask", Ty::Link("MASK")),
            ("grow_mask_by", Ty::Int(0, 64)),
        ],
        outputs: &["LATENT"],
        output_node: false,
    },
];

/// The LATENT input whose dict a node copies into its output, if it does.
fn carried_from(class: &str) -> Option<&'static str> {
    Some(match class {
        "KSampler" | "KSamplerAdvanced" | "SamplerCustom" | "SamplerCustomAdvanced" => {
            "latent_image"
        }
        "LatentUpscale" | "LatentUpscaleBy" | "SetLatentNoiseMask" | "LatentFromBatch"
        | "RepeatLatentBatch" => "samples",
        "LatentComposite" => "samples_to",
        _ => return None,
    })
}

fn upstream<'w>(wf: &'w Workflow, id: &str, input: &str) -> Option<&'w str> {
    match wf.get(id)?.input(input) {
        Some(ApiInput::Link { node, .. }) => Some(node.as_str()),
        _ => None,
    }
}

/// The LatentFromBatch whose indices the LATENT of node `id` carries.
pub fn batch_index_origin<'w>(wf: &'w Workflow, mut id: &'w str) -> Option<&'w str> {
    for _ in 0..=wf.len() {
        let class = wf.get(id)?.class_type.as_str();
        if class == "LatentFromBatch" {
            return Some(id);
        }
        id = upstream(wf, id, carried_from(class)?)?;
    }
    None
}

/// Batch indices sliced or repeated a second time: ComfyUI's list
/// arithmetic on them is not translated yet, so such workflows are refused.
pub fn check(wf: &Workflow) -> Vec<GraphError> {
    let mut errors = Vec::new();
    for (id, node) in wf {
        let class = node.class_type.as_str();
        if !matches!(class, "LatentFromBatch" | "RepeatLatentBatch") {
            continue;
        }
        let Some(src) = upstream(wf, id, "samples") else {
            continue;
        };
        if let Some(origin) = batch_index_origin(wf, src) {
            errors.push(
                GraphError::new(
                    ErrorKind::InvalidGraph,
                    format!(
                        "{class} on a latent that already carries LatentFromBatch `{origin}`'s batch_index: \
                         diffgraph does not translate a batch_index sliced or repeated again yet"
                    ),
                )
                .node(id)
                .input("samples"),
            );
        }
    }
    errors
}

impl Ctx<'_> {
    /// The native link to the noise_mask the LATENT of node `id` carries
    /// (adding the native nodes that slice or repeat it on the way).
    pub(super) fn noise_mask(&mut self, id: &str) -> Option<Json> {
        // Walk back to where the mask is set, noting the batch nodes passed.
        let wf = self.wf;
        let mut batch_nodes = Vec::new();
        let mut cur = id.to_string();
        let mut mask = None;
        for _ in 0..=wf.len() {
            let n = &wf[&cur];
            match n.class_type.as_str() {
                "SetLatentNoiseMask" => mask = Some(self.link(n, "mask")),
                "VAEEncodeForInpaint" => mask = Some(json!([cur, "noise_mask"])),
                class => {
                    if matches!(class, "LatentFromBatch" | "RepeatLatentBatch") {
                        batch_nodes.push(cur.clone());
                    }
                    cur = upstream(wf, &cur, carried_from(class)?)?.to_string();
                    continue;
                }
            }
            break;
        }
        let mut mask = mask?;
        // Apply the batch nodes nearest the mask first.
        for bid in batch_nodes.into_iter().rev() {
            let n = &wf[&bid];
            let mid = format!("{bid}:mask");
            let spec = if n.class_type == "LatentFromBatch" {
                // masks[batch_index:batch_index + length] (a batch of 1 kept).
                json!({ "type": "BatchSlice", "inputs": { "x": mask,
                    "start": self.konst(n, "batch_index"), "length": self.konst(n, "length") }})
            } else {
                // noise_mask.repeat(amount); a batch of 1 is the same mask either way.
                json!({ "type": "BatchRepeat", "inputs": { "x": mask,
                    "amount": self.konst(n, "amount") }})
            };
            self.put(&mid, spec, &[], &bid);
            mask = json!([mid, "out"]);
        }
        Some(mask)
    }

    /// The native link to the batch_index list the LATENT of node `id`
    /// carries (LatentFromBatch's BatchSlice).
    pub(super) fn batch_index(&self, id: &str) -> Option<Json> {
        batch_index_origin(self.wf, id).map(|origin| json!([origin, "batch_index"]))
    }

    /// VAEEncodeForInpaint (SetLatentNoiseMask is folded: its LATENT is
    /// its `samples`, its mask found by [`Ctx::noise_mask`]).
    pub(super) fn inpaint_node(&mut self, id: &str, n: &ApiNode) -> bool {
        match n.class_type.as_str() {
            "VAEEncodeForInpaint" => {
                let spec = json!({ "type": "VAEEncodeForInpaint", "inputs": {
                    "vae": self.link(n, "vae"),
                    "image": self.link(n, "pixels"),
                    "mask": self.link(n, "mask"),
                    "grow_mask_by": self.konst(n, "grow_mask_by"),
                }});
                self.put(
                    id,
                    spec,
                    &[
                        ("vae", "vae"),
                        ("image", "pixels"),
                        ("mask", "mask"),
                        ("grow_mask_by", "grow_mask_by"),
                    ],
                    id,
                );
                true
            }
            "SetLatentNoiseMask" => true,
            _ => false,
        }
    }
}
