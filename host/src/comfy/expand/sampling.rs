//! The sampler nodes expanded: KSampler, KSamplerAdvanced, SamplerCustom and
//! SamplerCustomAdvanced each become the native Loop of ComfyUI's sampling
//! (graphs built from the sampling plugin's ComfyUI nodes):
//!
//! ```text
//! ID:sigmas  KSchedule (scheduler, steps, denoise, step window)
//! ID:noise   GaussianNoise (prepare_noise: manual_seed(seed), randn)
//! ID:start   KSamplerStart (noise scaling; evaluations)
//! ID         Loop over the evaluations, carrying latent, state, denoised:
//!   ID:input KModelInput -> ID:unet UNetStep -> ID:cfg CFGDenoise -> ID:step KSamplerStep
//! ```
//!
//! SAMPLER, NOISE and GUIDER values (KSamplerSelect, RandomNoise,
//! DisableNoise, BasicGuider, CFGGuider) are settings: they are folded into
//! the sampler that uses them. SIGMAS are native tensors (BasicScheduler ->
//! KSchedule, Karras/ExponentialScheduler -> KSigmas, SplitSigmas).
use super::{Ctx, ModelFolders};
use crate::comfy::conditioning::Cond;
use crate::comfy::workflow::ApiNode;
use serde_json::{json, Value as Json};

/// What a sampler node resolves to.
struct Sampling {
    model: Json,
    loader: String,
    /// The conds of each branch (ConditioningCombine lists several).
    positive: Vec<Cond>,
    negative: Option<Vec<Cond>>,
    cfg: Json,
    sampler_name: Json,
    sigmas: Json,
    /// The seed of prepare_noise, when noise is added.
    noise_seed: Option<Json>,
    /// The stochastic samplers' seed (`extra_args["seed"]`: the ancestral generator, the SDE Brownian tree).
    seed: Json,
    latent: Json,
    /// The ComfyUI node whose LATENT the sampler takes (for its
    /// noise_mask and batch_index).
    latent_node: String,
    /// (native input, ComfyUI node, ComfyUI input) for error messages.
    origins: Vec<(String, String, String, String)>,
}

