//! A validated API workflow expanded into a native diffgraph graph. Every
//! ComfyUI node keeps its id (so `--set 5.width=64` and error messages use
//! the workflow's ids); a node that becomes several native nodes names the
//! extra ones `ID:part`. The sampler nodes expand into the native denoising
//! Loop of ComfyUI's sampling (`sampling`): KSchedule, KSamplerStart, then
//! per model evaluation KModelInput, UNetStep, CFGDenoise and KSamplerStep.
//!
//! LATENT values in the native graph are the VAE's scaled latents (native
//! VAEEncode/VAEDecode apply the scaling factor); ComfyUI's are unscaled
//! and its sampler scales on the way in and out: the same numbers reach the
//! model either way.
mod sampling;

use super::models::{is_sdxl_checkpoint, sidecar_config, ModelFolders};
use super::workflow::{ApiInput, ApiNode, Workflow};
use serde_json::{json, Map, Value as Json};

/// The native graph and, per (native node, native input), the ComfyUI
/// (node, input) it came from, for error messages.
pub struct Expanded {
    pub doc: Json,
    pub origins: Vec<((String, String), (String, String))>,
}

pub(super) struct Ctx<'a> {
    pub(super) wf: &'a Workflow,
    nodes: Map<String, Json>,
    pub(super) origins: Vec<((String, String), (String, String))>,
}

/// Expands a workflow that `schema::check` accepted.
pub fn expand(wf: &Workflow, models: &ModelFolders) -> Expanded {
    let mut cx = Ctx {
        wf,
        nodes: Map::new(),
        origins: Vec::new(),
    };
    for (id, node) in wf {
        cx.node(id, node, models);
    }
    Expanded {
        doc: json!({
            "description": "Converted from a ComfyUI API workflow by diffgraph (node ids are the workflow's; `ID:part` nodes are what a ComfyUI node expanded into).",
            "nodes": Json::Object(cx.nodes),
        }),
        origins: cx.origins,
    }
}

