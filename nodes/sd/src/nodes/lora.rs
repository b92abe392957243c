//! LoRA loader nodes: ComfyUI's `LoraLoader` (MODEL and CLIP, a strength
//! each) and `LoraLoaderModelOnly` (nodes.py), as `LoadLora` and
//! `LoadLoraModelOnly`. Each returns new handles on the same weights with
//! the file added to their patch lists; chaining loaders stacks LoRAs. The
//! weights are patched when a handle computes ([`crate::lora::patch`]), so
//! the input handles stay usable unpatched.
use super::component::Component;
use super::loader::{Clip, CLIP};
use crate::family::sdxl::text::SdxlText;
use crate::family::{Model, MODEL};
use crate::lora::{self, short_list, KeyIndex};
use diffgraph_sdk::prelude::*;
use std::path::Path;

const STRENGTH_RANGE: (f64, f64) = (-100.0, 100.0);

fn strength(name: &str) -> InputSpec {
    InputSpec::float(name)
        .default(1.0)
        .range(STRENGTH_RANGE.0, STRENGTH_RANGE.1)
}

/// What the file held that nothing took, for the `report` output (and
/// stderr, so a run shows it).
fn report(path: &str, unmatched: &[String], applied: &[(&str, usize)]) -> String {
    let parts: Vec<String> = applied
        .iter()
        .map(|(part, n)| format!("{n} {part} weights"))
        .collect();
    let mut text = format!("{path}: patches {}", parts.join(", "));
    if !unmatched.is_empty() {
        text.push_str(&format!(
            "; {} keys not applied: {}",
            unmatched.len(),
            short_list(unmatched)
        ));
        eprintln!("warning: LoRA {text}");
    }
    text
}

fn lora_model<'a>(
    inputs: &Inputs<'a>,
) -> Result<(&'a Model, &'a dyn crate::family::LoraDenoiser), NodeError> {
    let model: &Model = inputs.object("model")?;
    let lora = model.denoiser.lora().ok_or_else(|| {
        NodeError::new(format!(
            "input `model`: the {} takes no LoRA files",
            model.denoiser.family()
        ))
    })?;
    Ok((model, lora))
}

pub struct LoadLora;

