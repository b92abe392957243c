//! ADM configuration from the flags guided-diffusion's scripts take, with
//! the defaults of `guided_diffusion/script_util.py`
//! (`model_and_diffusion_defaults`, `classifier_defaults`), and presets named
//! after each released checkpoint (flags from the repository's README).
//!
//! Flags come as a JSON object (`{"image_size": 64, "class_cond": true, ...}`;
//! strings such as `"True"` or `"32,16,8"` are read as the reference's
//! argparse would) or as the README's command-line form
//! (`--image_size 64 --class_cond True ...`). Unknown flags are refused.
use serde_json::{Map, Value};

/// script_util.py `model_and_diffusion_defaults()` (with `diffusion_defaults()`).
const MODEL_DEFAULTS: &str = r#"{"image_size": 64, "num_channels": 128, "num_res_blocks": 2,
 "num_heads": 4, "num_heads_upsample": -1, "num_head_channels": -1, "attention_resolutions": "16,8",
 "channel_mult": "", "dropout": 0.0, "class_cond": false, "use_checkpoint": false,
 "use_scale_shift_norm": true, "resblock_updown": false, "use_fp16": false,
 "use_new_attention_order": false, "learn_sigma": false, "diffusion_steps": 1000,
 "noise_schedule": "linear", "timestep_respacing": "", "use_kl": false, "predict_xstart": false,
 "rescale_timesteps": false, "rescale_learned_sigmas": false}"#;

/// script_util.py `classifier_defaults()`, plus three of diffgraph's own
/// (`classifier_channel_mult`, `classifier_num_classes`,
/// `classifier_num_head_channels`: `create_classifier` fixes them by image
/// size, to 1000 and to 64; tiny test models set them).
const CLASSIFIER_DEFAULTS: &str = r#"{"image_size": 64, "classifier_use_fp16": false,
 "classifier_width": 128, "classifier_depth": 2, "classifier_attention_resolutions": "32,16,8",
 "classifier_use_scale_shift_norm": true, "classifier_resblock_updown": true,
 "classifier_pool": "attention", "classifier_channel_mult": "", "classifier_num_classes": 1000,
 "classifier_num_head_channels": 64}"#;

/// Flags of classifier_sample.py itself (and the other's flags): accepted
/// in a combined file, not used by the model they do not describe.
const SCRIPT_FLAGS: [&str; 8] = [
    "clip_denoised",
    "num_samples",
    "batch_size",
    "use_ddim",
    "model_path",
    "classifier_path",
    "classifier_scale",
    "seed",
];

/// The released checkpoints' flags (README "Sampling from pre-trained models").
pub const MODEL_PRESETS: [(&str, &str); 5] = [
    ("64x64_diffusion", "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 --image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192 --num_head_channels 64 --num_res_blocks 3 --resblock_updown True --use_new_attention_order True --use_fp16 True --use_scale_shift_norm True"),
    ("128x128_diffusion", "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 128 --learn_sigma True --noise_schedule linear --num_channels 256 --num_heads 4 --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True"),
    ("256x256_diffusion", "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True"),
    ("256x256_diffusion_uncond", "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True"),
    ("512x512_diffusion", "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 512 --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 False --use_scale_shift_norm True"),
];

/// The released classifiers' flags (README: the 64x64 one has depth 4).
pub const CLASSIFIER_PRESETS: [(&str, &str); 4] = [
    ("64x64_classifier", "--image_size 64 --classifier_depth 4"),
    ("128x128_classifier", "--image_size 128"),
    ("256x256_classifier", "--image_size 256"),
    ("512x512_classifier", "--image_size 512"),
];

/// Flags merged over the defaults, read with the defaults' types.
#[derive(Clone, Debug)]
pub struct Flags(Map<String, Value>);

