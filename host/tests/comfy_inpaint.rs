//! What a ComfyUI LATENT carries besides its samples, and conds combined,
//! on the tiny SD fixture checkpoint (32 px images, 16 px latents: its VAE
//! downsamples 2x, EmptyLatentImage assumes 8x), checked
//! on the latents the translated workflows produce:
//! - inpainting: SetLatentNoiseMask and VAEEncodeForInpaint (LoadImage's
//!   mask from alpha) keep the unmasked latent exactly (ComfyUI's
//!   KSamplerX0Inpaint blends the source back) and change the masked part;
//!   the mask reaches the sampler through a LatentUpscale (hires-fix);
//! - LatentFromBatch's batch_index: an item sampled alone gets the noise it
//!   gets in the whole batch (prepare_noise with batch_inds);
//! - ConditioningCombine: one Euler step at cfg 1 returns the denoised
//!   prediction, so combining two prompts gives the mean of their latents
//!   (calc_cond_batch); ConditioningSetArea weights its crop as
//!   calc_cond_batch does (strength, faded edges, uncovered pixels 0).
mod common;

use common::core_support::{floats, tensor_out};
use diffgraph::comfy::ModelFolders;
use serde_json::{json, Value};

struct Env {
    models: tempfile::TempDir,
    input: tempfile::TempDir,
    out: tempfile::TempDir,
    registry: diffgraph::plugin::Registry,
    exec: diffgraph::Executor,
}

fn env() -> Env {
    let registry = common::registry_with(&[
        "diffgraph_nodes_core",
        "diffgraph_nodes_sampling",
        "diffgraph_nodes_sd",
    ]);
    let out = tempfile::tempdir().unwrap();
    let mut exec = diffgraph::Executor::new(registry.clone());
    exec.set_output_dir(out.path().to_string_lossy());
    let input = tempfile::tempdir().unwrap();
    // A 32x32 scene whose right half is transparent (LoadImage's mask: 1 there).
    let img = image::RgbaImage::from_fn(32, 32, |x, y| {
        let (r, g) = ((x * 8) as u8, (y * 8) as u8);
        image::Rgba([r, g, 160, if x >= 16 { 0 } else { 255 }])
    });
    img.save(input.path().join("scene.png")).unwrap();
    Env {
        models: common::tiny_sd1_models_folder(),
        input,
        out,
        registry,
        exec,
    }
}

/// How far the unmasked latent may move: rounding of the last Euler step.
const KEPT: f32 = 1e-5;

const CKPT: &str = "v1-5-pruned-emaonly.safetensors";

/// Loader, prompts and an image with its mask, plus `nodes`.
fn workflow(nodes: Value) -> Value {
    let mut wf = json!({
        "4": { "class_type": "CheckpointLoaderSimple", "inputs": { "ckpt_name": CKPT } },
        "6": { "class_type": "CLIPTextEncode", "inputs": { "clip": ["4", 1], "text": "a red circle" } },
        "7": { "class_type": "CLIPTextEncode", "inputs": { "clip": ["4", 1], "text": "blurry" } },
        "10": { "class_type": "LoadImage", "inputs": { "image": "scene.png" } },
        "8": { "class_type": "VAEDecode", "inputs": { "samples": ["3", 0], "vae": ["4", 2] } },
        "9": { "class_type": "SaveImage", "inputs": { "filename_prefix": "out", "images": ["8", 0] } },
    });
    for (k, v) in nodes.as_object().unwrap() {
        wf[k] = v.clone();
    }
    wf
}

fn ksampler(latent: Value, positive: Value, cfg: f64, steps: i64) -> Value {
    json!({ "class_type": "KSampler", "inputs": {
        "model": ["4", 0], "seed": 7, "steps": steps, "cfg": cfg, "sampler_name": "euler",
        "scheduler": "normal", "positive": positive, "negative": ["7", 0],
        "latent_image": latent, "denoise": 1.0 } })
}

impl Env {
    fn checked(
        &self,
        wf: &Value,
    ) -> Result<diffgraph::graph::CheckedGraph, diffgraph::graph::GraphErrors> {
        let folders =
            ModelFolders::new(&[self.models.path().into()]).with_input(self.input.path().into());
        diffgraph::parse_graph_with(&wf.to_string(), &[], &self.registry, true, &folders)
    }

    /// Runs the workflow; the tensors `targets` (native node, output).
    fn run(&mut self, wf: &Value, targets: &[(&str, &str)]) -> Vec<tch::Tensor> {
        let checked = self.checked(wf).unwrap_or_else(|e| panic!("{e}"));
        // And SaveImage "9", whose PNG `binary_run` compares.
        let ids: Vec<&str> = targets.iter().map(|(n, _)| *n).chain(["9"]).collect();
        let outcome = self
            .exec
            .run(&checked, Some(&ids), &diffgraph::Silent)
            .unwrap_or_else(|e| panic!("{e}"));
        targets
            .iter()
            .map(|(n, o)| tensor_out(&outcome, n, o))
            .collect()
    }
}

