//! ComfyUI workflows with image, mask and latent nodes (`diffgraph::comfy::
//! image_nodes`): img2img (LoadImage -> VAEEncode -> KSampler denoise < 1),
//! hires-fix (KSampler -> LatentUpscale -> KSampler), masks from files,
//! and a UI workflow with a subgraph; each checks what the image shows.
//! The pixel math itself is parity-tested against ComfyUI in
//! diffgraph-nodes-core (`parity_tests`).
mod common;

use common::shapes::analyse;
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a workflow with `input` as ComfyUI's input folder; the output folder.
fn run(workflow: &Json, input: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workflow.json");
    std::fs::write(&file, workflow.to_string()).unwrap();
    let out = dir.path().join("out");
    let status = Command::new(common::diffgraph_bin())
        .args(["run", file.to_str().unwrap(), "--quiet", "--threads", "1"])
        .args(["--out", out.to_str().unwrap()])
        .current_dir(repo())
        .env_remove("DIFFGRAPH_PLUGINS")
        .env_remove("DIFFGRAPH_MODELS")
        .env("DIFFGRAPH_INPUT", input)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    dir
}

fn image(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join("out").join(name)
}

/// A 64x64 scene of the demo model's world: a large square of `rgb` in the
/// top left on a blue background.
fn scene(folder: &Path, rgb: [u8; 3]) {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        if (4..28).contains(&x) && (4..28).contains(&y) {
            image::Rgb(rgb)
        } else {
            image::Rgb([38, 77, 242])
        }
    });
    img.save(folder.join("scene.png")).unwrap();
}

/// The demo model's text encoder, loader and sampler, around `latent`.
fn sampler_workflow(latent: Json, denoise: f64, extra: Json) -> Json {
    let mut wf = json!({
        "4": { "class_type": "CheckpointLoaderSimple", "inputs": { "ckpt_name": "shapes-ldm" } },
        "6": { "class_type": "CLIPTextEncode", "inputs": { "clip": ["4", 1],
            "text": "a large red circle in the center on a white background" } },
        "7": { "class_type": "CLIPTextEncode", "inputs": { "clip": ["4", 1], "text": "" } },
        "3": { "class_type": "KSampler", "inputs": { "model": ["4", 0], "seed": 3, "steps": 12,
            "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": latent, "denoise": denoise } },
        "8": { "class_type": "VAEDecode", "inputs": { "samples": ["3", 0], "vae": ["4", 2] } },
        "9": { "class_type": "SaveImage", "inputs": { "images": ["8", 0], "filename_prefix": "out" } },
    });
    for (k, v) in extra.as_object().unwrap() {
        wf[k] = v.clone();
    }
    wf
}

#[test]
fn img2img_keeps_the_input_image_at_low_denoise() {
    let input = tempfile::tempdir().unwrap();
    scene(input.path(), [31, 191, 38]);
    let load = json!({
        "10": { "class_type": "LoadImage", "inputs": { "image": "scene.png" } },
        "11": { "class_type": "VAEEncode", "inputs": { "pixels": ["10", 0], "vae": ["4", 2] } },
    });
    // denoise 0.35: the image's green square on blue stays where it is,
    // whatever the prompt says.
    let low = run(
        &sampler_workflow(json!(["11", 0]), 0.35, load.clone()),
        input.path(),
    );
    let (colour, background, position) = analyse(&image(&low, "out.png"));
    assert_eq!(
        (colour.as_str(), background.as_str(), position.as_str()),
        ("green", "blue", "top left")
    );
    // Full denoise from the same latent: the prompt wins.
    let full = run(&sampler_workflow(json!(["11", 0]), 1.0, load), input.path());
    let (colour, background, _) = analyse(&image(&full, "out.png"));
    assert_eq!((colour.as_str(), background.as_str()), ("red", "white"));
}

