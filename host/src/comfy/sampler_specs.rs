//! The schemas of ComfyUI's sampler nodes (`nodes.py` KSampler,
//! KSamplerAdvanced; `comfy_extras/nodes_custom_sampler.py` the custom
//! sampling family), with ComfyUI's sampler and scheduler lists
//! (`comfy/samplers.py` `SAMPLER_NAMES`, `SCHEDULER_NAMES`). Which of the
//! samplers diffgraph runs: `diffgraph_diffusion::comfy::names`.
use super::schema::{Spec, Ty};
use diffgraph_diffusion::comfy::names::{COMFY_SAMPLER_NAMES, SAMPLERS};
use diffgraph_diffusion::comfy::SCHEDULER_NAMES;

/// ComfyUI's seeds go to 2^64 - 1; libtorch's `manual_seed` here takes an i64.
const MAX_SEED: i64 = i64::MAX;
const SAMPLER: Ty = Ty::Choice(COMFY_SAMPLER_NAMES);
const SCHEDULER: Ty = Ty::Choice(SCHEDULER_NAMES);
const ENABLE: Ty = Ty::Choice(&["enable", "disable"]);

/// The sampler_names diffgraph runs (the rest of ComfyUI's list is refused
/// by name at validation).
pub fn implemented(sampler: &str) -> bool {
    SAMPLERS.contains(&sampler)
}

pub const SAMPLER_SPECS: &[Spec] = &[
    Spec {
        class: "KSampler",
        inputs: &[
            ("model", Ty::Link("MODEL")),
            ("seed", Ty::Int(0, MAX_SEED)),
            ("steps", Ty::Int(1, 10000)),
            ("cfg", Ty::Float(0.0, 100.0)),
            ("sampler_name", SAMPLER),
            ("scheduler", SCHEDULER),
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
        class: "KSamplerAdvanced",
        inputs: &[
            ("model", Ty::Link("MODEL")),
            ("add_noise", ENABLE),
            ("noise_seed", Ty::Int(0, MAX_SEED)),
            ("steps", Ty::Int(1, 10000)),
            ("cfg", Ty::Float(0.0, 100.0)),
            ("sampler_name", SAMPLER),
            ("scheduler", SCHEDULER),
            ("positive", Ty::Link("CONDITIONING")),
            ("negative", Ty::Link("CONDITIONING")),
            ("latent_image", Ty::Link("LATENT")),
            ("start_at_step", Ty::Int(0, 10000)),
            ("end_at_step", Ty::Int(0, 10000)),
            ("return_with_leftover_noise", ENABLE),
        ],
        outputs: &["LATENT"],
        output_node: false,
    },
    Spec {
        class: "SamplerCustom",
        inputs: &[
            ("model", Ty::Link("MODEL")),
            ("add_noise", Ty::Bool),
            ("noise_seed", Ty::Int(0, MAX_SEED)),
            ("cfg", Ty::Float(0.0, 100.0)),
            ("positive", Ty::Link("CONDITIONING")),
            ("negative", Ty::Link("CONDITIONING")),
            ("sampler", Ty::Link("SAMPLER")),
            ("sigmas", Ty::Link("SIGMAS")),
            ("latent_image", Ty::Link("LATENT")),
        ],
        outputs: &["LATENT", "LATENT"],
        output_node: false,
    },
    Spec {
        class: "SamplerCustomAdvanced",
        inputs: &[
            ("noise", Ty::Link("NOISE")),
            ("guider", Ty::Link("GUIDER")),
            ("sampler", Ty::Link("SAMPLER")),
            ("sigmas", Ty::Link("SIGMAS")),
            ("latent_image", Ty::Link("LATENT")),
        ],
        outputs: &["LATENT", "LATENT"],
        output_node: false,
    },
    Spec {
        class: "KSamplerSelect",
        inputs: &[("sampler_name", SAMPLER)],
        outputs: &["SAMPLER"],
        output_node: false,
    },
    Spec {
        class: "BasicScheduler",
        inputs: &[
            ("model", Ty::Link("MODEL")),
            ("scheduler", SCHEDULER),
            ("steps", Ty::Int(1, 10000)),
            ("denoise", Ty::Float(0.0, 1.0)),
        ],
        outputs: &["SIGMAS"],
        output_node: false,
    },
    Spec {
        class: "KarrasScheduler",
        inputs: &[
            ("steps", Ty::Int(1, 10000)),
            ("sigma_max", Ty::Float(0.0, 5000.0)),
            ("sigma_min", Ty::Float(0.0, 5000.0)),
            ("rho", Ty::Float(0.0, 100.0)),
        ],
        outputs: &["SIGMAS"],
        output_node: false,
    },
    Spec {
        class: "ExponentialScheduler",
        inputs: &[
            ("steps", Ty::Int(1, 10000)),
            ("sigma_max", Ty::Float(0.0, 5000.0)),
            ("sigma_min", Ty::Float(0.0, 5000.0)),
        ],
        outputs: &["SIGMAS"],
        output_node: false,
    },
    Spec {
        class: "SplitSigmas",
        inputs: &[("sigmas", Ty::Link("SIGMAS")), ("step", Ty::Int(0, 10000))],
        outputs: &["SIGMAS", "SIGMAS"],
        output_node: false,
    },
    Spec {
        class: "RandomNoise",
        inputs: &[("noise_seed", Ty::Int(0, MAX_SEED))],
        outputs: &["NOISE"],
        output_node: false,
    },
    Spec {
        class: "DisableNoise",
        inputs: &[],
        outputs: &["NOISE"],
        output_node: false,
    },
    Spec {
        class: "BasicGuider",
        inputs: &[
            ("model", Ty::Link("MODEL")),
            ("conditioning", Ty::Link("CONDITIONING")),
        ],
        outputs: &["GUIDER"],
        output_node: false,
    },
    Spec {
        class: "CFGGuider",
        inputs: &[
            ("model", Ty::Link("MODEL")),
            ("positive", Ty::Link("CONDITIONING")),
            ("negative", Ty::Link("CONDITIONING")),
            ("cfg", Ty::Float(0.0, 100.0)),
        ],
        outputs: &["GUIDER"],
        output_node: false,
    },
];