impl Ctx<'_> {
    pub(super) fn konst(&self, node: &ApiNode, name: &str) -> Json {
        match node.input(name) {
            Some(ApiInput::Const(v)) => v.clone(),
            other => panic!("schema::check guarantees a constant `{name}`, got {other:?}"),
        }
    }

    fn source(&self, node: &ApiNode, name: &str) -> (String, usize) {
        match node.input(name) {
            Some(ApiInput::Link { node, output }) => (node.clone(), *output),
            other => panic!("schema::check guarantees a link `{name}`, got {other:?}"),
        }
    }

    /// The native link for a ComfyUI link input.
    pub(super) fn link(&self, node: &ApiNode, name: &str) -> Json {
        let (src, out) = self.source(node, name);
        let class = self.wf[&src].class_type.as_str();
        let output = match (class, out) {
            ("CheckpointLoaderSimple", 0) => "model",
            ("CheckpointLoaderSimple", 1) => "clip",
            ("CheckpointLoaderSimple", 2) => "vae",
            ("CLIPSetLastLayer", _) => return self.link(&self.wf[&src], "clip"),
            // Its LATENT is its samples; the sampler finds the mask (`inpaint`).
            ("SetLatentNoiseMask", _) => return self.link(&self.wf[&src], "samples"),
            ("VAEEncodeForInpaint", _) => "latent",
            (c, o) if super::loaders::output(c, o).is_some() => {
                super::loaders::output(c, o).expect("matched")
            }
            ("CLIPTextEncode", _) => "conditioning",
            ("EmptyLatentImage", _) => "latent",
            ("KSampler" | "KSamplerAdvanced", _) => "latent",
            ("SamplerCustom" | "SamplerCustomAdvanced", 0) => "latent",
            ("SamplerCustom" | "SamplerCustomAdvanced", _) => "denoised",
            ("BasicScheduler" | "KarrasScheduler" | "ExponentialScheduler", _) => "sigmas",
            ("SplitSigmas", 0) => "high_sigmas",
            ("SplitSigmas", _) => "low_sigmas",
            ("VAEDecode", _) => "image",
            ("VAEEncode", _) => "latent",
            _ => match super::image_nodes::output(class, out) {
                Some(name) => name,
                None => unreachable!("schema::check refuses links to {class} output {out}"),
            },
        };
        json!([src, output])
    }

    /// The CLIPSetLastLayer on a CLIP link's way, as diffgraph's clip_skip:
    /// ComfyUI's stop_at_clip_layer -1 is the last layer (0 skipped), -2 the
    /// penultimate (1), both through the final layer norm as diffgraph's.
    fn clip_skip(&self, node: &ApiNode) -> i64 {
        let (mut src, mut out) = self.source(node, "clip");
        // Through LoRA loaders, which pass the CLIP on.
        while let Some(input) = super::loaders::through(&self.wf[&src].class_type, out) {
            (src, out) = self.source(&self.wf[&src], input);
        }
        let n = &self.wf[&src];
        if n.class_type == "CLIPSetLastLayer" {
            let stop = self.konst(n, "stop_at_clip_layer").as_i64().unwrap_or(-1);
            -stop - 1
        } else {
            0
        }
    }

    /// The checkpoint loader a MODEL link comes from (for its scheduler
    /// config and prediction type).
    fn loader_of(&self, node: &ApiNode) -> String {
        let (mut src, mut out) = self.source(node, "model");
        // Through LoRA loaders, which pass the MODEL on.
        while let Some(input) = super::loaders::through(&self.wf[&src].class_type, out) {
            (src, out) = self.source(&self.wf[&src], input);
        }
        src
    }

    /// Whether the checkpoint behind a MODEL link is SDXL (following model
    /// patches such as LoRA loaders back to the checkpoint loader): ComfyUI's
    /// CONDITIONING carries SDXL's pooled embedding and the sampler adds
    /// the time ids implicitly; the native graph wires both.
    pub(super) fn is_sdxl(&self, mut id: String, models: &ModelFolders) -> bool {
        for _ in 0..self.wf.len() {
            let node = &self.wf[&id];
            if let Some(ApiInput::Const(Json::String(name))) = node.input("ckpt_name") {
                return models
                    .resolve("checkpoints", name)
                    .is_ok_and(|path| is_sdxl_checkpoint(&path));
            }
            match node.input("model") {
                Some(ApiInput::Link { node, .. }) => id = node.clone(),
                _ => return false,
            }
        }
        false
    }

    pub(super) fn put(&mut self, id: &str, spec: Json, renames: &[(&str, &str)], comfy_id: &str) {
        for (native, comfy) in renames {
            self.origins.push((
                (id.to_string(), native.to_string()),
                (comfy_id.to_string(), comfy.to_string()),
            ));
        }
        self.nodes.insert(id.to_string(), spec);
    }

    /// LoadCheckpoint's inputs for a loader's `ckpt_name` (with its sidecar
    /// config, if any).
    pub(super) fn checkpoint_inputs(&self, n: &ApiNode, models: &ModelFolders) -> Json {
        let name = self.konst(n, "ckpt_name");
        let path = models
            .resolve("checkpoints", name.as_str().unwrap_or_default())
            .expect("schema::check resolved it");
        let mut inputs = json!({ "path": path.to_string_lossy(), "dtype": "fp32" });
        if let Some(cfg) = sidecar_config(&path) {
            inputs["config"] = json!(cfg.to_string_lossy());
        }
        if let Some(file) = super::models::sidecar_file(&path) {
            if let Json::Object(extra) = super::models::config_inputs(&file) {
                inputs.as_object_mut().expect("an object").extend(extra);
            }
        }
        inputs
    }

    fn node(&mut self, id: &str, n: &ApiNode, models: &ModelFolders) {
        match n.class_type.as_str() {
            "CheckpointLoaderSimple" => {
                let inputs = self.checkpoint_inputs(n, models);
                self.put(
                    id,
                    json!({ "type": "LoadCheckpoint", "inputs": inputs }),
                    &[("path", "ckpt_name")],
                    id,
                );
            }
            // Folded into the CLIPTextEncode nodes it feeds (`clip_skip`).
            "CLIPSetLastLayer" => {}
            // Folded into the samplers it feeds (`conditioning`).
            "ConditioningCombine" | "ConditioningSetArea" => {}
            class if super::loaders::file_input(class).is_some() => {
                let (kind, input) = super::loaders::file_input(class).expect("matched");
                let name = self.konst(n, input);
                let file = models
                    .resolve(kind, name.as_str().unwrap_or_default())
                    .expect("schema::check resolved it");
                let links: Vec<(&str, Json)> = ["model", "clip"]
                    .into_iter()
                    .filter(|l| matches!(n.input(l), Some(ApiInput::Link { .. })))
                    .map(|l| (l, self.link(n, l)))
                    .collect();
                let (spec, renames) =
                    super::loaders::native(class, &links, &|k| self.konst(n, k), &file);
                self.put(id, spec, &renames, id);
            }
            "CLIPTextEncode" => {
                let mut spec = json!({ "type": "CLIPTextEncode", "inputs": {
                    "clip": self.link(n, "clip"),
                    "text": self.konst(n, "text"),
                    "clip_skip": self.clip_skip(n),
                }});
                // `embedding:name` in the prompt: the first embeddings folder there is.
                if let Some(dir) = models
                    .folders("embeddings")
                    .into_iter()
                    .find(|d| d.is_dir())
                {
                    spec["inputs"]["embeddings"] = json!(dir.to_string_lossy());
                }
                self.put(id, spec, &[("clip", "clip"), ("text", "text")], id);
            }
            "EmptyLatentImage" => {
                // ComfyUI: zeros of [batch, 4, height // 8, width // 8].
                let dim = |k: &str| self.konst(n, k).as_i64().unwrap_or(0);
                let shape = json!([dim("batch_size"), 4, dim("height") / 8, dim("width") / 8]);
                self.put(
                    id,
                    json!({ "type": "EmptyLatent", "inputs": { "shape": shape } }),
                    &[("shape", "width")],
                    id,
                );
            }
            "KSampler"
            | "KSamplerAdvanced"
            | "SamplerCustom"
            | "SamplerCustomAdvanced"
            | "BasicScheduler"
            | "KarrasScheduler"
            | "ExponentialScheduler"
            | "SplitSigmas"
            | "KSamplerSelect"
            | "RandomNoise"
            | "DisableNoise"
            | "BasicGuider"
            | "CFGGuider" => self.sampler_node(id, n, models),
            "VAEDecode" => {
                let spec = json!({ "type": "VAEDecode", "inputs": {
                    "vae": self.link(n, "vae"), "latent": self.link(n, "samples") }});
                self.put(id, spec, &[("vae", "vae"), ("latent", "samples")], id);
            }
            "VAEEncode" => {
                // The posterior's mean, as ComfyUI's VAE encode.
                let spec = json!({ "type": "VAEEncode", "inputs": {
                    "vae": self.link(n, "vae"), "image": self.link(n, "pixels") }});
                self.put(id, spec, &[("vae", "vae"), ("image", "pixels")], id);
            }
            "SaveImage" | "PreviewImage" => {
                let prefix = match n.class_type.as_str() {
                    "SaveImage" => self.konst(n, "filename_prefix"),
                    _ => json!(format!("preview_{id}")),
                };
                let spec = json!({ "type": "SaveImage", "inputs": {
                    "image": self.link(n, "images"), "filename_prefix": prefix }});
                self.put(
                    id,
                    spec,
                    &[("image", "images"), ("filename_prefix", "filename_prefix")],
                    id,
                );
            }
            other => {
                if !self.image_node(id, n, models) && !self.inpaint_node(id, n) {
                    unreachable!("schema::check refuses {other}")
                }
            }
        }
    }
}
