//! A validated API workflow expanded into a native diffgraph graph. Every
//! ComfyUI node keeps its id (so `--set 5.width=64` and error messages use
//! the workflow's ids); a node that becomes several native nodes names the
//! extra ones `ID:part`. KSampler expands into the native denoising Loop
//! (graphs/demo.json): Scheduler, initial noise, then per timestep
//! ScaleModelInput, UNetStep (which owns CFG: uncond + cfg·(cond − uncond))
//! and SchedulerStep.
//!
//! LATENT values in the native graph are the VAE's scaled latents (native
//! VAEEncode/VAEDecode apply the scaling factor); ComfyUI's are unscaled
//! and its sampler scales on the way in and out: the same numbers reach the
//! model either way.
use super::models::{sidecar_config, ModelFolders};
use super::workflow::{ApiInput, ApiNode, Workflow};
use serde_json::{json, Map, Value as Json};

/// The native graph and, per (native node, native input), the ComfyUI
/// (node, input) it came from, for error messages.
pub struct Expanded {
    pub doc: Json,
    pub origins: Vec<((String, String), (String, String))>,
}

struct Ctx<'a> {
    wf: &'a Workflow,
    nodes: Map<String, Json>,
    origins: Vec<((String, String), (String, String))>,
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
    fn konst(&self, node: &ApiNode, name: &str) -> Json {
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
    fn link(&self, node: &ApiNode, name: &str) -> Json {
        let (src, out) = self.source(node, name);
        let class = self.wf[&src].class_type.as_str();
        let output = match (class, out) {
            ("CheckpointLoaderSimple", 0) => "model",
            ("CheckpointLoaderSimple", 1) => "clip",
            ("CheckpointLoaderSimple", 2) => "vae",
            ("CLIPSetLastLayer", _) => return self.link(&self.wf[&src], "clip"),
            (c, o) if super::loaders::output(c, o).is_some() => {
                super::loaders::output(c, o).expect("matched")
            }
            ("CLIPTextEncode", _) => "conditioning",
            ("EmptyLatentImage", _) => "latent",
            ("KSampler", _) => "latent",
            ("VAEDecode", _) => "image",
            ("VAEEncode", _) => "latent",
            _ => unreachable!("schema::check refuses links to {class} output {out}"),
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

    fn put(&mut self, id: &str, spec: Json, renames: &[(&str, &str)], comfy_id: &str) {
        for (native, comfy) in renames {
            self.origins.push((
                (id.to_string(), native.to_string()),
                (comfy_id.to_string(), comfy.to_string()),
            ));
        }
        self.nodes.insert(id.to_string(), spec);
    }

    fn node(&mut self, id: &str, n: &ApiNode, models: &ModelFolders) {
        match n.class_type.as_str() {
            "CheckpointLoaderSimple" => {
                let name = self.konst(n, "ckpt_name");
                let path = models
                    .resolve("checkpoints", name.as_str().unwrap_or_default())
                    .expect("schema::check resolved it");
                let mut inputs = json!({ "path": path.to_string_lossy(), "dtype": "fp32" });
                if let Some(cfg) = sidecar_config(&path) {
                    inputs["config"] = json!(cfg.to_string_lossy());
                }
                self.put(
                    id,
                    json!({ "type": "LoadCheckpoint", "inputs": inputs }),
                    &[("path", "ckpt_name")],
                    id,
                );
            }
            // Folded into the CLIPTextEncode nodes it feeds (`clip_skip`).
            "CLIPSetLastLayer" => {}
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
            "KSampler" => self.ksampler(id, n),
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
            other => unreachable!("schema::check refuses {other}"),
        }
    }

    /// KSampler: the native Loop of graphs/demo.json. The initial latent is
    /// ComfyUI's `noise_scaling`: latent + noise·init_noise_sigma at full
    /// denoise, the scheduler's add_noise at its first timestep otherwise;
    /// the noise is `torch.manual_seed(seed); torch.randn(latent.shape)`
    /// (ComfyUI's `prepare_noise`), GaussianNoise's definition.
    fn ksampler(&mut self, id: &str, n: &ApiNode) {
        let loader = self.loader_of(n);
        let latent = self.link(n, "latent_image");
        let denoise = self.konst(n, "denoise").as_f64().unwrap_or(1.0);
        let steps = self.konst(n, "steps").as_i64().unwrap_or(1);
        let (total, strength) = partial_denoise(steps, denoise);
        let scheduler = self.konst(n, "scheduler");
        let (schedule, spacing) = match scheduler.as_str() {
            Some("karras") => ("karras", "linspace"),
            Some("sgm_uniform") => ("normal", "trailing"),
            _ => ("normal", "linspace"),
        };
        let p = |part: &str| format!("{id}:{part}");
        let sched = p("scheduler");
        self.put(
            &sched,
            json!({ "type": "Scheduler", "inputs": {
                "sampler": self.konst(n, "sampler_name"),
                "steps": total,
                "schedule": schedule,
                "timestep_spacing": spacing,
                "strength": strength,
                "seed": self.konst(n, "seed"),
                "config": [loader, "scheduler_config"],
                "prediction_type": [loader, "prediction_type"],
            }}),
            &[
                ("sampler", "sampler_name"),
                ("steps", "steps"),
                ("schedule", "scheduler"),
                ("strength", "denoise"),
                ("seed", "seed"),
            ],
            id,
        );
        self.put(
            &p("shape"),
            json!({ "type": "TensorShape", "inputs": { "x": latent } }),
            &[("x", "latent_image")],
            id,
        );
        let full = denoise >= 1.0;
        let scale = if full {
            json!([sched, "init_noise_sigma"])
        } else {
            json!(1.0)
        };
        self.put(
            &p("noise"),
            json!({ "type": "GaussianNoise", "inputs": {
                "seed": self.konst(n, "seed"), "shape": [p("shape"), "shape"], "scale": scale }}),
            &[("seed", "seed")],
            id,
        );
        let (start, start_out) = if full {
            (
                json!({ "type": "TensorAdd", "inputs": { "a": latent, "b": [p("noise"), "noise"] } }),
                "sum",
            )
        } else {
            (
                json!({ "type": "AddNoise", "inputs": {
                    "state": [sched, "state"], "sample": latent, "noise": [p("noise"), "noise"] }}),
                "noisy",
            )
        };
        self.put(&p("start"), start, &[("sample", "latent_image")], id);
        let body = json!({
            p("scaled"): { "type": "ScaleModelInput", "inputs": {
                "state": [id, "state"], "sample": [id, "latent"], "timestep": [id, "item"] }},
            p("unet"): { "type": "UNetStep", "inputs": {
                "model": self.link(n, "model"),
                "sample": [p("scaled"), "sample"],
                "timestep": [id, "item"],
                "cond": self.link(n, "positive"),
                "uncond": self.link(n, "negative"),
                "guidance_scale": self.konst(n, "cfg"),
            }},
            p("step"): { "type": "SchedulerStep", "inputs": {
                "state": [id, "state"],
                "model_output": [p("unet"), "model_output"],
                "timestep": [id, "item"],
                "sample": [id, "latent"],
            }},
        });
        for (native, comfy) in [
            ("model", "model"),
            ("cond", "positive"),
            ("uncond", "negative"),
            ("guidance_scale", "cfg"),
        ] {
            self.origins
                .push(((p("unet"), native.into()), (id.to_string(), comfy.into())));
        }
        self.put(
            id,
            json!({
                "type": "Loop",
                "comment": "ComfyUI KSampler: the denoising loop it hides",
                "inputs": {
                    "over": [sched, "timesteps"],
                    "latent": [p("start"), start_out],
                    "state": [sched, "state"],
                },
                "body": body,
                "next": { "latent": [p("step"), "prev_sample"], "state": [p("step"), "state"] },
            }),
            &[],
            id,
        );
    }
}

/// ComfyUI's `denoise` < 1 (`KSampler.set_steps` in `comfy/samplers.py`):
/// the schedule of `int(steps / denoise)` steps, of which the last `steps`
/// run. As the native Scheduler's img2img strength (diffusers: the last
/// `int(total * strength)` of `total` steps), that is `total` steps with a
/// strength a half step above `steps / total`, so that the product floors to
/// `steps` exactly whatever the rounding.
pub fn partial_denoise(steps: i64, denoise: f64) -> (i64, f64) {
    if denoise >= 1.0 || denoise <= 0.0 {
        return (steps, denoise.clamp(0.0, 1.0));
    }
    let total = (steps as f64 / denoise) as i64;
    (total, ((steps as f64 + 0.5) / total as f64).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::partial_denoise;

    #[test]
    fn partial_denoise_runs_comfyuis_last_steps() {
        for (steps, denoise) in [(20, 0.6), (20, 0.5), (4, 0.7), (30, 0.33), (1, 0.99)] {
            let (total, strength) = partial_denoise(steps, denoise);
            assert_eq!(total, (steps as f64 / denoise) as i64);
            assert_eq!((total as f64 * strength) as i64, steps, "{steps} {denoise}");
        }
        assert_eq!(partial_denoise(20, 1.0), (20, 1.0));
    }
}
