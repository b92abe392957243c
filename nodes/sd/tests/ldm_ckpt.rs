//! Original CompVis latent-diffusion `.ckpt` files (Lightning checkpoints of
//! `LatentDiffusion`, with their YAML) loaded by LoadLDM's `.ckpt` path, vs
//! CompVis' own code: tests/fixtures/ldm/ckpt/ made by
//! scripts/fixtures/make_ldm_ckpt_fixtures.py (tiny random models, weights
//! float16-rounded, computed in float32). Tolerance 1e-4 (fp32 CPU).
mod ldm_common;

use diffgraph_diffusion::ConfigName;
use diffgraph_nodes_sd::family::Conditioning;
use diffgraph_nodes_sd::nodes::ldm_ckpt::{load, CkptInputs, LoadedCkpt};
use diffgraph_nodes_sd::weights::Weights;
use ldm_common::check;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    ldm_common::fixtures().join("ckpt")
}

fn load_ckpt(ckpt: &Path, config: &str, tokenizer: &str, kind: Kind) -> Result<LoadedCkpt, String> {
    let device = Device::Cpu;
    load(
        ckpt,
        &CkptInputs {
            config,
            tokenizer,
            kind,
            device,
        },
    )
}

fn reference() -> BTreeMap<String, Tensor> {
    Weights::read_safetensors(&fixtures().join("reference.safetensors")).unwrap()
}

fn loaded(name: &str) -> LoadedCkpt {
    load_ckpt(
        &fixtures().join(format!("{name}.ckpt")),
        "",
        "",
        Kind::Float,
    )
    .unwrap()
}

/// eps (x0 for the class model) per timestep, as the graph's UNetStep calls
/// it; sample i conditioned on row i of `{name}.y` or of `context`.
fn predict_with(
    m: &LoadedCkpt,
    r: &BTreeMap<String, Tensor>,
    name: &str,
    context: Option<&Tensor>,
) -> Tensor {
    let (x, t) = (&r[&format!("{name}.x")], &r[&format!("{name}.t")]);
    let rows: Vec<Tensor> = (0..x.size()[0])
        .map(|i| {
            let cond = Conditioning {
                class_labels: r.get(&format!("{name}.y")).map(|y| y.narrow(0, i, 1)),
                context: context.map(|c| c.narrow(0, i, 1)),
                ..Default::default()
            };
            let ti = t.int64_value(&[i]) as f64;
            m.model
                .denoiser
                .predict(&x.narrow(0, i, 1), ti, &cond)
                .unwrap()
        })
        .collect();
    Tensor::cat(&rows, 0)
}

fn predict(m: &LoadedCkpt, r: &BTreeMap<String, Tensor>, name: &str) -> Tensor {
    predict_with(m, r, name, None)
}

fn parts_match(name: &str) {
    tch::set_num_threads(1);
    let r = reference();
    let m = loaded(name);
    check(
        &format!("{name}: U-Net (apply_model)"),
        &predict(&m, &r, name),
        &r[&format!("{name}.eps")],
    );
    let z = &r[&format!("{name}.z")];
    check(
        &format!("{name}: decode_first_stage"),
        &m.vae.decode(z).unwrap(),
        &r[&format!("{name}.decoded")],
    );
    check(
        &format!("{name}: decode_first_stage(force_not_quantize)"),
        &m.vae.decode_with(z, true).unwrap(),
        &r[&format!("{name}.decoded_nq")],
    );
    check(
        &format!("{name}: get_first_stage_encoding(encode_first_stage)"),
        &m.vae
            .encode_latents(&r[&format!("{name}.image")], None)
            .unwrap(),
        &r[&format!("{name}.encoded")],
    );
}

#[test]
fn unconditional_ckpt_matches_compvis() {
    parts_match("uncond");
    let m = loaded("uncond");
    assert_eq!((m.image_size, m.num_classes), (16, 0));
    assert_eq!(m.prediction.name(), "epsilon");
    let s: serde_json::Value = serde_json::from_str(&m.scheduler_config).unwrap();
    assert_eq!(s["beta_schedule"], "scaled_linear");
    assert_eq!(
        (s["beta_start"].as_f64(), s["beta_end"].as_f64()),
        (Some(0.0015), Some(0.0195))
    );
    assert_eq!(
        (s["steps_offset"].as_i64(), s["set_alpha_to_one"].as_bool()),
        (Some(1), Some(false))
    );
}