/// ComfyUI's sizes are for a VAE that downsamples 8x; the demo model's
/// downsamples 4x, so a 64-pixel EmptyLatentImage decodes to 32 pixels and
/// the 128-pixel upscale to the model's native 64.
#[test]
fn hires_fix_upscales_the_latent_between_two_samplers() {
    let input = tempfile::tempdir().unwrap();
    let second = json!({
        "5": { "class_type": "EmptyLatentImage", "inputs": { "width": 64, "height": 64, "batch_size": 1 } },
        "12": { "class_type": "LatentUpscale", "inputs": { "samples": ["3", 0],
            "upscale_method": "bislerp", "width": 128, "height": 128, "crop": "disabled" } },
        "13": { "class_type": "KSampler", "inputs": { "model": ["4", 0], "seed": 4, "steps": 10,
            "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["12", 0], "denoise": 0.6 } },
        "14": { "class_type": "VAEDecode", "inputs": { "samples": ["13", 0], "vae": ["4", 2] } },
        "15": { "class_type": "SaveImage", "inputs": { "images": ["14", 0], "filename_prefix": "hires" } },
    });
    let dir = run(
        &sampler_workflow(json!(["5", 0]), 1.0, second),
        input.path(),
    );
    let low = image::open(image(&dir, "out.png")).unwrap();
    let high = image(&dir, "hires.png");
    assert_eq!((low.width(), low.height()), (32, 32));
    assert_eq!(image::open(&high).unwrap().to_rgb8().dimensions(), (64, 64));
    let (colour, background, position) = analyse(&high);
    assert_eq!(
        (colour.as_str(), background.as_str(), position.as_str()),
        ("red", "white", "center")
    );
    // The second pass refines the first: halved again, it is close to it.
    let small = image::imageops::resize(
        &image::open(&high).unwrap().to_rgb8(),
        32,
        32,
        image::imageops::FilterType::Triangle,
    );
    let low = low.to_rgb8();
    let diff = small
        .as_raw()
        .iter()
        .zip(low.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / low.as_raw().len() as f64;
    eprintln!("hires vs first pass: mean abs {diff:.1} / 255");
    assert!(diff < 40.0, "mean abs {diff}");
}

/// The RGBA fixture image's alpha channel, as saved PNG bytes would hold it.
fn alpha(name: &str) -> (u32, u32, Vec<u8>) {
    let img = image::open(repo().join("tests/fixtures/comfy/images").join(name))
        .unwrap()
        .to_rgba8();
    let (w, h) = img.dimensions();
    (w, h, img.pixels().map(|p| p.0[3]).collect())
}

fn gray(png: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(png).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    assert!(img.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
    (w, h, img.pixels().map(|p| p.0[0]).collect())
}

#[test]
fn masks_load_as_comfyui_shapes_them() {
    let input = repo().join("tests/fixtures/comfy/images");
    let save = |id: &str, from: Json, prefix: &str| {
        json!({ format!("{id}i"): { "class_type": "MaskToImage", "inputs": { "mask": from } },
                format!("{id}s"): { "class_type": "SaveImage", "inputs": {
                    "images": [format!("{id}i"), 0], "filename_prefix": prefix } } })
    };
    let mut wf = json!({
        "1": { "class_type": "LoadImageMask", "inputs": { "image": "rgba.png", "channel": "alpha" } },
        "2": { "class_type": "LoadImage", "inputs": { "image": "rgba.png [input]" } },
        "3": { "class_type": "InvertMask", "inputs": { "mask": ["2", 1] } },
        "4": { "class_type": "LoadImageMask", "inputs": { "image": "rgb.png", "channel": "alpha" } },
        "5": { "class_type": "LoadImage", "inputs": { "image": "rgb.png" } },
    });
    for (id, from, prefix) in [
        ("a", json!(["1", 0]), "mask_alpha"),
        ("b", json!(["3", 0]), "inverted_image_mask"),
        ("c", json!(["4", 0]), "opaque_alpha"),
        ("d", json!(["5", 1]), "no_alpha"),
    ] {
        for (k, v) in save(id, from, prefix).as_object().unwrap() {
            wf[k] = v.clone();
        }
    }
    let dir = run(&wf, &input);
    let (w, h, a) = alpha("rgba.png");
    // LoadImageMask alpha: 1 - alpha, so the saved mask is 255 - alpha.
    let inverted: Vec<u8> = a.iter().map(|v| 255 - v).collect();
    assert_eq!(gray(&image(&dir, "mask_alpha.png")), (w, h, inverted));
    // LoadImage's mask is 1 - alpha too: inverted back, it is alpha.
    assert_eq!(gray(&image(&dir, "inverted_image_mask.png")), (w, h, a));
    // No alpha: LoadImageMask takes the image as opaque RGBA (mask 0 at
    // the image's size), LoadImage gives ComfyUI's 64x64 zeros.
    assert_eq!(
        gray(&image(&dir, "opaque_alpha.png")),
        (w, h, vec![0; (w * h) as usize])
    );
    assert_eq!(
        gray(&image(&dir, "no_alpha.png")),
        (64, 64, vec![0; 64 * 64])
    );
}

#[test]
fn a_missing_input_image_is_a_validation_error_naming_it() {
    let input = tempfile::tempdir().unwrap();
    let wf = json!({
        "1": { "class_type": "LoadImage", "inputs": { "image": "nothere.png" } },
        "2": { "class_type": "PreviewImage", "inputs": { "images": ["1", 0] } },
    });
    let file = input.path().join("wf.json");
    std::fs::write(&file, wf.to_string()).unwrap();
    let out = Command::new(common::diffgraph_bin())
        .args(["validate", file.to_str().unwrap()])
        .current_dir(repo())
        .env("DIFFGRAPH_INPUT", input.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothere.png") && err.contains("`1`"), "{err}");
    assert!(err.contains(&input.path().display().to_string()), "{err}");
}

/// A models folder with the tiny SD 1 fixture as the default workflow's
/// checkpoint (its diffusers folder as the sidecar config).
fn tiny_models() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = dir.path().join("checkpoints");
    std::fs::create_dir_all(&ckpts).unwrap();
    let fixtures = repo().join("tests/fixtures/sd");
    let name = ckpts.join("v1-5-pruned-emaonly");
    std::os::unix::fs::symlink(
        fixtures.join("sd1-tiny.safetensors"),
        name.with_extension("safetensors"),
    )
    .unwrap();
    std::os::unix::fs::symlink(fixtures.join("sd1-tiny"), &name).unwrap();
    dir
}

/// The default UI workflow with KSampler and VAEDecode moved into a
/// subgraph (instance 10), VAEDecode itself in a nested one (instance 8
/// inside it), and the seed promoted to a widget of the instance.
fn subgraph_workflow() -> Json {
    let mut wf: Json = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/comfy/default-ui-workflow.json"))
            .unwrap(),
    )
    .unwrap();
    let nodes = wf["nodes"].as_array().unwrap().clone();
    let find = |id: i64| nodes.iter().find(|n| n["id"] == id).unwrap().clone();
    let mut ksampler = find(3);
    ksampler["widgets_values"][2] = json!(2); // steps
    for (i, link) in [101, 102, 103, 104].into_iter().enumerate() {
        ksampler["inputs"][i]["link"] = json!(link);
    }
    ksampler["inputs"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "seed", "type": "INT", "widget": { "name": "seed" }, "link": 106 }));
    let mut decode = find(8);
    decode["inputs"][0]["link"] = json!(1);
    decode["inputs"][1]["link"] = json!(2);
    decode["id"] = json!(1);
    let link = |id: i64, o: i64, os: i64, t: i64, ts: i64, ty: &str| json!({ "id": id, "origin_id": o, "origin_slot": os, "target_id": t, "target_slot": ts, "type": ty });
    let dec_instance = json!({ "id": 8, "type": "dec-0000", "mode": 0,
        "inputs": [ { "name": "samples", "type": "LATENT", "link": 107 }, { "name": "vae", "type": "VAE", "link": 105 } ],
        "outputs": [ { "name": "IMAGE", "type": "IMAGE", "links": [108] } ] });
    let dec = json!({ "id": "dec-0000", "name": "decode", "nodes": [decode],
        "links": [ link(1, -10, 0, 1, 0, "LATENT"), link(2, -10, 1, 1, 1, "VAE"), link(3, 1, 0, -20, 0, "IMAGE") ],
        "inputs": [ { "name": "samples", "type": "LATENT" }, { "name": "vae", "type": "VAE" } ],
        "outputs": [ { "name": "IMAGE", "type": "IMAGE" } ] });
    let sub = json!({ "id": "sub-0000", "name": "sample and decode",
        "nodes": [ksampler, dec_instance],
        "links": [ link(101, -10, 0, 3, 0, "MODEL"), link(102, -10, 1, 3, 1, "CONDITIONING"),
            link(103, -10, 2, 3, 2, "CONDITIONING"), link(104, -10, 3, 3, 3, "LATENT"),
            link(105, -10, 4, 8, 1, "VAE"), link(106, -10, 5, 3, 4, "INT"),
            link(107, 3, 0, 8, 0, "LATENT"), link(108, 8, 0, -20, 0, "IMAGE") ],
        "inputs": [], "outputs": [] });
    let instance = json!({ "id": 10, "type": "sub-0000", "mode": 0,
        "inputs": [ { "name": "model", "type": "MODEL", "link": 1 },
            { "name": "positive", "type": "CONDITIONING", "link": 4 },
            { "name": "negative", "type": "CONDITIONING", "link": 6 },
            { "name": "latent_image", "type": "LATENT", "link": 2 },
            { "name": "vae", "type": "VAE", "link": 8 },
            { "name": "seed", "type": "INT", "widget": { "name": "seed" }, "link": null } ],
        "outputs": [ { "name": "IMAGE", "type": "IMAGE", "links": [9] } ],
        "widgets_values": [7] });
    let mut top: Vec<Json> = nodes
        .into_iter()
        .filter(|n| n["id"] != 3 && n["id"] != 8)
        .collect();
    top.push(instance);
    wf["nodes"] = json!(top);
    wf["links"] = json!([
        [1, 4, 0, 10, 0, "MODEL"],
        [2, 5, 0, 10, 3, "LATENT"],
        [3, 4, 1, 6, 0, "CLIP"],
        [4, 6, 0, 10, 1, "CONDITIONING"],
        [5, 4, 1, 7, 0, "CLIP"],
        [6, 7, 0, 10, 2, "CONDITIONING"],
        [8, 4, 2, 10, 4, "VAE"],
        [9, 10, 0, 9, 0, "IMAGE"]
    ]);
    wf["definitions"] = json!({ "subgraphs": [sub, dec] });
    wf
}

/// Subgraphs expand as the frontend's ExecutableNodeDTO: inner nodes under
/// `INSTANCE:INNER` ids, links through the input and output nodes, promoted
/// widget values; the image is the flat workflow's, byte for byte.
#[test]
fn a_subgraph_workflow_gives_the_flat_workflows_image() {
    let models = tiny_models();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("subgraph.json");
    std::fs::write(&file, subgraph_workflow().to_string()).unwrap();
    let diffgraph = |args: &[&str]| {
        let out = Command::new(common::diffgraph_bin())
            .args(args)
            .args(["--models", models.path().to_str().unwrap()])
            .current_dir(repo())
            .env_remove("DIFFGRAPH_PLUGINS")
            .env_remove("DIFFGRAPH_MODELS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let native = diffgraph(&["convert", file.to_str().unwrap()]);
    assert!(
        native.contains("\"10:3\"") && native.contains("\"10:8:1\""),
        "{native}"
    );
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let common = [
        "--quiet",
        "--threads",
        "1",
        "--out",
        out,
        "--set",
        "5.width=32",
        "--set",
        "5.height=32",
    ];
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "--set",
        "9.filename_prefix=sub",
    ];
    args.extend(common);
    diffgraph(&args);
    let mut args = vec!["run", "tests/fixtures/comfy/default-api-workflow.json"];
    args.extend([
        "--set",
        "9.filename_prefix=flat",
        "--set",
        "3.seed=7",
        "--set",
        "3.steps=2",
    ]);
    args.extend(common);
    diffgraph(&args);
    let read = |p: &str| std::fs::read(Path::new(out).join(p)).unwrap();
    assert!(read("sub.png") == read("flat.png"));
}

/// CheckpointLoader's `config_name` (a diffusers folder in `configs/`) and a
/// checkpoint's `NAME.json` sidecar give the checkpoint what its shapes
/// cannot tell: both give the image of the sidecar-folder checkpoint.
#[test]
fn checkpoint_configs_from_config_name_and_sidecar_json() {
    let models = tiny_models();
    let fixtures = repo().join("tests/fixtures/sd");
    let root = models.path();
    std::fs::create_dir_all(root.join("configs")).unwrap();
    std::os::unix::fs::symlink(fixtures.join("sd1-tiny"), root.join("configs/sd1-tiny")).unwrap();
    for name in ["plain", "withjson"] {
        std::os::unix::fs::symlink(
            fixtures.join("sd1-tiny.safetensors"),
            root.join(format!("checkpoints/{name}.safetensors")),
        )
        .unwrap();
    }
    let json_config = json!({ "config": fixtures.join("sd1-tiny") });
    std::fs::write(
        root.join("checkpoints/withjson.json"),
        json_config.to_string(),
    )
    .unwrap();
    let api: Json = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/comfy/default-api-workflow.json"))
            .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let loaders = [
        (
            "folder",
            json!({ "class_type": "CheckpointLoaderSimple",
            "inputs": { "ckpt_name": "v1-5-pruned-emaonly.safetensors" } }),
        ),
        (
            "config_name",
            json!({ "class_type": "CheckpointLoader",
            "inputs": { "config_name": "sd1-tiny", "ckpt_name": "plain.safetensors" } }),
        ),
        (
            "json",
            json!({ "class_type": "CheckpointLoaderSimple",
            "inputs": { "ckpt_name": "withjson.safetensors" } }),
        ),
    ];
    for (prefix, loader) in loaders {
        let mut wf = api.clone();
        wf["4"] = loader;
        wf["3"]["inputs"]["steps"] = json!(2);
        wf["5"]["inputs"]["width"] = json!(32);
        wf["5"]["inputs"]["height"] = json!(32);
        wf["9"]["inputs"]["filename_prefix"] = json!(prefix);
        let file = dir.path().join(format!("{prefix}.json"));
        std::fs::write(&file, wf.to_string()).unwrap();
        let o = Command::new(common::diffgraph_bin())
            .args(["run", file.to_str().unwrap(), "--quiet", "--threads", "1"])
            .args([
                "--models",
                root.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .current_dir(repo())
            .env_remove("DIFFGRAPH_PLUGINS")
            .env_remove("DIFFGRAPH_MODELS")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{prefix}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let read = |p: &str| image::open(out.join(p)).unwrap().to_rgb8().into_raw();
    assert!(read("folder.png") == read("config_name.png"));
    assert!(read("folder.png") == read("json.png"));
}
