//! The ComfyUI node types diffgraph translates, described as ComfyUI's
//! `/object_info` describes them (`server.py` `node_info`): inputs as
//! `[TYPE, {default, min, max, step}]` or `[[choices], {}]`, file inputs
//! listing the files there are now (checkpoints, configs in the model
//! folders; images in the input folder, with `image_upload`), `input_order`,
//! outputs in ComfyUI's order. The defaults are ComfyUI's (`nodes.py`).
use super::models::ModelFolders;
use super::schema::{all_specs, Spec, Ty};
use serde_json::{json, Map, Value as Json};

/// ComfyUI's default for a widget input, where it has one.
fn default(class: &str, input: &str) -> Option<Json> {
    Some(match (class, input) {
        (_, "width" | "height") if class != "LatentComposite" => json!(512),
        ("EmptyLatentImage" | "EmptyImage", "batch_size") => json!(1),
        ("KSampler", "seed") | (_, "noise_seed") => json!(0),
        ("KSampler" | "KSamplerAdvanced" | "BasicScheduler", "steps") => json!(20),
        ("KarrasScheduler" | "ExponentialScheduler", "steps") => json!(20),
        ("KSampler" | "KSamplerAdvanced" | "SamplerCustom" | "CFGGuider", "cfg") => json!(8.0),
        ("KSampler" | "BasicScheduler", "denoise") => json!(1.0),
        ("KSamplerAdvanced", "start_at_step") | ("SplitSigmas", "step") => json!(0),
        ("KSamplerAdvanced", "end_at_step") => json!(10000),
        ("SamplerCustom", "add_noise") => json!(true),
        (_, "sigma_max") => json!(14.614642),
        (_, "sigma_min") => json!(0.0291675),
        ("KarrasScheduler", "rho") => json!(7.0),
        ("CLIPSetLastLayer", "stop_at_clip_layer") => json!(-1),
        ("LatentUpscaleBy", "scale_by") => json!(1.5),
        ("ImageScaleBy", "scale_by") => json!(1.0),
        ("LatentFromBatch", "batch_index") => json!(0),
        ("LatentFromBatch", "length") | ("RepeatLatentBatch", "amount") => json!(1),
        ("EmptyImage", "color") => json!(0),
        ("LatentComposite", "x" | "y" | "feather") => json!(0),
        ("SaveImage", "filename_prefix") => json!("ComfyUI"),
        _ => return None,
    })
}

/// ComfyUI's `step` for an INT widget (8 for latent pixel sizes).
fn int_step(class: &str, input: &str) -> i64 {
    match (class, input) {
        ("EmptyLatentImage" | "LatentUpscale", "width" | "height") => 8,
        ("LatentComposite", _) => 8,
        _ => 1,
    }
}

fn input_json(spec: &Spec, name: &str, ty: &Ty, models: &ModelFolders) -> Json {
    let mut opts = Map::new();
    if let Some(d) = default(spec.class, name) {
        opts.insert("default".into(), d);
    }
    let ty = match ty {
        Ty::Link(t) => json!(t),
        Ty::Int(lo, hi) => {
            opts.insert("min".into(), json!(lo));
            opts.insert("max".into(), json!(hi));
            opts.insert("step".into(), json!(int_step(spec.class, name)));
            if name == "seed" || name == "noise_seed" {
                opts.insert("control_after_generate".into(), json!(true));
            }
            json!("INT")
        }
        Ty::Float(lo, hi) => {
            opts.insert("min".into(), json!(lo));
            opts.insert("max".into(), json!(hi));
            opts.insert("step".into(), json!(0.01));
            json!("FLOAT")
        }
        Ty::Str => {
            if name == "text" {
                opts.insert("multiline".into(), json!(true));
                opts.insert("dynamicPrompts".into(), json!(true));
            }
            json!("STRING")
        }
        Ty::Choice(list) => json!(list),
        Ty::Bool => json!("BOOLEAN"),
        Ty::Model(kind) => json!(models.list(kind)),
        Ty::Input => {
            opts.insert("image_upload".into(), json!(true));
            json!(models.list_input())
        }
    };
    if opts.is_empty() {
        json!([ty])
    } else {
        json!([ty, opts])
    }
}

/// One node type as ComfyUI's `/object_info` lists it.
pub fn node_info(spec: &Spec, models: &ModelFolders) -> Json {
    let mut required = Map::new();
    for (name, ty) in spec.inputs {
        required.insert(name.to_string(), input_json(spec, name, ty, models));
    }
    let order: Vec<&str> = spec.inputs.iter().map(|(n, _)| *n).collect();
    let category = match spec.class {
        c if super::sampler_specs::SAMPLER_SPECS
            .iter()
            .any(|s| s.class == c) =>
        {
            "sampling"
        }
        "SetLatentNoiseMask" | "VAEEncodeForInpaint" => "latent/inpaint",
        c if c.starts_with("Conditioning") => "conditioning",
        c if c.contains("Loader") => "loaders",
        c if c.contains("Mask") => "mask",
        c if c.contains("Latent") || c == "KSampler" => "latent",
        c if c.contains("CLIP") => "conditioning",
        _ => "image",
    };
    json!({
        "input": { "required": required },
        "input_order": { "required": order },
        "output": spec.outputs,
        "output_is_list": spec.outputs.iter().map(|_| false).collect::<Vec<_>>(),
        "output_name": spec.outputs,
        "name": spec.class,
        "display_name": spec.class,
        "description": "",
        "python_module": "nodes",
        "category": category,
        "output_node": spec.output_node,
    })
}

/// Every ComfyUI node type diffgraph runs, by name.
pub fn all_nodes(models: &ModelFolders) -> Map<String, Json> {
    all_specs()
        .map(|s| (s.class.to_string(), node_info(s, models)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_files_and_comfyuis_schema() {
        let input = tempfile::tempdir().unwrap();
        std::fs::write(input.path().join("b.png"), b"x").unwrap();
        std::fs::write(input.path().join("a.jpg"), b"x").unwrap();
        std::fs::write(input.path().join("notes.txt"), b"x").unwrap();
        let models = ModelFolders::default().with_input(input.path().into());
        let all = all_nodes(&models);
        let load = &all["LoadImage"];
        assert_eq!(
            load["input"]["required"]["image"][0],
            json!(["a.jpg", "b.png"])
        );
        assert_eq!(load["input"]["required"]["image"][1]["image_upload"], true);
        assert_eq!(load["output"], json!(["IMAGE", "MASK"]));
        let ckpt = &all["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0];
        assert!(ckpt.as_array().unwrap().contains(&json!("shapes-ldm")));
        let up = &all["LatentUpscale"];
        assert_eq!(
            up["input_order"]["required"],
            json!(["samples", "upscale_method", "width", "height", "crop"])
        );
        assert_eq!(up["input"]["required"]["width"][1]["step"], 8);
        assert_eq!(
            up["input"]["required"]["upscale_method"][0],
            json!(["nearest-exact", "bilinear", "area", "bicubic", "bislerp"])
        );
        assert_eq!(
            all["KSampler"]["input"]["required"]["seed"][1]["control_after_generate"],
            true
        );
    }
}
