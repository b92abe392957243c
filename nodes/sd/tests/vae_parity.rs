//! VAE parity with diffusers' AutoencoderKL and VaeImageProcessor, fp32 on
//! CPU, against tests/fixtures/sd/reference/{sd1,sd2v}-vae.safetensors
//! (written by scripts/fixtures/make_vae_reference.py).
use diffgraph_nodes_sd::vae::{to_pixels, to_pixels_u8, Vae};
use diffgraph_nodes_sd::weights::Weights;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sd")
}

fn load(model: &str, reference: &str) -> (Vae, BTreeMap<String, Tensor>) {
    let root = fixtures();
    let vae = Vae::from_folder(&root.join(model).join("vae"), Kind::Float, Device::Cpu).unwrap();
    let refs = Weights::read_safetensors(
        &root
            .join("reference")
            .join(format!("{reference}-vae.safetensors")),
    )
    .unwrap();
    (vae, refs)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn check(name: &str, what: &str, got: &Tensor, want: &Tensor) {
    let d = max_abs(got, want);
    println!("{name} {what}: max abs diff {d:.3e}");
    assert!(
        d <= TOLERANCE,
        "{name} {what}: max abs diff {d:e} > {TOLERANCE:e}"
    );
}

fn parity(model: &str, name: &str) {
    tch::set_num_threads(1);
    let (vae, r) = load(model, name);
    for tag in ["sq", "ns"] {
        let decoded = vae.decode(&r[&format!("decode_latents_{tag}")]).unwrap();
        let want = &r[&format!("decode_out_{tag}")];
        check(
            name,
            &format!("decode {tag} {:?}", want.size()),
            &decoded,
            want,
        );

        // The conversion itself is exact: applied to diffusers' decoder
        // output it reproduces diffusers' pixels bit for bit.
        let pixels_ref = &r[&format!("pixels_{tag}")];
        let u8_ref = &r[&format!("pixels_u8_{tag}")];
        assert!(
            to_pixels(want).equal(pixels_ref),
            "{name} {tag}: float pixels differ"
        );
        assert!(
            to_pixels_u8(want).equal(u8_ref),
            "{name} {tag}: u8 pixels differ"
        );

        // From our decoder output: the float pixels are within tolerance; a
        // u8 value may differ by one only where diffusers' value*255 lies
        // within 255 * tolerance of a rounding boundary (x.5).
        check(
            name,
            &format!("pixels {tag}"),
            &to_pixels(&decoded),
            pixels_ref,
        );
        let ours = to_pixels_u8(&decoded).to_kind(Kind::Int64);
        let diff = (&ours - u8_ref.to_kind(Kind::Int64)).abs();
        let differing = diff.ne(0);
        let n_diff = differing.sum(Kind::Int64).int64_value(&[]);
        assert!(
            diff.max().int64_value(&[]) <= 1,
            "{name} {tag}: u8 pixels differ by more than 1"
        );
        let frac = (pixels_ref.to_kind(Kind::Double) * 255.0).frac().abs();
        let near_half = (frac - 0.5).abs().le(255.0 * TOLERANCE);
        let unexplained = differing
            .logical_and(&near_half.logical_not())
            .sum(Kind::Int64)
            .int64_value(&[]);
        println!(
            "{name} pixels_u8 {tag}: {n_diff} of {} values differ by 1 (all at x.5 boundaries)",
            ours.numel()
        );
        assert_eq!(
            unexplained, 0,
            "{name} {tag}: u8 pixels differ away from rounding boundaries"
        );
    }

    let image = &r["encode_image"];
    let posterior = vae.encode(image).unwrap();
    check(name, "encode mean", &posterior.mean, &r["encode_mean"]);
    check(
        name,
        "encode logvar",
        &posterior.logvar,
        &r["encode_logvar"],
    );
    let sampled = vae.encode_latents(image, Some(&r["encode_noise"])).unwrap();
    check(
        name,
        "encode sample latents",
        &sampled,
        &r["encode_sample_latents"],
    );
    let mode = vae.encode_latents(image, None).unwrap();
    check(
        name,
        "encode mode latents",
        &mode,
        &r["encode_mode_latents"],
    );
}

#[test]
fn sd1_vae_matches_diffusers() {
    parity("sd1-tiny", "sd1");
}

#[test]
fn sd2v_vae_matches_diffusers() {
    parity("sd2v-tiny", "sd2v");
}

#[test]
fn wrong_latent_shape_is_an_error() {
    let (vae, _) = load("sd1-tiny", "sd1");
    let err = vae
        .decode(&Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu)))
        .unwrap_err();
    assert!(err.contains("[B, 4, H, W]"), "{err}");
}

#[test]
fn renamed_key_is_reported() {
    let dir = fixtures().join("sd1-tiny/vae");
    let config = diffgraph_nodes_sd::vae::VaeConfig::from_file(&dir.join("config.json")).unwrap();
    let mut tensors =
        Weights::read_safetensors(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let t = tensors.remove("decoder.conv_out.weight").unwrap();
    tensors.insert("decoder.conv_outt.weight".into(), t);
    let err = Vae::from_weights(
        &config,
        Weights::new(tensors, Kind::Float, Device::Cpu, "test"),
    )
    .err()
    .unwrap();
    assert!(
        err.contains("missing keys (1): decoder.conv_out.weight"),
        "{err}"
    );
    assert!(
        err.contains("unexpected keys (1): decoder.conv_outt.weight"),
        "{err}"
    );
}

/// The references of make_sd_fixtures.py (reference/vae_*.safetensors:
/// another latent size and image, decode without the scaling factor).
#[test]
fn matches_fixture_script_references() {
    tch::set_num_threads(1);
    for (model, name) in [("sd1-tiny", "sd1"), ("sd2v-tiny", "sd2v")] {
        let root = fixtures();
        let vae =
            Vae::from_folder(&root.join(model).join("vae"), Kind::Float, Device::Cpu).unwrap();
        let r = Weights::read_safetensors(&root.join(format!("reference/vae_{name}.safetensors")))
            .unwrap();
        let decoded = vae.decode_raw(&r["decode_in"]).unwrap();
        check(
            name,
            "decode_raw (fixture script)",
            &decoded,
            &r["decode_out"],
        );
        let posterior = vae.encode(&r["encode_in"]).unwrap();
        check(
            name,
            "encode mean (fixture script)",
            &posterior.mean,
            &r["encode_mean"],
        );
        check(
            name,
            "encode logvar (fixture script)",
            &posterior.logvar,
            &r["encode_logvar"],
        );
        check(
            name,
            "encode std (fixture script)",
            &posterior.std(),
            &r["encode_std"],
        );
    }
}
