//! Latent diffusion's own model parts vs diffusers, fp32 on the CPU, against
//! tests/fixtures/ldm/reference.safetensors (written by
//! scripts/fixtures/make_ldm_fixtures.py): UNet2DModel (unconditional and
//! class-conditional, every config option the fixtures vary) and VQModel
//! (encode, quantize, decode with and without quantizing).
mod ldm_common;

use diffgraph_nodes_sd::unet2d::UNet2D;
use diffgraph_nodes_sd::vae::Vae;
use diffgraph_nodes_sd::weights::Weights;
use ldm_common::{check, fixtures};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

fn reference() -> BTreeMap<String, Tensor> {
    Weights::read_safetensors(&fixtures().join("reference.safetensors")).unwrap()
}

fn unet(model: &str) -> UNet2D {
    UNet2D::from_folder(
        &fixtures().join(model).join("unet"),
        Kind::Float,
        Device::Cpu,
    )
    .unwrap()
}

#[test]
fn unet2d_matches_diffusers() {
    tch::set_num_threads(1);
    let r = reference();
    let uncond = unet("ldm-uncond-tiny");
    let out = uncond.forward(&r["unet_uncond.x"], 981.0, None).unwrap();
    check(
        "unconditional UNet2DModel, t=981",
        &out,
        &r["unet_uncond.out"],
    );
    let out = uncond.forward(&r["unet_uncond.x12"], 3.0, None).unwrap();
    check(
        "unconditional UNet2DModel, 12x12, t=3",
        &out,
        &r["unet_uncond.out12"],
    );

    let class = unet("ldm-class-tiny");
    let labels = &r["unet_class.labels"];
    let out = class
        .forward(&r["unet_class.x"], 500.0, Some(labels))
        .unwrap();
    check(
        "class-conditional UNet2DModel, t=500",
        &out,
        &r["unet_class.out"],
    );
}

#[test]
fn unet2d_refuses_bad_inputs_clearly() {
    let r = reference();
    let uncond = unet("ldm-uncond-tiny");
    let class = unet("ldm-class-tiny");
    let x = &r["unet_uncond.x"];
    let labels = Tensor::from_slice(&[1i64, 2]);
    let err = |res: Result<Tensor, String>| res.unwrap_err();
    assert!(err(uncond.forward(x, 1.0, Some(&labels))).contains("takes no class labels"));
    let xc = &r["unet_class.x"];
    assert!(err(class.forward(xc, 1.0, None)).contains("needs class labels"));
    let out_of_range = Tensor::from_slice(&[0i64, 10, 3]);
    assert!(err(class.forward(xc, 1.0, Some(&out_of_range))).contains("in 0..10"));
    let odd = Tensor::zeros([1, 3, 7, 8], (Kind::Float, Device::Cpu));
    assert!(err(uncond.forward(&odd, 1.0, None)).contains("multiples of 2"));
    let wrong = Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu));
    assert!(err(uncond.forward(&wrong, 1.0, None)).contains("[batch, 3, height, width]"));
}

#[test]
fn vq_autoencoder_matches_diffusers() {
    tch::set_num_threads(1);
    let r = reference();
    for (name, model) in [
        ("vq_uncond", "ldm-uncond-tiny"),
        ("vq_class", "ldm-class-tiny"),
    ] {
        let vq = Vae::from_folder(
            &fixtures().join(model).join("vqvae"),
            Kind::Float,
            Device::Cpu,
        )
        .unwrap();
        assert!(vq.config.is_vq());
        let latents = vq.encode_vq(&r[&format!("{name}.image")]).unwrap();
        check(
            &format!("{name} encode"),
            &latents,
            &r[&format!("{name}.latents")],
        );
        // From the reference latents, so that a near-tie in the codebook
        // distances cannot flip an index between implementations.
        let h = &r[&format!("{name}.latents")];
        let q = vq.quantize(h).unwrap();
        check(
            &format!("{name} quantize"),
            &q,
            &r[&format!("{name}.quantized")],
        );
        let decoded = vq.decode_raw(h).unwrap();
        check(
            &format!("{name} decode"),
            &decoded,
            &r[&format!("{name}.decoded")],
        );
        let raw = vq.decode_raw_with(h, true).unwrap();
        check(
            &format!("{name} decode, force_not_quantize"),
            &raw,
            &r[&format!("{name}.decoded_unquantized")],
        );
        // Latents for the diffusion model are encode's, times scaling_factor.
        let scaled = vq
            .encode_latents(&r[&format!("{name}.image")], None)
            .unwrap();
        check(
            &format!("{name} encode_latents"),
            &scaled,
            &(&r[&format!("{name}.latents")] * vq.config.scaling_factor),
        );
    }
}

fn cases() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn wordpiece_tokenizer_matches_transformers() {
    use diffgraph_nodes_sd::wordpiece::WordPieceTokenizer;
    let dir = fixtures().join("ldm-text2im-tiny/tokenizer");
    let tokenizer = WordPieceTokenizer::from_folder(&dir).unwrap();
    let c = cases();
    let prompts = c["prompts"].as_array().unwrap();
    let want = c["prompt_ids"].as_array().unwrap();
    for (prompt, want) in prompts.iter().zip(want) {
        let want: Vec<i64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let (ids, dropped) = tokenizer.encode_padded(prompt.as_str().unwrap());
        assert_eq!(ids, want, "prompt {prompt}");
        assert_eq!(
            dropped > 0,
            prompt.as_str().unwrap().len() > 200,
            "{prompt}: truncation reported"
        );
    }
    // The same vocabulary read from tokenizer.json (folders saved by transformers 5).
    let copy = std::env::temp_dir().join(format!("diffgraph-wordpiece-{}", std::process::id()));
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir.join(f), copy.join(f)).unwrap();
    }
    let from_json = WordPieceTokenizer::from_folder(&copy).unwrap();
    for prompt in prompts {
        let p = prompt.as_str().unwrap();
        assert_eq!(from_json.encode_padded(p), tokenizer.encode_padded(p));
    }
    std::fs::remove_dir_all(&copy).unwrap();
}

#[test]
fn ldmbert_matches_diffusers() {
    use diffgraph_nodes_sd::ldmbert::LdmBert;
    tch::set_num_threads(1);
    let r = reference();
    let bert = LdmBert::from_folder(
        &fixtures().join("ldm-text2im-tiny/bert"),
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    let out = bert.forward(&r["bert.ids"]).unwrap();
    check("LDMBert last hidden state, 5 prompts", &out, &r["bert.out"]);
    let bad = Tensor::from_slice(&[0i64, 999]).view([1, 2]);
    assert!(bert
        .forward(&bad)
        .unwrap_err()
        .contains("must be in 0..110"));
}