impl Env {
    /// `diffgraph run` on the workflow file; the PNG it saved.
    fn binary_run(&self, wf: &Value) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("workflow.json");
        std::fs::write(&file, wf.to_string()).unwrap();
        let out = dir.path().join("out");
        let status = std::process::Command::new(common::diffgraph_bin())
            .args(["run", file.to_str().unwrap(), "--quiet", "--threads", "1"])
            .args(["--out", out.to_str().unwrap()])
            .args(["--models", self.models.path().to_str().unwrap()])
            .env_remove("DIFFGRAPH_PLUGINS")
            .env_remove("DIFFGRAPH_MODELS")
            .env("DIFFGRAPH_INPUT", self.input.path())
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        std::fs::read(out.join("out.png")).unwrap()
    }
}

/// Columns `cols` of a [B, C, H, W] latent.
fn columns(t: &tch::Tensor, cols: std::ops::Range<i64>) -> Vec<f32> {
    floats(&t.narrow(3, cols.start, cols.end - cols.start))
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn set_latent_noise_mask_repaints_only_the_masked_half() {
    let mut e = env();
    let wf = workflow(json!({
        "11": { "class_type": "VAEEncode", "inputs": { "pixels": ["10", 0], "vae": ["4", 2] } },
        "12": { "class_type": "SetLatentNoiseMask", "inputs": { "samples": ["11", 0], "mask": ["10", 1] } },
        "3": ksampler(json!(["12", 0]), json!(["6", 0]), 3.0, 3),
    }));
    let t = e.run(&wf, &[("11", "latent"), ("3", "latent")]);
    let (source, out) = (&t[0], &t[1]);
    assert_eq!(out.size(), [1, 4, 16, 16]);
    // `diffgraph run` on the same API workflow saves the same pixels (its
    // PNG also carries the workflow).
    let pixels = |png: &[u8]| image::load_from_memory(png).unwrap().to_rgb8().into_raw();
    let png = std::fs::read(e.out.path().join("out.png")).unwrap();
    assert!(
        pixels(&e.binary_run(&wf)) == pixels(&png),
        "the binary's image differs"
    );
    // The mask (right half) resized to the latent is 0 on columns 0..8:
    // there each step's denoised prediction is the source (the last Euler
    // step to sigma 0 lands on it up to rounding).
    let kept = max_abs(&columns(out, 0..8), &columns(source, 0..8));
    assert!(kept <= KEPT, "unmasked half changed: {kept}");
    let changed = max_abs(&columns(out, 8..16), &columns(source, 8..16));
    assert!(changed > 0.1, "masked half unchanged: {changed}");
    // KSamplerAdvanced over all the steps is the KSampler, mask included.
    let mut adv = wf.clone();
    adv["3"] = json!({ "class_type": "KSamplerAdvanced", "inputs": {
        "model": ["4", 0], "add_noise": "enable", "noise_seed": 7, "steps": 3, "cfg": 3.0,
        "sampler_name": "euler", "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["12", 0], "start_at_step": 0, "end_at_step": 10000,
        "return_with_leftover_noise": "disable" } });
    assert!(e.run(&adv, &[("3", "latent")])[0].equal(out));
    // Without the mask the whole latent is repainted.
    let mut plain = wf.clone();
    plain["3"]["inputs"]["latent_image"] = json!(["11", 0]);
    let whole = &e.run(&plain, &[("3", "latent")])[0];
    assert!(max_abs(&columns(whole, 0..8), &columns(source, 0..8)) > 0.1);
    // Through a LatentUpscale (hires-fix) the mask still reaches the sampler.
    let mut hires = wf;
    hires["13"] = json!({ "class_type": "LatentUpscale", "inputs": { "samples": ["12", 0],
        "upscale_method": "nearest-exact", "width": 256, "height": 256, "crop": "disabled" } });
    hires["3"]["inputs"]["latent_image"] = json!(["13", 0]);
    let t = e.run(&hires, &[("13", "out"), ("3", "latent")]);
    assert_eq!(t[1].size(), [1, 4, 32, 32]);
    assert!(max_abs(&columns(&t[1], 0..16), &columns(&t[0], 0..16)) <= KEPT);
    assert!(max_abs(&columns(&t[1], 16..32), &columns(&t[0], 16..32)) > 0.1);
}

#[test]
fn vae_encode_for_inpaint_greys_the_mask_and_grows_it() {
    let mut e = env();
    let wf = workflow(json!({
        "11": { "class_type": "VAEEncodeForInpaint", "inputs": { "pixels": ["10", 0], "vae": ["4", 2],
            "mask": ["10", 1], "grow_mask_by": 6 } },
        "12": { "class_type": "VAEEncode", "inputs": { "pixels": ["10", 0], "vae": ["4", 2] } },
        "3": ksampler(json!(["11", 0]), json!(["6", 0]), 3.0, 3),
    }));
    let t = e.run(
        &wf,
        &[
            ("11", "latent"),
            ("11", "noise_mask"),
            ("12", "latent"),
            ("3", "latent"),
        ],
    );
    let (latent, mask, plain, out) = (&t[0], &t[1], &t[2], &t[3]);
    // grow_mask_by 6: a 6x6 box (padding 3: output column i sums input
    // columns i-3 ..= i+2) moves the edge from column 16 to 14.
    assert_eq!(mask.size(), [1, 1, 32, 32]);
    let row: Vec<f32> = floats(&mask.narrow(2, 5, 1));
    let first = row.iter().position(|v| *v == 1.0);
    assert_eq!(first, Some(14), "{row:?}");
    assert!(row[14..].iter().all(|v| *v == 1.0));
    // The masked pixels were grey: the encoding differs from VAEEncode's there.
    assert!(max_abs(&columns(latent, 10..16), &columns(plain, 10..16)) > 0.05);
    // Latent column j averages pixel columns 2j and 2j + 1: 0..7 are kept.
    assert!(max_abs(&columns(out, 0..7), &columns(latent, 0..7)) <= KEPT);
    assert!(max_abs(&columns(out, 8..16), &columns(latent, 8..16)) > 0.1);
}

#[test]
fn latent_from_batch_samples_an_item_with_its_batch_noise() {
    let mut e = env();
    let whole = workflow(json!({
        "5": { "class_type": "EmptyLatentImage", "inputs": { "width": 32, "height": 32, "batch_size": 3 } },
        "3": ksampler(json!(["5", 0]), json!(["6", 0]), 3.0, 2),
    }));
    let all = &e.run(&whole, &[("3", "latent")])[0];
    assert_eq!(all.size(), [3, 4, 4, 4]);
    for index in [1, 2] {
        let mut one = whole.clone();
        one["13"] = json!({ "class_type": "LatentFromBatch", "inputs": { "samples": ["5", 0],
            "batch_index": index, "length": 1 } });
        one["3"]["inputs"]["latent_image"] = json!(["13", 0]);
        let item = &e.run(&one, &[("3", "latent")])[0];
        let d = max_abs(&floats(item), &floats(&all.narrow(0, index, 1)));
        assert!(d <= 1e-4, "item {index}: {d}");
    }
    // Without the batch_index it would be item 0's noise.
    let d = max_abs(&floats(&all.narrow(0, 0, 1)), &floats(&all.narrow(0, 1, 1)));
    assert!(d > 0.1, "{d}");
    // A batch_index sliced again is refused, naming the node.
    let mut twice = whole;
    twice["13"] = json!({ "class_type": "LatentFromBatch", "inputs": { "samples": ["5", 0],
        "batch_index": 1, "length": 2 } });
    twice["14"] = json!({ "class_type": "RepeatLatentBatch", "inputs": { "samples": ["13", 0], "amount": 2 } });
    twice["3"]["inputs"]["latent_image"] = json!(["14", 0]);
    let err = e.checked(&twice).err().expect("refused");
    assert_eq!(err.0[0].node.as_deref(), Some("14"), "{err}");
    assert!(err.0[0].message.contains("batch_index"), "{err}");
}

#[test]
fn conditioning_combine_averages_the_conds_predictions() {
    let mut e = env();
    // One Euler step at cfg 1 ends at sigma 0: the latent is the denoised
    // prediction, so two conds give the mean of each alone.
    let run = |e: &mut Env, positive: Value| {
        let wf = workflow(json!({
            "5": { "class_type": "EmptyLatentImage", "inputs": { "width": 32, "height": 32, "batch_size": 1 } },
            "20": { "class_type": "CLIPTextEncode", "inputs": { "clip": ["4", 1], "text": "a blue square" } },
            "21": { "class_type": "ConditioningCombine", "inputs": {
                "conditioning_1": ["6", 0], "conditioning_2": ["20", 0] } },
            "22": { "class_type": "ConditioningCombine", "inputs": {
                "conditioning_1": ["6", 0], "conditioning_2": ["6", 0] } },
            "3": ksampler(json!(["5", 0]), positive, 1.0, 1),
        }));
        floats(&e.run(&wf, &[("3", "latent")])[0])
    };
    let a = run(&mut e, json!(["6", 0]));
    let b = run(&mut e, json!(["20", 0]));
    let ab = run(&mut e, json!(["21", 0]));
    let aa = run(&mut e, json!(["22", 0]));
    assert_eq!(aa, a, "a cond combined with itself is that cond");
    let mean: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect();
    let d = max_abs(&ab, &mean);
    eprintln!("combined vs mean of each alone: max abs {d:e}");
    assert!(d <= 1e-4, "combined vs mean: {d}");
    assert!(max_abs(&a, &b) > 0.01, "the prompts differ");
    // With cfg the combined conds are guided against the negative.
    let mut wf = workflow(json!({
        "5": { "class_type": "EmptyLatentImage", "inputs": { "width": 32, "height": 32, "batch_size": 1 } },
        "20": { "class_type": "CLIPTextEncode", "inputs": { "clip": ["4", 1], "text": "a blue square" } },
        "21": { "class_type": "ConditioningCombine", "inputs": {
            "conditioning_1": ["6", 0], "conditioning_2": ["20", 0] } },
        "3": ksampler(json!(["5", 0]), json!(["21", 0]), 3.0, 2),
    }));
    assert_eq!(e.run(&wf, &[("3", "latent")])[0].size(), [1, 4, 4, 4]);
    // Percentage areas are refused, naming the node and why.
    wf["23"] = json!({ "class_type": "ConditioningSetAreaPercentage", "inputs": { "conditioning": ["20", 0],
        "width": 0.5, "height": 1.0, "x": 0, "y": 0, "strength": 1.0 } });
    wf["21"]["inputs"]["conditioning_2"] = json!(["23", 0]);
    let err = e.checked(&wf).err().expect("refused");
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].node.as_deref(), Some("23"), "{err}");
    assert!(err.0[0].message.contains("not implemented"), "{err}");
}

