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
