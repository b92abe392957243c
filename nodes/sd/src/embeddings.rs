//! Textual-inversion embeddings: vectors that stand for a word of a prompt.
//!
//! Files are `.safetensors` as people download them: A1111's (`emb_params`),
//! diffusers' `learned_embeds.safetensors` (one tensor named by its token,
//! e.g. `<cat-toy>`), SDXL ones (`clip_l`, `clip_g`: the one as wide as the
//! text encoder is taken). As ComfyUI's `load_embed` (comfy/sd1_clip.py): a
//! tensor named after the encoder (`clip_l` ...) if present, else the only
//! tensor as wide as the encoder.
//!
//! Prompts name them as ComfyUI does, `embedding:name` (a file
//! `name.safetensors` in the folder given to CLIPTextEncode), or by the
//! token a `LoadTextualInversion` node gave them (diffusers'
//! `load_textual_inversion(path, token=...)` form: the token written in the
//! prompt, e.g. `a photo of <cat-toy>`).
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// An embedding's rows as plain data (tensors are not `Sync`; CLIP handles
/// carry these).
#[derive(Clone, Debug)]
pub struct Embedding {
    pub rows: i64,
    pub width: i64,
    pub data: Vec<f32>,
}

impl Embedding {
    /// [rows, width], float32.
    pub fn tensor(&self) -> Tensor {
        Tensor::from_slice(&self.data).view([self.rows, self.width])
    }
}

/// Names ComfyUI's CLIP models give their embedding tensors.
const ENCODER_KEYS: &[&str] = &["clip_l", "clip_g", "emb_params", "string_to_param.*"];

/// Reads the embedding of a file for a text encoder `width` wide.
pub fn read(path: &Path, width: i64) -> Result<Embedding, String> {
    let source = path.display().to_string();
    let tensors = crate::safetensors::read(path)?;
    let wide: Vec<(&String, &Tensor)> = tensors
        .iter()
        .filter(|(_, t)| t.dim() >= 1 && t.dim() <= 2 && t.size().last() == Some(&width))
        .collect();
    let chosen = wide
        .iter()
        .find(|(k, _)| ENCODER_KEYS.contains(&k.as_str()))
        .or_else(|| (wide.len() == 1).then(|| &wide[0]))
        .ok_or_else(|| {
            let all: Vec<String> = tensors
                .iter()
                .map(|(k, t)| format!("{k} {:?}", t.size()))
                .collect();
            format!(
                "{source}: no textual-inversion embedding {width} wide (tensors: {})",
                all.join(", ")
            )
        })?;
    let t = chosen.1.to_kind(Kind::Float).reshape([-1, width]);
    Ok(Embedding {
        rows: t.size()[0],
        width,
        data: Vec::<f32>::try_from(t.reshape([-1])).map_err(|e| format!("{source}: {e}"))?,
    })
}

/// The embedding `name`: one attached to the CLIP handle, else
/// `folder/name` or `folder/name.safetensors`. Names with a path separator
/// or `..` are refused (the folder confines them, as ComfyUI's `load_embed`).
pub fn find(
    folder: Option<&str>,
    attached: &BTreeMap<String, Embedding>,
    name: &str,
    width: i64,
) -> Option<Tensor> {
    if let Some(e) = attached.get(name) {
        return Some(e.tensor());
    }
    let folder = Path::new(folder?);
    if name.is_empty() || name.contains(['/', '\\']) || name.contains("..") {
        return None;
    }
    let file = [name.to_string(), format!("{name}.safetensors")]
        .into_iter()
        .map(|f| folder.join(f))
        .find(|p| p.is_file())?;
    match read(&file, width) {
        Ok(e) => Some(e.tensor()),
        Err(e) => {
            eprintln!("warning: {e}");
            None
        }
    }
}

/// Each attached token written in `text` as ComfyUI's `embedding:token`
/// (longest tokens first, so that `<a>_1` is not read as `<a>`).
pub fn rewrite_tokens<V>(text: &str, attached: &BTreeMap<String, V>) -> String {
    let mut tokens: Vec<&String> = attached.keys().collect();
    tokens.sort_by_key(|t| std::cmp::Reverse(t.len()));
    let mut text = text.to_string();
    for (i, token) in tokens.iter().enumerate() {
        // A marker no prompt contains, so later tokens do not match inside it.
        text = text.replace(token.as_str(), &format!(" \u{0}{i}\u{0} "));
    }
    for (i, token) in tokens.iter().enumerate() {
        text = text.replace(&format!("\u{0}{i}\u{0}"), &format!("embedding:{token}"));
    }
    text
}