/// ConditioningSetArea: one Euler step at cfg 1 returns calc_cond_batch's
/// combined denoised prediction. A 16x16 latent, prompt B on the left half
/// (area [16, 8, 0, 0]: its last two columns fade, rr = 8 // 4 = 2, weights
/// 1/2 on column 7), prompt A everywhere.
#[test]
fn conditioning_set_area_weights_the_crop_as_calc_cond_batch() {
    let mut e = env();
    let run = |e: &mut Env, positive: Value, strength: f64| {
        let wf = workflow(json!({
            "5": { "class_type": "EmptyLatentImage", "inputs": { "width": 128, "height": 128, "batch_size": 1 } },
            "20": { "class_type": "CLIPTextEncode", "inputs": { "clip": ["4", 1], "text": "a blue square" } },
            "23": { "class_type": "ConditioningSetArea", "inputs": { "conditioning": ["20", 0],
                "width": 64, "height": 128, "x": 0, "y": 0, "strength": strength } },
            "21": { "class_type": "ConditioningCombine", "inputs": {
                "conditioning_1": ["6", 0], "conditioning_2": ["23", 0] } },
            "3": ksampler(json!(["5", 0]), positive, 1.0, 1),
        }));
        e.run(&wf, &[("3", "latent")]).remove(0)
    };
    let a = run(&mut e, json!(["6", 0]), 1.0);
    let b = run(&mut e, json!(["23", 0]), 1.0);
    let ab = run(&mut e, json!(["21", 0]), 1.0);
    assert_eq!(ab.size(), [1, 4, 16, 16]);
    // B alone covers the left half; no cond covers the right: 0 / 1e-37.
    let zero = vec![0f32; 4 * 16 * 8];
    let uncovered = max_abs(&columns(&b, 8..16), &zero);
    assert!(uncovered <= 1e-4, "{uncovered}");
    assert!(max_abs(&columns(&b, 0..8), &zero[..4 * 16 * 8]) > 0.1);
    // Right half: A alone; columns 0..7: (A + B) / 2; column 7: (A + B / 2) / 1.5.
    let d = max_abs(&columns(&ab, 8..16), &columns(&a, 8..16));
    assert!(d <= 1e-4, "outside the area: {d}");
    let mean = |w: f32, cols: std::ops::Range<i64>| -> Vec<f32> {
        let (a, b) = (columns(&a, cols.clone()), columns(&b, cols));
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x + w * y) / (1.0 + w))
            .collect()
    };
    let inside = max_abs(&columns(&ab, 0..7), &mean(1.0, 0..7));
    let fade = max_abs(&columns(&ab, 7..8), &mean(0.5, 7..8));
    eprintln!("area: inside max abs {inside:e}, faded column {fade:e}, outside {d:e}");
    assert!(inside <= 1e-4 && fade <= 1e-4, "{inside} {fade}");
    assert!(max_abs(&columns(&ab, 0..7), &columns(&a, 0..7)) > 0.01);
    // Strength 3: B weighs 3 inside the area.
    let ab3 = run(&mut e, json!(["21", 0]), 3.0);
    let inside3 = max_abs(&columns(&ab3, 0..7), &mean(3.0, 0..7));
    assert!(inside3 <= 1e-4, "strength 3: {inside3}");
}
