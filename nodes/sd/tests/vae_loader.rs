//! `LoadVAE`: a VAE on its own, from a diffusers folder or from a single
//! file with original (ldm) names, with or without `first_stage_model.`,
//! gives the same decoder as the checkpoint's (the tiny SD 1 model's VAE,
//! tests/fixtures/sd; the file is cut out of the single-file checkpoint).
use diffgraph_nodes_sd::nodes::loader::load;
use diffgraph_nodes_sd::nodes::vae_loader::load_vae;
use diffgraph_nodes_sd::weights::Weights;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn sd() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sd")
}

#[test]
fn a_separate_vae_decodes_as_the_checkpoints() {
    let dir = sd();
    let checkpoint = load(&dir.join("sd1-tiny"), None, Kind::Float, Device::Cpu).unwrap();
    let z = Tensor::randn([1, 4, 5, 6], (Kind::Float, Device::Cpu));
    let expected = tch::no_grad(|| checkpoint.vae.as_ref().unwrap().decode(&z).unwrap());
    let decode = |vae: diffgraph_nodes_sd::vae::Vae| tch::no_grad(|| vae.decode(&z).unwrap());
    let same = |t: &Tensor| assert_eq!((t - &expected).abs().max().double_value(&[]), 0.0);

    same(&decode(
        load_vae(
            &dir.join("sd1-tiny/vae"),
            None,
            None,
            Kind::Float,
            Device::Cpu,
        )
        .unwrap(),
    ));

    let tmp = tempfile::tempdir().unwrap();
    let all = Weights::read_safetensors(&dir.join("sd1-tiny.safetensors")).unwrap();
    for keep_prefix in [true, false] {
        let vae: Vec<(String, Tensor)> = all
            .iter()
            .filter_map(|(k, t)| {
                let rest = k.strip_prefix("first_stage_model.")?;
                Some((
                    if keep_prefix {
                        k.clone()
                    } else {
                        rest.to_string()
                    },
                    t.shallow_clone(),
                ))
            })
            .collect();
        let file = tmp.path().join(format!("vae-{keep_prefix}.safetensors"));
        Tensor::write_safetensors(&vae, &file).unwrap();
        let config = dir.join("sd1-tiny/vae");
        same(&decode(
            load_vae(&file, Some(&config), None, Kind::Float, Device::Cpu).unwrap(),
        ));
        // Without the config: SD's 32 norm groups do not divide the tiny VAE's 16 channels.
        let err = load_vae(&file, None, None, Kind::Float, Device::Cpu)
            .err()
            .unwrap();
        assert!(err.contains("group"), "{err}");
    }
    // A scaling factor given overrides the config's.
    let scaled = load_vae(
        &dir.join("sd1-tiny/vae"),
        None,
        Some(1.0),
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(scaled.config.scaling_factor, 1.0);
    // Not a VAE: every unrecognised key is named.
    let file = tmp.path().join("lora.safetensors");
    Tensor::write_safetensors(&[("lora_unet_x.alpha", Tensor::from(1.0f32))], &file).unwrap();
    let err = load_vae(&file, None, None, Kind::Float, Device::Cpu)
        .err()
        .unwrap();
    assert!(err.contains("lora_unet_x.alpha"), "{err}");
}