impl Flags {
    fn parse(defaults: &str, given: &Map<String, Value>, other: &str) -> Result<Flags, String> {
        let mut map: Map<String, Value> = serde_json::from_str(defaults).expect("valid defaults");
        let other: Map<String, Value> = serde_json::from_str(other).expect("valid defaults");
        for (k, v) in given {
            if map.contains_key(k) {
                map.insert(k.clone(), v.clone());
            } else if !other.contains_key(k) && !SCRIPT_FLAGS.contains(&k.as_str()) {
                let mut known: Vec<&String> = map.keys().collect();
                known.sort();
                return Err(format!(
                    "unknown flag `{k}`; the flags are: {}",
                    known
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let f = Flags(map);
        for k in f.0.keys() {
            f.check_type(k)?;
        }
        Ok(f)
    }

    /// Model and diffusion flags (`model.flags`): JSON object or command line.
    pub fn model(text: &str) -> Result<Flags, String> {
        Flags::parse(MODEL_DEFAULTS, &object(text)?, CLASSIFIER_DEFAULTS)
    }

    /// Classifier flags (`classifier.flags`).
    pub fn classifier(text: &str) -> Result<Flags, String> {
        Flags::parse(CLASSIFIER_DEFAULTS, &object(text)?, MODEL_DEFAULTS)
    }

    fn check_type(&self, k: &str) -> Result<(), String> {
        let default: Map<String, Value> = serde_json::from_str(MODEL_DEFAULTS)
            .and_then(|mut m: Map<String, Value>| {
                m.extend(serde_json::from_str::<Map<String, Value>>(
                    CLASSIFIER_DEFAULTS,
                )?);
                Ok(m)
            })
            .expect("valid defaults");
        match default.get(k) {
            Some(Value::Bool(_)) => self.bool(k).map(|_| ()),
            Some(Value::Number(n)) if n.is_f64() => self.float(k).map(|_| ()),
            Some(Value::Number(_)) => self.int(k).map(|_| ()),
            _ => self.str(k).map(|_| ()),
        }
    }

    fn get(&self, k: &str) -> &Value {
        self.0.get(k).unwrap_or(&Value::Null)
    }

    /// script_util.py `str2bool` for strings.
    pub fn bool(&self, k: &str) -> Result<bool, String> {
        match self.get(k) {
            Value::Bool(b) => Ok(*b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "yes" | "true" | "t" | "y" | "1" => Ok(true),
                "no" | "false" | "f" | "n" | "0" => Ok(false),
                _ => Err(format!("flag `{k}`: `{s}` is not a boolean")),
            },
            v => Err(format!("flag `{k}`: {v} is not a boolean")),
        }
    }

    pub fn int(&self, k: &str) -> Result<i64, String> {
        match self.get(k) {
            Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or_default()),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("flag `{k}`: `{s}` is not an integer")),
            v => Err(format!("flag `{k}`: {v} is not an integer")),
        }
    }

    pub fn float(&self, k: &str) -> Result<f64, String> {
        match self.get(k) {
            Value::Number(n) => Ok(n.as_f64().unwrap_or_default()),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("flag `{k}`: `{s}` is not a number")),
            v => Err(format!("flag `{k}`: {v} is not a number")),
        }
    }

    /// A string flag; numbers are taken as their text (`"attention_resolutions": 16`).
    pub fn str(&self, k: &str) -> Result<String, String> {
        match self.get(k) {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            v => Err(format!("flag `{k}`: {v} is not a string")),
        }
    }
}

/// A JSON object of flags, or the README's `--name value` form.
fn object(text: &str) -> Result<Map<String, Value>, String> {
    let t = text.trim();
    if t.starts_with('{') {
        return serde_json::from_str(t).map_err(|e| format!("flags are not a JSON object: {e}"));
    }
    let words: Vec<&str> = t.split_whitespace().collect();
    let mut map = Map::new();
    for pair in words.chunks(2) {
        match pair {
            [name, value] if name.starts_with("--") => {
                map.insert(name[2..].to_string(), Value::String(value.to_string()));
            }
            _ => {
                return Err(format!(
                    "flags: expected `--name value` pairs, found `{}`",
                    pair.join(" ")
                ))
            }
        }
    }
    Ok(map)
}

/// The architecture `UNetModel` / `EncoderUNetModel` is built with.
#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    pub image_size: i64,
    pub in_channels: i64,
    pub model_channels: i64,
    pub out_channels: i64,
    pub num_res_blocks: i64,
    /// Downsampling factors with attention (`image_size // res`).
    pub attention_ds: Vec<i64>,
    pub channel_mult: Vec<f64>,
    pub num_classes: Option<i64>,
    pub num_heads: i64,
    pub num_head_channels: i64,
    pub num_heads_upsample: i64,
    pub use_scale_shift_norm: bool,
    pub resblock_updown: bool,
    pub use_new_attention_order: bool,
}

