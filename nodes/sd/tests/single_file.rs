//! Single-file checkpoints: tests/fixtures/sd/{sd1-tiny,sd2v-tiny}.safetensors
//! (original layout) split by `convert` must give exactly the tensors of the
//! diffusers folders, and configs equal to theirs.
use diffgraph_nodes_sd::convert::{
    read_checkpoint, split_single_file, split_single_file_with, ModelFamily, Part, ReferenceConfigs,
};
use diffgraph_nodes_sd::unet::{UNet, UNetConfig};
use diffgraph_nodes_sd::vae::{Vae, VaeConfig};
use diffgraph_nodes_sd::weights::Weights;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sd")
}

fn checkpoint(model: &str) -> BTreeMap<String, Tensor> {
    read_checkpoint(&fixtures().join(format!("{model}.safetensors"))).unwrap()
}

fn folder_tensors(model: &str, file: &str) -> BTreeMap<String, Tensor> {
    Weights::read_safetensors(&fixtures().join(model).join(file)).unwrap()
}

fn folder_config(model: &str, file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(model).join(file)).unwrap())
        .unwrap()
}

/// Same key set, dtypes, shapes and bits.
fn assert_identical(what: &str, got: &BTreeMap<String, Tensor>, want: &BTreeMap<String, Tensor>) {
    let g: Vec<&String> = got.keys().collect();
    let w: Vec<&String> = want.keys().collect();
    assert_eq!(g, w, "{what}: key sets differ");
    for (k, v) in want {
        let t = &got[k];
        assert_eq!(t.kind(), v.kind(), "{what}: {k} dtype");
        assert!(t.equal(v), "{what}: {k} differs");
    }
    println!("{what}: {} tensors identical", want.len());
}

/// Every field of the folder's config (except version stamps) is equal.
fn assert_config(what: &str, got: &Value, want: &Value) {
    for (k, v) in want.as_object().unwrap() {
        if k == "_diffusers_version" || k == "transformers_version" {
            continue;
        }
        assert_eq!(got.get(k), Some(v), "{what}.{k}");
    }
}

fn assert_fields(what: &str, got: &Value, want: &Value, fields: &[&str]) {
    for f in fields {
        assert_eq!(
            got.get(*f),
            want.get(*f),
            "{what}.{f} (inferred without reference)"
        );
    }
}

fn same_as_folder(model: &str, family: ModelFamily) {
    let folder = fixtures().join(model);
    let reference = ReferenceConfigs::from_diffusers_folder(&folder).unwrap();
    let parts = split_single_file_with(checkpoint(model), &reference).unwrap();
    assert_eq!(parts.family, family);
    let components: [(&str, &Part, &str, &str); 3] = [
        (
            "unet",
            &parts.unet,
            "unet/diffusion_pytorch_model.safetensors",
            "unet/config.json",
        ),
        (
            "vae",
            &parts.vae,
            "vae/diffusion_pytorch_model.safetensors",
            "vae/config.json",
        ),
        (
            "text_encoder",
            &parts.text_encoder,
            "text_encoder/model.safetensors",
            "text_encoder/config.json",
        ),
    ];
    for (name, part, weights, config) in components {
        assert_identical(
            &format!("{model} {name}"),
            &part.tensors,
            &folder_tensors(model, weights),
        );
        assert_config(
            &format!("{model} {name}"),
            &part.config,
            &folder_config(model, config),
        );
    }
    let scheduler = folder_config(model, "scheduler/scheduler_config.json");
    assert_eq!(
        Some(&Value::from(parts.prediction_type.as_str())),
        scheduler.get("prediction_type")
    );
    assert!(
        parts.assumed.is_empty(),
        "with a reference nothing is assumed: {:?}",
        parts.assumed
    );
}

#[test]
fn sd1_single_file_equals_diffusers_folder() {
    same_as_folder("sd1-tiny", ModelFamily::Sd1);
}

#[test]
fn sd2v_single_file_equals_diffusers_folder() {
    same_as_folder("sd2v-tiny", ModelFamily::Sd2);
}

const UNET_FIELDS: [&str; 9] = [
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "cross_attention_dim",
    "use_linear_projection",
    "transformer_layers_per_block",
];
const VAE_FIELDS: [&str; 11] = [
    "in_channels",
    "out_channels",
    "latent_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
    "scaling_factor",
];
const TEXT_FIELDS: [&str; 9] = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "max_position_embeddings",
    "hidden_act",
    "layer_norm_eps",
    "bos_token_id",
    "eos_token_id",
];
const SCHEDULER_FIELDS: [&str; 9] = [
    "beta_start",
    "beta_end",
    "beta_schedule",
    "num_train_timesteps",
    "prediction_type",
    "set_alpha_to_one",
    "steps_offset",
    "clip_sample",
    "skip_prk_steps",
];

