//! SDXL LoRA parity with diffusers, fp32 on CPU: the tiny SDXL base
//! (tests/fixtures/sdxl/sdxl-tiny) patched with
//! tests/fixtures/lora/sdxl/{peft, kohya, kohya_diffusers}.safetensors at
//! strengths 0.5 and 1.0, against `pipe.load_lora_weights(file)` +
//! `pipe.fuse_lora(lora_scale=strength)` (reference.safetensors, written by
//! scripts/fixtures/make_sdxl_lora_fixtures.py): the U-Net's output with
//! its added conditioning, and `encode_prompt`'s concatenated hidden states
//! and pooled output (both text encoders patched). The kohya file names the
//! U-Net by its original sgm paths (`lora_unet_input_blocks_4_1_…`), the
//! encoders `lora_te1_` / `lora_te2_`, with `.alpha` (scale 0.5);
//! kohya_diffusers spells the U-Net by diffusers paths. Tolerance 1e-4.
use diffgraph_diffusion::PredictionType;
use diffgraph_nodes_sd::family::sdxl::SdxlUnet;
use diffgraph_nodes_sd::family::{Conditioning, Denoiser};
use diffgraph_nodes_sd::lora::{self, KeyIndex};
use diffgraph_nodes_sd::nodes::sdxl_loader;
use diffgraph_nodes_sd::weights::Weights;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;
const PROMPT: &str = "a small red circle in the top left on a blue background";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn patched_sdxl_unet_and_text_encoders_match_diffusers_fuse_lora() {
    tch::set_num_threads(1);
    let root = fixtures();
    let loaded =
        sdxl_loader::load(&root.join("sdxl/sdxl-tiny"), None, Kind::Float, Device::Cpu).unwrap();
    let unet = SdxlUnet::new(loaded.unet, PredictionType::Epsilon);
    let text = loaded.text.unwrap();
    let r = Weights::read_safetensors(&root.join("lora/sdxl/reference.safetensors")).unwrap();
    let t = r["timestep"].double_value(&[]);
    let cond = Conditioning {
        context: Some(r["context"].shallow_clone()),
        pooled: Some(r["pooled"].shallow_clone()),
        time_ids: Some(r["time_ids"].shallow_clone()),
        ..Default::default()
    };
    let run_unet = |u: &dyn Denoiser| tch::no_grad(|| u.predict(&r["sample"], t, &cond).unwrap());
    let lora_unet = unet.lora().expect("SDXL takes LoRA");
    let (i1, i2) = (
        text.first.as_ref().unwrap().model.index.clone(),
        text.second.model.index.clone(),
    );
    for kind in ["peft", "kohya", "kohya_diffusers"] {
        let file = lora::read_cached(&root.join(format!("lora/sdxl/{kind}.safetensors"))).unwrap();
        for strength in [0.5, 1.0] {
            let parts: [(&KeyIndex, f64); 3] = [
                (lora_unet.lora_index(), strength),
                (&i1, strength),
                (&i2, strength),
            ];
            let matched = lora::match_parts(&file, &parts).unwrap();
            assert!(
                matched.unmatched.is_empty(),
                "{kind}: {:?}",
                matched.unmatched
            );
            let mut patches = matched.patches.into_iter();
            let model = lora_unet.with_lora(patches.next().unwrap());
            let patched_text = text.with_lora(patches.next().unwrap(), patches.next().unwrap());
            let key = |what: &str| format!("{kind}_{strength:.1}_{what}");
            let d_unet = max_abs(&run_unet(&*model), &r[&key("unet")]);
            let out = patched_text.encode(PROMPT, 0).unwrap();
            let d_embeds = max_abs(&out.context, &r[&key("embeds")]);
            let d_pooled = max_abs(&out.pooled, &r[&key("pooled")]);
            println!(
                "{kind} at {strength}: U-Net {d_unet:.3e}, prompt embeds {d_embeds:.3e}, pooled {d_pooled:.3e}"
            );
            assert!(d_unet <= TOLERANCE, "{kind} {strength}: U-Net {d_unet:e}");
            assert!(
                d_embeds <= TOLERANCE,
                "{kind} {strength}: embeds {d_embeds:e}"
            );
            assert!(
                d_pooled <= TOLERANCE,
                "{kind} {strength}: pooled {d_pooled:e}"
            );
        }
    }
    // The loader's own handles are unpatched again when they compute.
    let out = text.encode(PROMPT, 0).unwrap();
    let d = [
        max_abs(&run_unet(&unet), &r["base_unet"]),
        max_abs(&out.context, &r["base_embeds"]),
        max_abs(&out.pooled, &r["base_pooled"]),
    ];
    println!("restored: {d:?}");
    assert!(d.iter().all(|d| *d <= TOLERANCE), "{d:?}");
}

#[test]
fn sdxl_unet_is_indexed_by_diffusers_and_original_paths() {
    let root = fixtures();
    let loaded =
        sdxl_loader::load(&root.join("sdxl/sdxl-tiny"), None, Kind::Float, Device::Cpu).unwrap();
    let unet = SdxlUnet::new(loaded.unet, PredictionType::Epsilon);
    let index = unet.lora().unwrap().lora_index();
    let q = Some("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight");
    for name in [
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    ] {
        assert_eq!(index.lookup(name), q, "{name}");
    }
    assert_eq!(
        index.lookup("lora_unet_label_emb_0_0"),
        Some("add_embedding.linear_1.weight")
    );
    assert_eq!(
        index.lookup("lora_unet_output_blocks_2_2_conv"),
        Some("up_blocks.0.upsamplers.0.conv.weight")
    );
    assert_eq!(index.lookup("lora_unet_input_blocks_4_1_nothing"), None);

    // The text encoders, with and without `text_model`, and the projection.
    let text = loaded.text.unwrap();
    let (te1, te2) = (
        &text.first.as_ref().unwrap().model.index,
        &text.second.model.index,
    );
    let q = Some("encoder.layers.0.self_attn.q_proj.weight");
    assert_eq!(
        te1.lookup("lora_te1_text_model_encoder_layers_0_self_attn_q_proj"),
        q
    );
    assert_eq!(
        te2.lookup("lora_te2_text_model_encoder_layers_0_self_attn_q_proj"),
        q
    );
    assert_eq!(
        te2.lookup("text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj"),
        q
    );
    assert_eq!(
        te2.lookup("lora_te1_text_model_encoder_layers_0_self_attn_q_proj"),
        None
    );
    assert_eq!(
        te2.lookup("lora_te2_text_projection"),
        Some("text_projection.weight")
    );
    // The refiner's one encoder is named as SD's (ComfyUI's model_lora_keys_clip).
    let refiner = sdxl_loader::load(
        &root.join("sdxl/sdxl-refiner-tiny"),
        None,
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    let only = refiner.text.unwrap().second.model.index.clone();
    assert_eq!(
        only.lookup("lora_te_text_model_encoder_layers_0_self_attn_q_proj"),
        q
    );
    assert_eq!(
        only.lookup("text_encoder.encoder.layers.0.self_attn.q_proj"),
        q
    );
    assert_eq!(
        only.lookup("lora_te2_text_model_encoder_layers_0_self_attn_q_proj"),
        None
    );
}