impl Node for LoadLora {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadLora", "loaders")
            .description(
                "Applies a LoRA file (kohya/A1111 `lora_unet_`/`lora_te_` (SDXL: `lora_te1_`/`lora_te2_`, the \
                 U-Net by diffusers or original `input_blocks` paths) with `.alpha`, diffusers/PEFT \
                 `lora_A`/`lora_B`, LoCon conv LoRA, LoHa) to the U-Net at strength_model and to the text \
                 encoder(s) at strength_clip: W + strength·(alpha/rank)·up·down, as ComfyUI's LoraLoader. Chain \
                 loaders to stack LoRAs; the inputs stay unpatched. Keys that match nothing are reported \
                 (the `report` output and a warning); a file matching nothing is an error.",
            )
            .input(InputSpec::new("model", PortType::object(MODEL)))
            .input(InputSpec::new("clip", PortType::object(CLIP)))
            .input(InputSpec::string("path").file().doc("a LoRA .safetensors file"))
            .input(strength("strength_model"))
            .input(strength("strength_clip"))
            .output(OutputSpec::new("model", PortType::object(MODEL)))
            .output(OutputSpec::new("clip", PortType::object(CLIP)))
            .output(OutputSpec::new("report", PortType::String).doc("what was patched, what was not"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        if let Ok(xl) = inputs.object::<Component<SdxlText>>("clip") {
            return load_sdxl(inputs, &*xl.lock()?);
        }
        let (_, unet) = lora_model(inputs)?;
        let clip = inputs.object::<Component<Clip>>("clip")?.lock()?;
        let path = inputs.str("path")?;
        let file = lora::read_cached(Path::new(path))?;
        let parts: [(&KeyIndex, f64); 2] = [
            (unet.lora_index(), inputs.float("strength_model")?),
            (&clip.model.index, inputs.float("strength_clip")?),
        ];
        let matched = lora::match_parts(&file, &parts)?;
        let count = |i: usize| matched.patches[i].as_ref().map_or(0, |p| p.targets.len());
        let text = report(
            path,
            &matched.unmatched,
            &[("U-Net", count(0)), ("text encoder", count(1))],
        );
        let mut patches = matched.patches.into_iter();
        let model = unet.with_lora(patches.next().flatten());
        let clip_model = match patches.next().flatten() {
            Some(p) => clip.model.with(p),
            None => clip.model.clone(),
        };
        let clip = Clip {
            tokenizer: clip.tokenizer.clone(),
            model: clip_model,
            embeddings: clip.embeddings.clone(),
        };
        Ok(vec![
            Object::new(MODEL, Model { denoiser: model }).into(),
            Object::new(CLIP, Component::new("text encoder", Ok(clip))).into(),
            text.into(),
        ])
    }
}

/// `LoadLora` on SDXL: the U-Net and both text encoders (`lora_te1_` /
/// `text_encoder.`, `lora_te2_` / `text_encoder_2.`; the refiner has the
/// second only), the clip strength for both, as ComfyUI's LoraLoader.
fn load_sdxl(inputs: &Inputs, text: &SdxlText) -> Result<Vec<Value>, NodeError> {
    let (_, unet) = lora_model(inputs)?;
    let path = inputs.str("path")?;
    let file = lora::read_cached(Path::new(path))?;
    let clip_strength = inputs.float("strength_clip")?;
    let mut parts: Vec<(&KeyIndex, f64)> =
        vec![(unet.lora_index(), inputs.float("strength_model")?)];
    let first = text.first.as_ref().map(|e| e.model.index.clone());
    if let Some(index) = &first {
        parts.push((index, clip_strength));
    }
    let second = text.second.model.index.clone();
    parts.push((&second, clip_strength));
    let matched = lora::match_parts(&file, &parts)?;
    let count = |i: usize| matched.patches[i].as_ref().map_or(0, |p| p.targets.len());
    let mut applied = vec![("U-Net", count(0))];
    if first.is_some() {
        applied.push(("text encoder 1", count(1)));
    }
    applied.push(("text encoder 2", count(parts.len() - 1)));
    let text_report = report(path, &matched.unmatched, &applied);
    let mut patches = matched.patches.into_iter();
    let model = unet.with_lora(patches.next().flatten());
    let p1 = if first.is_some() {
        patches.next().flatten()
    } else {
        None
    };
    let p2 = patches.next().flatten();
    Ok(vec![
        Object::new(MODEL, Model { denoiser: model }).into(),
        Object::new(
            CLIP,
            Component::new("text encoder", Ok(text.with_lora(p1, p2))),
        )
        .into(),
        text_report.into(),
    ])
}

pub struct LoadLoraModelOnly;

impl Node for LoadLoraModelOnly {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadLoraModelOnly", "loaders")
            .description(
                "LoadLora for the U-Net alone (ComfyUI's LoraLoaderModelOnly): the file's text-encoder \
                 modules are left out, and reported.",
            )
            .input(InputSpec::new("model", PortType::object(MODEL)))
            .input(InputSpec::string("path").file().doc("a LoRA .safetensors file"))
            .input(strength("strength_model"))
            .output(OutputSpec::new("model", PortType::object(MODEL)))
            .output(OutputSpec::new("report", PortType::String).doc("what was patched, what was not"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let (_, unet) = lora_model(inputs)?;
        let path = inputs.str("path")?;
        let file = lora::read_cached(Path::new(path))?;
        let matched = lora::match_parts(
            &file,
            &[(unet.lora_index(), inputs.float("strength_model")?)],
        )?;
        let patch = matched.patches.into_iter().next().flatten();
        let count = patch.as_ref().map_or(0, |p| p.targets.len());
        let text = report(path, &matched.unmatched, &[("U-Net", count)]);
        let model = unet.with_lora(patch);
        Ok(vec![
            Object::new(MODEL, Model { denoiser: model }).into(),
            text.into(),
        ])
    }
}
