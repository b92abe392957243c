//! LoRA parity with diffusers, fp32 on CPU: the tiny SD 1 model
//! (tests/fixtures/sd/sd1-tiny) patched with tests/fixtures/lora/{peft,
//! kohya}.safetensors at strengths 0.5 and 1.0, against
//! `pipe.load_lora_weights(file)` + `pipe.fuse_lora(lora_scale=strength)`
//! (tests/fixtures/lora/reference.safetensors, written by
//! scripts/fixtures/make_lora_fixtures.py). The LoRAs cover attention and
//! feed-forward Linears, 1x1 and 3x3 convolutions (LoCon) and every text
//! encoder projection; the kohya file carries `.alpha` (scale 0.5).
use diffgraph_diffusion::PredictionType;
use diffgraph_nodes_sd::clip::ClipTextModel;
use diffgraph_nodes_sd::family::sd::SdUnet;
use diffgraph_nodes_sd::family::{Conditioning, Denoiser};
use diffgraph_nodes_sd::lora;
use diffgraph_nodes_sd::nodes::loader::load;
use diffgraph_nodes_sd::weights::Weights;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

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
fn patched_unet_and_text_encoder_match_diffusers_fuse_lora() {
    tch::set_num_threads(1);
    let root = fixtures();
    let loaded = load(&root.join("sd/sd1-tiny"), None, Kind::Float, Device::Cpu).unwrap();
    let unet = SdUnet::new(loaded.unet, PredictionType::Epsilon);
    let clip = loaded.clip.unwrap();
    let r = Weights::read_safetensors(&root.join("lora/reference.safetensors")).unwrap();
    let t = r["timestep"].double_value(&[]);
    let cond = || Conditioning {
        context: Some(r["context"].shallow_clone()),
        ..Default::default()
    };
    let base_unet =
        |u: &dyn Denoiser| tch::no_grad(|| u.predict(&r["sample"], t, &cond()).unwrap());
    let text = |m: &lora::PatchedModel<ClipTextModel>| {
        let guard = m.lock().unwrap();
        tch::no_grad(|| guard.model.forward(&r["ids"], 0).unwrap())
    };
    let lora_unet = unet.lora().expect("SD takes LoRA");
    for kind in ["peft", "kohya"] {
        let file = lora::read_cached(&root.join(format!("lora/{kind}.safetensors"))).unwrap();
        for strength in [0.5, 1.0] {
            let parts = [
                (lora_unet.lora_index(), strength),
                (&*clip.model.index, strength),
            ];
            let matched = lora::match_parts(&file, &parts).unwrap();
            assert!(
                matched.unmatched.is_empty(),
                "{kind}: {:?}",
                matched.unmatched
            );
            let mut patches = matched.patches.into_iter();
            let model = lora_unet.with_lora(patches.next().unwrap());
            let text_model = clip.model.with(patches.next().unwrap().unwrap());
            let d_unet = max_abs(
                &base_unet(&*model),
                &r[&format!("{kind}_{strength:.1}_unet")],
            );
            let d_text = max_abs(
                &text(&text_model),
                &r[&format!("{kind}_{strength:.1}_text")],
            );
            println!(
                "{kind} at {strength}: U-Net max abs diff {d_unet:.3e}, text encoder {d_text:.3e}"
            );
            assert!(d_unet <= TOLERANCE, "{kind} {strength}: U-Net {d_unet:e}");
            assert!(
                d_text <= TOLERANCE,
                "{kind} {strength}: text encoder {d_text:e}"
            );
        }
    }
    // The loader's own handles are unpatched again when they compute.
    let d_unet = max_abs(&base_unet(&unet), &r["base_unet"]);
    let d_text = max_abs(&text(&clip.model), &r["base_text"]);
    println!("restored: U-Net {d_unet:.3e}, text encoder {d_text:.3e}");
    assert!(d_unet <= TOLERANCE && d_text <= TOLERANCE);
}
