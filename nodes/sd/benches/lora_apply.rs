//! LoRA apply time: a kohya-named LoRA of rank 128 (fp16, on every attention
//! projection, feed-forward and proj_in/out Linear: the usual SD1.5 LoRA
//! layout, ~144 MB class) on an SD1.5-size U-Net with random weights.
//! Usage: `cargo bench -p diffgraph-nodes-sd --bench lora_apply -- fp32|fp16`
//! (BENCH_THREADS, default 2; BENCH_UNET_CONFIG: another U-Net's config.json,
//! e.g. scripts/bench/sdxl_unet_config.json for an SDXL-size U-Net). Prints one JSON object: file size, read
//! (parse + content hash), first patch, re-sync with nothing changed,
//! strength change (every weight re-patched), a second LoRA stacked on a
//! quarter of the weights (only those re-patched), restore.
use diffgraph_nodes_sd::lora::{self, keys, PatchedModel};
use diffgraph_nodes_sd::unet::{OneOrMany, UNet, UNetConfig};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The LoRA's rank: 128 by default (SD1.5's ~144 MB class); BENCH_LORA_RANK
/// sets another (27 makes an SDXL LoRA of that size).
fn rank() -> i64 {
    std::env::var("BENCH_LORA_RANK")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(128)
}

fn is_lora_target(name: &str) -> bool {
    ["attn1.to_", "attn2.to_", "ff.net.", "proj_in.", "proj_out."]
        .iter()
        .any(|p| name.contains(p))
        && name.ends_with(".weight")
}

fn lora_file(unet: &UNet, every: usize, path: &std::path::Path) -> u64 {
    let mut tensors = Vec::new();
    for (i, (name, w)) in unet
        .params
        .iter()
        .filter(|(n, w)| is_lora_target(n) && w.dim() >= 2)
        .enumerate()
    {
        if i % every != 0 {
            continue;
        }
        let size = w.size();
        let (out, inp) = (size[0], size[1..].iter().product::<i64>());
        let kohya = format!(
            "lora_unet_{}",
            name.trim_end_matches(".weight").replace('.', "_")
        );
        let opts = (Kind::Float, Device::Cpu);
        let up = (Tensor::randn([out, rank()], opts) * 0.01).to_kind(Kind::Half);
        let down = (Tensor::randn([rank(), inp], opts) * 0.01).to_kind(Kind::Half);
        tensors.push((format!("{kohya}.lora_up.weight"), up));
        tensors.push((format!("{kohya}.lora_down.weight"), down));
        tensors.push((
            format!("{kohya}.alpha"),
            Tensor::from(64.0f32).to_kind(Kind::Half),
        ));
    }
    Tensor::write_safetensors(&tensors, path).expect("write the LoRA");
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn main() {
    let dtype = std::env::args()
        .skip(1)
        .find(|a| a == "fp32" || a == "fp16")
        .unwrap_or_else(|| "fp32".into());
    let kind = if dtype == "fp16" {
        Kind::Half
    } else {
        Kind::Float
    };
    let threads: i32 = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    tch::set_num_threads(threads);
    // BENCH_UNET_CONFIG: another U-Net's config.json (e.g. the SDXL base's,
    // scripts/bench/sdxl_unet_config.json); default SD1.5's.
    let config = match std::env::var("BENCH_UNET_CONFIG") {
        Ok(path) => {
            UNetConfig::from_json(&std::fs::read_to_string(&path).expect("read the config"))
                .expect("a U-Net config")
        }
        Err(_) => UNetConfig {
            cross_attention_dim: OneOrMany::One(768),
            ..UNetConfig::default()
        },
    };
    let mut unet = UNet::random(&config, kind, Device::Cpu, 0).expect("the U-Net config");
    let dir = tempfile_dir();
    let (big, small) = (dir.join("big.safetensors"), dir.join("small.safetensors"));
    let bytes = lora_file(&unet, 1, &big);
    lora_file(&unet, 4, &small);
    let params = std::mem::take(&mut unet.params);
    let model = PatchedModel::new(unet, params, keys::UNET);
    // Wall seconds, and this process's CPU seconds (the machine is shared).
    let cpu = std::cell::Cell::new(0.0);
    let time = |f: &mut dyn FnMut()| {
        let (t, c) = (Instant::now(), cpu_seconds());
        f();
        cpu.set(cpu.get() + cpu_seconds() - c);
        t.elapsed().as_secs_f64()
    };
    let mut file = None;
    let read_s = time(&mut || file = Some(lora::read_cached(&big).unwrap()));
    let file = file.unwrap();
    let small = lora::read_cached(&small).unwrap();
    let patch = |f: &std::sync::Arc<lora::LoraFile>, s: f64| {
        let m = lora::match_parts(f, &[(&model.index, s)]).unwrap();
        assert!(m.unmatched.is_empty());
        m.patches.into_iter().next().flatten().unwrap()
    };
    let (p1, p05, ps) = (patch(&file, 1.0), patch(&file, 0.5), patch(&small, 1.0));
    let weights = p1.targets.len();
    let at = |list: Vec<lora::Patch>| {
        let mut handle = model.clone();
        for p in list {
            handle = handle.with(p);
        }
        time(&mut || drop(handle.lock().unwrap()))
    };
    cpu.set(0.0);
    let first = at(vec![p1.clone()]);
    let first_cpu = cpu.get();
    let again = at(vec![p1.clone()]);
    let strength = at(vec![p05.clone()]);
    let stacked = at(vec![p05, ps]);
    let restore = at(vec![]);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{{\"dtype\": \"{dtype}\", \"lora_mb\": {:.1}, \"weights\": {weights}, \"read_s\": {read_s:.3}, \
         \"first_patch_s\": {first:.3}, \"first_patch_cpu_s\": {first_cpu:.3}, \"unchanged_s\": {again:.4}, \"strength_change_s\": {strength:.3}, \
         \"stack_quarter_s\": {stacked:.3}, \"restore_s\": {restore:.3}}}",
        bytes as f64 / 1e6
    );
}

/// User + system CPU seconds of this process (/proc/self/stat, 100 Hz ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("diffgraph-lora-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