/// Without a reference: what the shapes tell, and the SD defaults for the
/// rest (listed as assumed).
fn inferred_alone(model: &str, family: ModelFamily) {
    let parts = split_single_file(checkpoint(model)).unwrap();
    assert_eq!(parts.family, family);
    assert_fields(
        "unet",
        &parts.unet.config,
        &folder_config(model, "unet/config.json"),
        &UNET_FIELDS,
    );
    assert_fields(
        "vae",
        &parts.vae.config,
        &folder_config(model, "vae/config.json"),
        &VAE_FIELDS,
    );
    let text = folder_config(model, "text_encoder/config.json");
    assert_fields(
        "text_encoder",
        &parts.text_encoder.config,
        &text,
        &TEXT_FIELDS,
    );
    let scheduler = folder_config(model, "scheduler/scheduler_config.json");
    assert_fields(
        "scheduler",
        &parts.scheduler_config,
        &scheduler,
        &SCHEDULER_FIELDS,
    );
    println!("{model} assumed: {:?}", parts.assumed);
    println!("{model} ignored: {:?}", parts.ignored);
    for field in [
        "unet.norm_num_groups = 32",
        "vae.norm_num_groups = 32",
        "scheduler.prediction_type",
    ] {
        assert!(
            parts.assumed.iter().any(|a| a.starts_with(field)),
            "{field} not listed in {:?}",
            parts.assumed
        );
    }
    for key in ["betas", "alphas_cumprod", "alphas_cumprod_prev"] {
        assert!(parts.ignored.iter().any(|k| k == key), "{key} not ignored");
    }
}

#[test]
fn sd1_config_inferred_from_shapes() {
    inferred_alone("sd1-tiny", ModelFamily::Sd1);
    let parts = split_single_file(checkpoint("sd1-tiny")).unwrap();
    // SD 1: 8 heads, whatever the width, as diffusers' v1 config.
    assert_eq!(parts.unet.config["attention_head_dim"], Value::from(8));
    assert_eq!(parts.prediction_type, "epsilon");
    assert!(parts
        .ignored
        .contains(&"cond_stage_model.transformer.text_model.embeddings.position_ids".into()));
}

#[test]
fn sd2v_config_inferred_from_shapes() {
    inferred_alone("sd2v-tiny", ModelFamily::Sd2);
    let parts = split_single_file(checkpoint("sd2v-tiny")).unwrap();
    assert_eq!(parts.prediction_type, "v_prediction");
    // The fixture's OpenCLIP tower has one block more than the diffusers
    // text encoder: the last one (penultimate-layer conditioning) is dropped.
    let dropped: Vec<&String> = parts
        .ignored
        .iter()
        .filter(|k| k.contains("resblocks.3."))
        .collect();
    assert_eq!(dropped.len(), 12, "{dropped:?}");
    for key in [
        "cond_stage_model.model.text_projection",
        "cond_stage_model.model.logit_scale",
    ] {
        assert!(parts.ignored.iter().any(|k| k == key), "{key} not ignored");
    }
}

#[test]
fn prediction_type_can_be_given() {
    let reference = ReferenceConfigs {
        prediction_type: Some("epsilon".into()),
        ..Default::default()
    };
    let parts = split_single_file_with(checkpoint("sd2v-tiny"), &reference).unwrap();
    assert_eq!(parts.prediction_type, "epsilon");
    assert_eq!(parts.scheduler_config["prediction_type"], "epsilon");
}

#[test]
fn single_file_models_compute_like_folder_models() {
    // The VAE and U-Net built from the single file are the folder's models.
    let reference = ReferenceConfigs::from_diffusers_folder(&fixtures().join("sd2v-tiny")).unwrap();
    let parts = split_single_file_with(checkpoint("sd2v-tiny"), &reference).unwrap();
    let config = VaeConfig::from_json(&parts.vae.config.to_string()).unwrap();
    let single = Vae::from_weights(
        &config,
        Weights::new(parts.vae.tensors, Kind::Float, Device::Cpu, "single"),
    )
    .unwrap();
    let folder =
        Vae::from_folder(&fixtures().join("sd2v-tiny/vae"), Kind::Float, Device::Cpu).unwrap();
    let z = Tensor::randn([1, 4, 6, 10], (Kind::Float, Device::Cpu));
    assert!(single
        .decode(&z)
        .unwrap()
        .equal(&folder.decode(&z).unwrap()));
    let config = UNetConfig::from_json(&parts.unet.config.to_string()).unwrap();
    UNet::load(
        &config,
        Weights::new(parts.unet.tensors, Kind::Float, Device::Cpu, "single"),
    )
    .unwrap();
}