impl Ctx<'_> {
    /// The sampler nodes and the SIGMAS nodes; the settings nodes are folded.
    pub(super) fn sampler_node(&mut self, id: &str, n: &ApiNode, models: &ModelFolders) {
        match n.class_type.as_str() {
            "KSampler" => {
                let sched = json!({ "type": "KSchedule", "inputs": {
                    "scheduler": self.konst(n, "scheduler"),
                    "steps": self.konst(n, "steps"),
                    "denoise": self.konst(n, "denoise"),
                    "sampler_name": self.konst(n, "sampler_name"),
                    "config": [self.loader_of(n), "scheduler_config"],
                }});
                let sigmas = self.schedule(id, n, sched);
                let s = self.simple(
                    id,
                    n,
                    sigmas,
                    Some(self.konst(n, "seed")),
                    self.konst(n, "seed"),
                );
                self.sample(id, s, models);
            }
            "KSamplerAdvanced" => {
                // common_ksampler(..., denoise=1, disable_noise, start_step, last_step, force_full_denoise).
                let sched = json!({ "type": "KSchedule", "inputs": {
                    "scheduler": self.konst(n, "scheduler"),
                    "steps": self.konst(n, "steps"),
                    "sampler_name": self.konst(n, "sampler_name"),
                    "start_step": self.konst(n, "start_at_step"),
                    "last_step": self.konst(n, "end_at_step"),
                    "force_full_denoise": self.konst(n, "return_with_leftover_noise") == "disable",
                    "config": [self.loader_of(n), "scheduler_config"],
                }});
                let sigmas = self.schedule(id, n, sched);
                let seed = self.konst(n, "noise_seed");
                let noise = (self.konst(n, "add_noise") == "enable").then(|| seed.clone());
                let s = self.simple(id, n, sigmas, noise, seed);
                self.sample(id, s, models);
            }
            "SamplerCustom" => {
                let seed = self.konst(n, "noise_seed");
                let noise = (self.konst(n, "add_noise") == true).then(|| seed.clone());
                let sigmas = self.link(n, "sigmas");
                let mut s = self.simple(id, n, sigmas, noise, seed);
                s.sampler_name = self.sampler_name(n);
                self.sample(id, s, models);
            }
            "SamplerCustomAdvanced" => {
                let (nid, _) = self.source(n, "noise");
                let noise_node = &self.wf[&nid];
                // Noise_RandomNoise(seed) / Noise_EmptyNoise (seed 0).
                let seed = match noise_node.class_type.as_str() {
                    "RandomNoise" => self.konst(noise_node, "noise_seed"),
                    _ => json!(0),
                };
                let noise = (noise_node.class_type == "RandomNoise").then(|| seed.clone());
                let (gid, _) = self.source(n, "guider");
                let g = &self.wf[&gid];
                let basic = g.class_type == "BasicGuider";
                let positive = if basic { "conditioning" } else { "positive" };
                let s = Sampling {
                    model: self.link(g, "model"),
                    loader: self.loader_of(g),
                    positive: self.conds(g, positive),
                    negative: (!basic).then(|| self.conds(g, "negative")),
                    cfg: if basic {
                        json!(1.0)
                    } else {
                        self.konst(g, "cfg")
                    },
                    sampler_name: self.sampler_name(n),
                    sigmas: self.link(n, "sigmas"),
                    noise_seed: noise,
                    seed,
                    latent: self.link(n, "latent_image"),
                    latent_node: self.source(n, "latent_image").0,
                    origins: vec![
                        ("latent".into(), id.into(), id.into(), "latent_image".into()),
                        (
                            "model".into(),
                            format!("{id}:unet"),
                            gid.clone(),
                            "model".into(),
                        ),
                        (
                            "cond".into(),
                            format!("{id}:unet"),
                            gid.clone(),
                            positive.into(),
                        ),
                    ],
                };
                self.sample(id, s, models);
            }
            "BasicScheduler" => {
                // BasicScheduler has no penultimate-sigma rule (the sampler is not known there).
                let spec = json!({ "type": "KSchedule", "inputs": {
                    "scheduler": self.konst(n, "scheduler"),
                    "steps": self.konst(n, "steps"),
                    "denoise": self.konst(n, "denoise"),
                    "config": [self.loader_of(n), "scheduler_config"],
                }});
                self.put(
                    id,
                    spec,
                    &[
                        ("scheduler", "scheduler"),
                        ("steps", "steps"),
                        ("denoise", "denoise"),
                    ],
                    id,
                );
            }
            "KarrasScheduler" | "ExponentialScheduler" => {
                let karras = n.class_type == "KarrasScheduler";
                let mut inputs = json!({
                    "scheduler": if karras { "karras" } else { "exponential" },
                    "steps": self.konst(n, "steps"),
                    "sigma_max": self.konst(n, "sigma_max"),
                    "sigma_min": self.konst(n, "sigma_min"),
                });
                if karras {
                    inputs["rho"] = self.konst(n, "rho");
                }
                self.put(
                    id,
                    json!({ "type": "KSigmas", "inputs": inputs }),
                    &[
                        ("steps", "steps"),
                        ("sigma_max", "sigma_max"),
                        ("sigma_min", "sigma_min"),
                    ],
                    id,
                );
            }
            "SplitSigmas" => {
                let spec = json!({ "type": "SplitSigmas", "inputs": {
                    "sigmas": self.link(n, "sigmas"), "step": self.konst(n, "step") }});
                self.put(id, spec, &[("sigmas", "sigmas"), ("step", "step")], id);
            }
            // Settings, folded into the sampler nodes that read them.
            "KSamplerSelect" | "RandomNoise" | "DisableNoise" | "BasicGuider" | "CFGGuider" => {}
            other => unreachable!("not a sampler node: {other}"),
        }
    }

    /// The sampler_name of the KSamplerSelect a SAMPLER link comes from.
    fn sampler_name(&self, n: &ApiNode) -> Json {
        let (sid, _) = self.source(n, "sampler");
        self.konst(&self.wf[&sid], "sampler_name")
    }

    fn schedule(&mut self, id: &str, _n: &ApiNode, spec: Json) -> Json {
        let sid = format!("{id}:sigmas");
        let renames = [
            ("scheduler", "scheduler"),
            ("steps", "steps"),
            ("denoise", "denoise"),
            ("sampler_name", "sampler_name"),
            ("start_step", "start_at_step"),
            ("last_step", "end_at_step"),
        ];
        self.put(&sid, spec, &renames, id);
        json!([sid, "sigmas"])
    }

    /// The settings of a sampler node with model, positive, negative, cfg
    /// and sampler_name inputs of its own.
    fn simple(
        &self,
        id: &str,
        n: &ApiNode,
        sigmas: Json,
        noise: Option<Json>,
        seed: Json,
    ) -> Sampling {
        let sampler_name = match n.input("sampler_name") {
            Some(_) => self.konst(n, "sampler_name"),
            None => json!(null),
        };
        let unet = format!("{id}:unet");
        Sampling {
            model: self.link(n, "model"),
            loader: self.loader_of(n),
            positive: self.conds(n, "positive"),
            negative: Some(self.conds(n, "negative")),
            cfg: self.konst(n, "cfg"),
            sampler_name,
            sigmas,
            noise_seed: noise,
            seed,
            latent: self.link(n, "latent_image"),
            latent_node: self.source(n, "latent_image").0,
            origins: vec![
                ("model".into(), unet.clone(), id.into(), "model".into()),
                ("cond".into(), unet.clone(), id.into(), "positive".into()),
                ("uncond".into(), unet, id.into(), "negative".into()),
                (
                    "latent".into(),
                    format!("{id}:start"),
                    id.into(),
                    "latent_image".into(),
                ),
            ],
        }
    }

    /// The native nodes of one sampling run under ComfyUI id `id`.
    fn sample(&mut self, id: &str, s: Sampling, models: &ModelFolders) {
        for (native, node, comfy_node, comfy_input) in &s.origins {
            self.origins.push((
                (node.clone(), native.clone()),
                (comfy_node.clone(), comfy_input.clone()),
            ));
        }
        let p = |part: &str| format!("{id}:{part}");
        let mut start = json!({ "type": "KSamplerStart", "inputs": {
            "sigmas": s.sigmas,
            "sampler_name": s.sampler_name,
            "seed": s.seed,
            "latent": s.latent,
            "prediction_type": [s.loader, "prediction_type"],
            "config": [s.loader, "scheduler_config"],
        }});
        if let Some(seed) = s.noise_seed {
            self.nodes.insert(
                p("shape"),
                json!({ "type": "TensorShape", "inputs": { "x": s.latent } }),
            );
            // prepare_noise: torch.manual_seed(seed); torch.randn(latent.shape),
            // or one draw per batch_index (LatentFromBatch) up to its max.
            let mut noise = json!({ "type": "GaussianNoise", "inputs": {
                "seed": seed, "shape": [p("shape"), "shape"], "scale": 1.0 }});
            if let Some(index) = self.batch_index(&s.latent_node) {
                noise["inputs"]["batch_index"] = index;
            }
            self.nodes.insert(p("noise"), noise);
            start["inputs"]["noise"] = json!([p("noise"), "noise"]);
        }
        // The latent's noise_mask: KSamplerX0Inpaint.
        if let Some(mask) = self.noise_mask(&s.latent_node) {
            start["inputs"]["mask"] = mask;
        }
        self.nodes.insert(p("start"), start);
        // sampling_function: no unconditional branch at cfg 1.
        let cfg1 = s
            .cfg
            .as_f64()
            .is_some_and(|c| (c - 1.0).abs() <= 1e-9 * c.abs().max(1.0));
        let sdxl = self.is_sdxl(s.loader.clone(), models);
        if sdxl {
            // ComfyUI's SDXL `encode_adm`: the pooled output each
            // CONDITIONING carries, and size = target size = the latent's
            // size x 8 (`encode_model_conds`), no crop.
            self.nodes.insert(
                p("time_ids"),
                json!({ "type": "SDXLTimeIds", "inputs": { "latent": s.latent } }),
            );
        }
        let negative = s.negative.as_deref().filter(|_| !cfg1);
        let mut body = self.evaluations(id, &s.model, sdxl, &s.positive, negative, &s.cfg);
        self.origins
            .push(((p("cfg"), "cfg".into()), (id.into(), "cfg".into())));
        self.origins.push((
            (p("start"), "sampler_name".into()),
            (id.into(), "sampler_name".into()),
        ));
        body.insert(
            p("input"),
            json!({ "type": "KModelInput", "inputs": { "state": [id, "state"] } }),
        );
        body.insert(
            p("step"),
            json!({ "type": "KSamplerStep", "inputs": {
                "state": [id, "state"], "denoised": [p("cfg"), "denoised"] } }),
        );
        let body = Json::Object(body);
        self.nodes.insert(
            id.to_string(),
            json!({
                "type": "Loop",
                "comment": "ComfyUI sampler: the denoising loop it hides, one iteration per model evaluation",
                "inputs": {
                    "over": [p("start"), "evaluations"],
                    "latent": [p("start"), "latent"],
                    "state": [p("start"), "state"],
                    "denoised": [p("start"), "latent"],
                },
                "body": body,
                "next": {
                    "latent": [p("step"), "latent"],
                    "state": [p("step"), "state"],
                    "denoised": [p("step"), "denoised"],
                },
            }),
        );
    }
}