/// `EncoderUNetModel`'s pooling head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pool {
    Adaptive,
    Attention,
    Spatial,
    SpatialV2,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierArch {
    pub arch: Arch,
    pub pool: Pool,
}

/// script_util.py `create_model`'s channel_mult by image size.
fn channel_mult(image_size: i64, given: &str) -> Result<Vec<f64>, String> {
    if !given.trim().is_empty() {
        return given
            .split(',')
            .map(|m| {
                m.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("channel_mult: `{m}` is not a number"))
            })
            .collect();
    }
    Ok(match image_size {
        512 => vec![0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
        256 => vec![1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
        128 => vec![1.0, 1.0, 2.0, 3.0, 4.0],
        64 => vec![1.0, 2.0, 3.0, 4.0],
        n => return Err(format!("unsupported image size: {n} (give channel_mult)")),
    })
}

fn attention_ds(image_size: i64, resolutions: &str) -> Result<Vec<i64>, String> {
    resolutions
        .split(',')
        .map(|r| match r.trim().parse::<i64>() {
            Ok(r) if r > 0 => Ok(image_size / r),
            _ => Err(format!(
                "attention_resolutions: `{r}` is not a positive integer"
            )),
        })
        .collect()
}

impl Flags {
    /// script_util.py `create_model`.
    pub fn unet_arch(&self) -> Result<Arch, String> {
        let image_size = self.int("image_size")?;
        Ok(Arch {
            image_size,
            in_channels: 3,
            model_channels: self.int("num_channels")?,
            out_channels: if self.bool("learn_sigma")? { 6 } else { 3 },
            num_res_blocks: self.int("num_res_blocks")?,
            attention_ds: attention_ds(image_size, &self.str("attention_resolutions")?)?,
            channel_mult: channel_mult(image_size, &self.str("channel_mult")?)?,
            num_classes: self.bool("class_cond")?.then_some(1000),
            num_heads: self.int("num_heads")?,
            num_head_channels: self.int("num_head_channels")?,
            num_heads_upsample: self.int("num_heads_upsample")?,
            use_scale_shift_norm: self.bool("use_scale_shift_norm")?,
            resblock_updown: self.bool("resblock_updown")?,
            use_new_attention_order: self.bool("use_new_attention_order")?,
        })
    }

    /// script_util.py `create_classifier` (one head count, the old attention order).
    pub fn classifier_arch(&self) -> Result<ClassifierArch, String> {
        let image_size = self.int("image_size")?;
        let pool = match self.str("classifier_pool")?.as_str() {
            "adaptive" => Pool::Adaptive,
            "attention" => Pool::Attention,
            "spatial" => Pool::Spatial,
            "spatial_v2" => Pool::SpatialV2,
            p => {
                return Err(format!(
                    "classifier_pool: unexpected `{p}` (adaptive, attention, spatial, spatial_v2)"
                ))
            }
        };
        Ok(ClassifierArch {
            arch: Arch {
                image_size,
                in_channels: 3,
                model_channels: self.int("classifier_width")?,
                out_channels: self.int("classifier_num_classes")?,
                num_res_blocks: self.int("classifier_depth")?,
                attention_ds: attention_ds(
                    image_size,
                    &self.str("classifier_attention_resolutions")?,
                )?,
                channel_mult: channel_mult(image_size, &self.str("classifier_channel_mult")?)?,
                num_classes: None,
                num_heads: 1,
                num_head_channels: self.int("classifier_num_head_channels")?,
                num_heads_upsample: -1,
                use_scale_shift_norm: self.bool("classifier_use_scale_shift_norm")?,
                resblock_updown: self.bool("classifier_resblock_updown")?,
                use_new_attention_order: false,
            },
            pool,
        })
    }
}

/// The flags of a preset by name.
pub fn preset(name: &str) -> Result<&'static str, String> {
    MODEL_PRESETS
        .iter()
        .chain(CLASSIFIER_PRESETS.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            let names: Vec<&str> = MODEL_PRESETS
                .iter()
                .chain(CLASSIFIER_PRESETS.iter())
                .map(|(n, _)| *n)
                .collect();
            format!("unknown preset `{name}`; presets: {}", names.join(", "))
        })
}