/// `dtype` fp16: the U-Net's torso in float16 as openaimodel.py's
/// `convert_to_fp16` (norms, embeddings, head in float32), the first stage
/// in float16; within float16's precision of the float32 reference.
#[test]
fn half_precision_loads_and_stays_close() {
    let r = reference();
    let m = load_ckpt(&fixtures().join("uncond.ckpt"), "", "", Kind::Half).unwrap();
    let d = (predict(&m, &r, "uncond") - &r["uncond.eps"])
        .abs()
        .max()
        .double_value(&[]);
    println!("fp16 U-Net: max abs diff {d:.3e}");
    assert!(d < 1e-3, "fp16 U-Net: {d:e}");
    let image = m
        .vae
        .decode_with(&r["uncond.z"], true)
        .unwrap()
        .to_kind(Kind::Float);
    let d = (image - &r["uncond.decoded_nq"])
        .abs()
        .max()
        .double_value(&[]);
    println!("fp16 decoder: max abs diff {d:.3e}");
    assert!(d < 1e-3, "fp16 decoder: {d:e}");
}

#[test]
fn class_conditional_x0_ckpt_matches_compvis() {
    parts_match("class");
    let m = loaded("class");
    assert_eq!((m.image_size, m.num_classes), (16, 10));
    assert_eq!(m.prediction.name(), "sample");
}

fn tokenizer() -> PathBuf {
    ldm_common::fixtures().join("ldm-text2im-tiny/tokenizer")
}

/// The text-to-image model (crossattn, BERTEmbedder, spatial-transformer
/// U-Net, KL first stage): BERTTokenizer's ids, the BERTEmbedder's output,
/// the U-Net on that context and the decoder, each against CompVis.
#[test]
fn text_to_image_ckpt_matches_compvis() {
    tch::set_num_threads(1);
    let r = reference();
    let tok = tokenizer();
    let m = load_ckpt(
        &fixtures().join("text.ckpt"),
        "",
        tok.to_str().unwrap(),
        Kind::Float,
    )
    .unwrap();
    assert_eq!((m.image_size, m.num_classes), (16, 0));
    assert_eq!(m.prediction.name(), "epsilon");
    let bert = m.bert.as_ref().expect("a text encoder");
    let prompts = [
        "a red cat eating a burger",
        "oil painting of a small dog",
        "",
    ];
    let ids: Vec<i64> = prompts
        .iter()
        .flat_map(|p| bert.tokenizer.encode_padded(p).0)
        .collect();
    let ids = Tensor::from_slice(&ids).view([3, -1]);
    assert!(
        ids.equal(&r["text.tokens"]),
        "token ids differ from BERTTokenizer's"
    );
    let context = bert.model.forward(&ids).unwrap();
    check("text: BERTEmbedder", &context, &r["text.context"]);
    check(
        "text: U-Net (apply_model)",
        &predict_with(&m, &r, "text", Some(&context)),
        &r["text.eps"],
    );
    check(
        "text: decode_first_stage",
        &m.vae.decode(&r["text.z"]).unwrap(),
        &r["text.decoded"],
    );
}

/// The ImageNet model (crossattn with a ClassEmbedder, cin256-v2.yaml in
/// small): labels through the embedding into the U-Net's cross-attention.
#[test]
fn class_embedder_ckpt_matches_compvis() {
    tch::set_num_threads(1);
    let r = reference();
    let m = load_ckpt(&fixtures().join("cin.ckpt"), "", "", Kind::Float).unwrap();
    assert_eq!((m.image_size, m.num_classes), (16, 11));
    assert!(m.bert.is_none());
    check(
        "cin: U-Net (apply_model)",
        &predict(&m, &r, "cin"),
        &r["cin.eps"],
    );
    check(
        "cin: decode_first_stage",
        &m.vae.decode(&r["cin.z"]).unwrap(),
        &r["cin.decoded"],
    );
    let x = r["cin.x"].narrow(0, 0, 1);
    let out_of_range = Conditioning {
        class_labels: Some(Tensor::from_slice(&[11i64])),
        ..Default::default()
    };
    let err = m
        .model
        .denoiser
        .predict(&x, 3.0, &out_of_range)
        .err()
        .unwrap();
    assert!(err.to_string().contains("0..11"), "{err}");
}

