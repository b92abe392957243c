//! Which model parameter a LoRA file's module name patches.
//!
//! Table-driven: a [`Rule`] says, for one model part (a U-Net, a text
//! encoder), the prefixes under which LoRA files name its modules: kohya /
//! A1111 names (`lora_unet_` + the module path with `.` written `_`;
//! sd-scripts' `networks/lora.py`, read by diffusers'
//! `loaders/lora_conversion_utils.py` `_convert_non_diffusers_lora_to_diffusers`
//! and by ComfyUI's `comfy/lora.py` `model_lora_keys_unet` /
//! `model_lora_keys_clip`) and diffusers / PEFT names (`unet.` + the module
//! path). A [`KeyIndex`] built from a model's parameter names maps every
//! such spelling of each weight's module to the parameter.
//!
//! SDXL: its U-Net and first text encoder use [`UNET`] and [`SDXL_TEXT_L`],
//! its second text encoder [`SDXL_TEXT_G`] (kohya `lora_te2_`, diffusers
//! `text_encoder_2.`); the refiner's only encoder [`SDXL_REFINER_TEXT`]. kohya trains SDXL on the original (sgm) U-Net, so
//! SDXL kohya files name U-Net modules by their original paths
//! (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`): the
//! SDXL loader adds those with [`KeyIndex::add_alias`] (diffusers name ->
//! original name, the inverse of its single-file conversion).
use std::collections::BTreeMap;
use tch::Tensor;

/// How LoRA files name the modules of one model part.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// For messages ("U-Net", "text encoder").
    pub part: &'static str,
    /// kohya / A1111 prefixes: prefix + module path with `.` -> `_`.
    pub kohya: &'static [&'static str],
    /// diffusers / PEFT prefixes: prefix + module path.
    pub peft: &'static [&'static str],
    /// A leading path some files include and others leave out (the text
    /// encoders' `text_model.`); both spellings are indexed.
    pub optional_root: &'static str,
}

/// The SD 1.x/2.x (and SDXL) U-Net.
pub const UNET: Rule = Rule {
    part: "U-Net",
    kohya: &["lora_unet_"],
    peft: &["unet.", "lora_unet."],
    optional_root: "",
};

/// The SD 1.x/2.x text encoder.
pub const SD_TEXT: Rule = Rule {
    part: "text encoder",
    kohya: &["lora_te_"],
    peft: &["text_encoder.", "lora_te."],
    optional_root: "text_model.",
};

/// SDXL's first text encoder (CLIP ViT-L).
pub const SDXL_TEXT_L: Rule = Rule {
    part: "text encoder 1",
    kohya: &["lora_te1_"],
    peft: &["text_encoder."],
    optional_root: "text_model.",
};

/// SDXL's second text encoder (OpenCLIP ViT-bigG).
pub const SDXL_TEXT_G: Rule = Rule {
    part: "text encoder 2",
    kohya: &["lora_te2_"],
    peft: &["text_encoder_2."],
    optional_root: "text_model.",
};

/// The SDXL refiner's only text encoder (OpenCLIP ViT-bigG): LoRA files
/// name it as SD's one text encoder (ComfyUI `comfy/lora.py`
/// `model_lora_keys_clip`: `lora_te_` and `text_encoder.` for a `clip_g`
/// without a `clip_l`).
pub const SDXL_REFINER_TEXT: Rule = Rule {
    part: "text encoder",
    kohya: &["lora_te_"],
    peft: &["text_encoder."],
    optional_root: "text_model.",
};

/// Every spelling of every patchable weight's module -> (parameter name, shape).
pub struct KeyIndex {
    pub rule: Rule,
    names: BTreeMap<String, String>,
    shapes: BTreeMap<String, Vec<i64>>,
}

impl KeyIndex {
    /// From a model's parameters: every 2-d (Linear) and 4-d (Conv2d)
    /// `*.weight` is patchable.
    pub fn new(rule: Rule, params: &BTreeMap<String, Tensor>) -> KeyIndex {
        let mut index = KeyIndex {
            rule,
            names: BTreeMap::new(),
            shapes: BTreeMap::new(),
        };
        for (name, t) in params {
            let shape = t.size();
            let Some(module) = name.strip_suffix(".weight") else {
                continue;
            };
            if shape.len() != 2 && shape.len() != 4 {
                continue;
            }
            index.shapes.insert(name.clone(), shape);
            let module = module.to_string();
            index.add_alias(name, &module);
        }
        index
    }

    /// Indexes `module` (a path without `.weight`; with and without the
    /// rule's optional root) under every prefix of the rule, for parameter
    /// `param`.
    pub fn add_alias(&mut self, param: &str, module: &str) {
        let root = self.rule.optional_root;
        let bare = module.strip_prefix(root).unwrap_or(module);
        let mut paths = vec![bare.to_string()];
        if !root.is_empty() {
            paths.push(format!("{root}{bare}"));
        }
        for path in paths {
            for p in self.rule.peft {
                self.names.insert(format!("{p}{path}"), param.to_string());
            }
            for p in self.rule.kohya {
                self.names
                    .insert(format!("{p}{}", path.replace('.', "_")), param.to_string());
            }
        }
    }

    /// The parameter a file's module name patches.
    pub fn lookup(&self, module: &str) -> Option<&str> {
        self.names.get(module).map(String::as_str)
    }

    /// The shape of a patchable parameter.
    pub fn shape(&self, param: &str) -> Option<&[i64]> {
        self.shapes.get(param).map(Vec::as_slice)
    }

    /// How many weights can be patched.
    pub fn len(&self) -> usize {
        self.shapes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn kohya_and_peft_names_find_the_parameter() {
        let mut params = BTreeMap::new();
        let z = |s: &[i64]| Tensor::zeros(s, (Kind::Float, Device::Cpu));
        params.insert(
            "encoder.layers.0.self_attn.q_proj.weight".into(),
            z(&[4, 4]),
        );
        params.insert("encoder.layers.0.self_attn.q_proj.bias".into(), z(&[4]));
        params.insert("final_layer_norm.weight".into(), z(&[4]));
        let index = KeyIndex::new(SD_TEXT, &params);
        let q = Some("encoder.layers.0.self_attn.q_proj.weight");
        assert_eq!(
            index.lookup("lora_te_text_model_encoder_layers_0_self_attn_q_proj"),
            q
        );
        assert_eq!(
            index.lookup("text_encoder.text_model.encoder.layers.0.self_attn.q_proj"),
            q
        );
        assert_eq!(
            index.lookup("text_encoder.encoder.layers.0.self_attn.q_proj"),
            q
        );
        assert_eq!(
            index.lookup("lora_te2_text_model_encoder_layers_0_self_attn_q_proj"),
            None
        );
        assert_eq!(
            index.lookup("lora_te_final_layer_norm"),
            None,
            "1-d weights are not patchable"
        );
        assert_eq!(index.len(), 1);
    }
}
