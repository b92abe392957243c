//! Single-file checkpoints that must be refused: references contradicting
//! the weights, unknown or renamed keys, truncated files, pickles.
use diffgraph_nodes_sd::convert::{
    read_checkpoint, split_single_file, split_single_file_with, ReferenceConfigs,
};
use diffgraph_nodes_sd::unet::{UNet, UNetConfig};
use diffgraph_nodes_sd::vae::{Vae, VaeConfig};
use diffgraph_nodes_sd::weights::Weights;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sd")
}

fn checkpoint(model: &str) -> BTreeMap<String, Tensor> {
    read_checkpoint(&fixtures().join(format!("{model}.safetensors"))).unwrap()
}

#[test]
fn contradicting_reference_is_an_error() {
    // SD1's configs describe another architecture than the SD2 checkpoint.
    let reference = ReferenceConfigs::from_diffusers_folder(&fixtures().join("sd1-tiny")).unwrap();
    let err = split_single_file_with(checkpoint("sd2v-tiny"), &reference)
        .err()
        .unwrap();
    assert!(
        err.contains("unet.use_linear_projection: reference false, checkpoint true"),
        "{err}"
    );
}

#[test]
fn renamed_and_foreign_keys_are_listed() {
    let mut tensors = checkpoint("sd1-tiny");
    let renames = [
        (
            "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
            "model.diffusion_model.input_blocks.1.0.in_layerz.0.weight",
        ),
        (
            "first_stage_model.encoder.mid.attn_1.q.weight",
            "first_stage_model.encoder.mid.attn_1.query.weight",
        ),
        (
            "cond_stage_model.transformer.text_model.final_layer_norm.bias",
            "cond_stage_model.transformer.final_norm.bias",
        ),
    ];
    for (old, new) in renames {
        let t = tensors.remove(old).unwrap();
        tensors.insert(new.into(), t);
    }
    tensors.insert(
        "something.else".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    );
    let err = split_single_file(tensors).err().unwrap();
    println!("{err}");
    assert!(err.contains("unrecognised keys (4)"), "{err}");
    for (_, new) in renames {
        assert!(err.contains(new), "{new} not listed: {err}");
    }
    assert!(err.contains("something.else"), "{err}");
}

#[test]
fn truncated_checkpoints_fail() {
    // Whole blocks missing: the structure no longer adds up.
    let mut tensors = checkpoint("sd1-tiny");
    tensors.retain(|k, _| !k.starts_with("model.diffusion_model.output_blocks.3."));
    let err = split_single_file(tensors).err().unwrap();
    assert!(err.contains("output_blocks"), "{err}");

    // A tensor needed to infer the architecture.
    let mut tensors = checkpoint("sd1-tiny");
    tensors.remove("first_stage_model.decoder.conv_out.weight");
    let err = split_single_file(tensors).err().unwrap();
    assert!(
        err.contains("decoder.conv_out.weight") && err.contains("out_channels"),
        "{err}"
    );

    // Any other tensor: the model loader lists it (diffusers name).
    let mut tensors = checkpoint("sd1-tiny");
    tensors.remove("first_stage_model.decoder.up.0.block.1.norm2.bias");
    tensors.remove("model.diffusion_model.output_blocks.3.1.proj_out.bias");
    let parts = split_single_file(tensors).unwrap();
    let reference = ReferenceConfigs::from_diffusers_folder(&fixtures().join("sd1-tiny")).unwrap();
    let vae_config = VaeConfig::from_json(&reference.vae.unwrap().to_string()).unwrap();
    let w = Weights::new(
        parts.vae.tensors,
        Kind::Float,
        Device::Cpu,
        "sd1-tiny.safetensors (VAE)",
    );
    let err = Vae::from_weights(&vae_config, w).err().unwrap();
    assert!(
        err.contains("missing keys (1): decoder.up_blocks.1.resnets.1.norm2.bias"),
        "{err}"
    );
    let unet_config = UNetConfig::from_json(&reference.unet.unwrap().to_string()).unwrap();
    let w = Weights::new(
        parts.unet.tensors,
        Kind::Float,
        Device::Cpu,
        "sd1-tiny.safetensors (U-Net)",
    );
    let err = UNet::load(&unet_config, w).err().unwrap();
    // output_blocks.3 = up block 1, layer 1 (two layers per up block here).
    assert!(
        err.contains("missing keys (1): up_blocks.1.attentions.1.proj_out.bias"),
        "{err}"
    );

    // A file cut short.
    let bytes = std::fs::read(fixtures().join("sd1-tiny.safetensors")).unwrap();
    let path = temp_file("cut.safetensors", &bytes[..bytes.len() / 2]);
    assert!(read_checkpoint(&path).is_err());
    std::fs::remove_file(path).ok();
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diffgraph-single-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn refused(path: &Path) {
    let err = read_checkpoint(path).err().unwrap();
    assert!(
        err.contains("pickle") && err.contains(".safetensors"),
        "{err}"
    );
}

#[test]
fn pickles_are_refused() {
    // By extension, whatever the content.
    refused(&temp_file("model.ckpt", b"\x80\x02}q\x00."));
    refused(&temp_file("model.PT", b"anything"));
    // By content, whatever the name: a torch.save zip, a raw pickle stream.
    refused(&temp_file("zip.safetensors", b"PK\x03\x04rest-of-zip"));
    refused(&temp_file(
        "raw.safetensors",
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00",
    ));
}