/// The vocabulary a text-to-image `.ckpt` lacks is asked for by name; one
/// given to an image model is refused; a wrong vocabulary file is named.
#[test]
fn the_text_models_vocabulary_is_required() {
    let text = fixtures().join("text.ckpt");
    let err = load_ckpt(&text, "", "", Kind::Float).err().unwrap();
    assert!(
        err.contains("`tokenizer`") && err.contains("bert-base-uncased"),
        "{err}"
    );
    let vocab = tokenizer().join("vocab.txt");
    assert!(load_ckpt(&text, "", vocab.to_str().unwrap(), Kind::Float).is_ok());
    let uncond = fixtures().join("uncond.ckpt");
    let err = load_ckpt(&uncond, "", vocab.to_str().unwrap(), Kind::Float)
        .err()
        .unwrap();
    assert!(err.contains("not conditioned on text"), "{err}");
    let err = load_ckpt(&text, "", "/nonexistent/vocab.txt", Kind::Float)
        .err()
        .unwrap();
    assert!(err.contains("/nonexistent/vocab.txt"), "{err}");
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("diffgraph-ldm-ckpt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_bad_key_is_listed() {
    let mut sd = diffgraph_checkpoint::read_state_dict(&fixtures().join("uncond.ckpt")).unwrap();
    sd.remove("model.diffusion_model.out.2.bias");
    sd.remove("first_stage_model.quantize.embedding.weight");
    sd.insert(
        "model.diffusion_model.input_blocks.0.0.weight".into(),
        Tensor::zeros([32, 3, 1, 1], (Kind::Float, Device::Cpu)),
    );
    sd.insert(
        "cond_stage_model.embedding.weight".into(),
        Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
    );
    sd.insert(
        "first_stage_model.decoder.extra.weight".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    );
    let d = temp("bad");
    let file = d.join("bad.safetensors");
    let named: Vec<(String, Tensor)> = sd.into_iter().collect();
    Tensor::write_safetensors(&named, &file).unwrap();
    std::fs::copy(fixtures().join("uncond.yaml"), d.join("bad.yaml")).unwrap();
    let err = load_ckpt(&file, "", "", Kind::Float).err().unwrap();
    println!("{err}");
    for part in [
        "out.2.bias",
        "quantize.embedding.weight",
        "input_blocks.0.0.weight",
        "cond_stage_model.embedding.weight",
        "first_stage_model.decoder.extra.weight",
    ] {
        assert!(err.contains(part), "{part} not listed in: {err}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn the_yaml_is_required_and_checked() {
    let d = temp("yaml");
    let ckpt = d.join("model.ckpt");
    std::fs::copy(fixtures().join("uncond.ckpt"), &ckpt).unwrap();
    let err = load_ckpt(&ckpt, "", "", Kind::Float).err().unwrap();
    assert!(
        err.contains("model.yaml") && err.contains("`config`"),
        "{err}"
    );
    // Passed explicitly, from anywhere.
    let yaml = fixtures().join("uncond.yaml");
    assert!(load_ckpt(&ckpt, yaml.to_str().unwrap(), "", Kind::Float).is_ok());
    // A cond stage that is not built is refused by name; a cross-attention
    // cond stage without the spatial transformer too.
    for (stage, expected) in [
        ("FrozenCLIPEmbedder", "FrozenCLIPEmbedder"),
        ("ClassEmbedder", "use_spatial_transformer"),
    ] {
        let text = std::fs::read_to_string(&yaml).unwrap().replace(
            "cond_stage_config: __is_unconditional__",
            &format!("conditioning_key: crossattn\n    cond_stage_config:\n      target: ldm.modules.encoders.modules.{stage}\n      params:\n        embed_dim: 8"),
        );
        let other = d.join("other.yaml");
        std::fs::write(&other, text).unwrap();
        let err = load_ckpt(&ckpt, other.to_str().unwrap(), "", Kind::Float)
            .err()
            .unwrap();
        assert!(err.contains(expected), "{stage}: {err}");
    }
    // Concat conditioning (LatentDiffusion's default key) is refused by name.
    let text = std::fs::read_to_string(&yaml).unwrap().replace(
        "cond_stage_config: __is_unconditional__",
        "cond_stage_config:\n      target: torch.nn.Identity",
    );
    let concat = d.join("concat.yaml");
    std::fs::write(&concat, text).unwrap();
    let err = load_ckpt(&ckpt, concat.to_str().unwrap(), "", Kind::Float)
        .err()
        .unwrap();
    assert!(err.contains("concat"), "{err}");
    // The wrong architecture: every mis-shaped key named.
    let text = std::fs::read_to_string(&yaml)
        .unwrap()
        .replace("model_channels: 32", "model_channels: 64");
    let wide = d.join("wide.yaml");
    std::fs::write(&wide, text).unwrap();
    let err = load_ckpt(&ckpt, wide.to_str().unwrap(), "", Kind::Float)
        .err()
        .unwrap();
    assert!(err.contains("time_embed.0.weight"), "{err}");
    std::fs::remove_dir_all(&d).ok();
    assert!(!Path::new(&d).exists());
}
