//! diffgraph's side of `scripts/bench/sd.sh` (b): one guided U-Net step of an
//! SD1.5-size U-Net with random weights, batch 2 (uncond + cond) at 64x64,
//! plus the CFG mix, exactly what UNetStep + CFGMixer do per iteration.
//! Usage: `cargo bench -p diffgraph-nodes-sd --bench unet_step -- fp32|bf16`.
//! Prints one JSON object: median of 3 timed steps (`BENCH_STEPS`) after one
//! warm-up. `BENCH_CONV=alternate` also times libtorch's own convolution
//! kernels in the same run (`step_libtorch_conv_s`, see
//! `diffgraph_nodes_sd::conv`, `cpu_kernels::small_conv` and `winograd`); `BENCH_OP_THREADS=alternate` also times every
//! op at the full thread count (`step_all_ops_threaded_s`, see
//! `diffgraph_nodes_sd::op_threads`); `BENCH_SMALL_ATTENTION=alternate` also
//! times libtorch's attention kernel where diffgraph's small-head kernel
//! applies (`step_libtorch_attention_s`); `BENCH_WINOGRAD=alternate` times
//! steps without the Winograd convolutions (`step_no_winograd_s`). `--folder UNET_DIR --latent S` time
//! another U-Net (e.g. the tiny test model) at S x S.
//!
//! Parity mode (`scripts/bench/unet_parity.sh`): `-- fp32 --folder UNET_DIR
//! --parity IO_FILE` runs diffusers' saved input through the same weights and
//! prints the largest difference to diffusers' saved output.
//!
//! Op-count mode (`scripts/bench/unet_ops.sh`): `-- fp32 --calls N [--latent
//! S] [--folder UNET_DIR]` makes the U-Net (SD1.5-size random, or loaded from a
//! diffusers `unet/` folder), then calls only `UNet::forward` N times on one
//! fixed batch-2 input of S x S (default 64) and prints nothing; the aten-op
//! counter preloaded into the process (scripts/bench/opcount.cpp) counts, and
//! the difference of two runs (N = 3 and N = 1) / 2 is one call's ops.
use diffgraph_nodes_sd::cpu_kernels::{small_attention, small_conv, winograd};
use diffgraph_nodes_sd::unet::{OneOrMany, UNet, UNetConfig};
use diffgraph_nodes_sd::{conv, op_threads};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How one timed step runs: the JSON field it is reported under and the
/// kernel choices it makes.
#[derive(Clone, Copy)]
struct Policy {
    field: &'static str,
    gemm_max_output: i64,
    small_ops_serial: bool,
    small_attention: bool,
    small_conv: bool,
    winograd: bool,
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    let dtype = std::env::args()
        .skip(1)
        .find(|a| a == "fp32" || a == "bf16")
        .unwrap_or_else(|| "fp32".into());
    let kind = if dtype == "bf16" {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    let threads: i32 = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    tch::set_num_threads(threads);
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let unet = match flag("--folder") {
        Some(dir) => UNet::from_folder(Path::new(&dir), kind, Device::Cpu).expect("unet folder"),
        None => {
            let config = UNetConfig {
                cross_attention_dim: OneOrMany::One(768),
                ..UNetConfig::default()
            };
            UNet::random(&config, kind, Device::Cpu, 0).expect("SD1.5 config")
        }
    };
    if let Some(file) = flag("--parity") {
        // scripts/bench/unet_parity.sh: diffusers' input and output, same weights.
        let io: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&file)
            .expect("io.safetensors")
            .into_iter()
            .collect();
        // `policy` 0: libtorch's convolutions alone (no GEMM form, no
        // Winograd, no small kernel).
        let err = |policy: i64| {
            conv::set_gemm_max_output_positions(policy);
            winograd::ENABLED.set(policy != 0);
            small_conv::ENABLED.set(policy != 0);
            let ours = tch::no_grad(|| unet.forward(&io["x"], 981.0, &io["ctx"]));
            (&ours - &io["out"]).abs().max().double_value(&[])
        };
        let (libtorch_conv, chosen) = (err(0), err(conv::GEMM_MAX_OUTPUT_POSITIONS));
        let scale = io["out"].abs().max().double_value(&[]);
        println!(
            "{{\"max_abs\": {chosen:.3e}, \"max_abs_libtorch_conv\": {libtorch_conv:.3e}, \"output_max_abs\": {scale:.3}}}"
        );
        return;
    }
    if let Some(calls) = flag("--calls") {
        let calls: usize = calls.parse().expect("--calls N");
        let size: i64 = flag("--latent").map_or(64, |s| s.parse().expect("--latent S"));
        let ctx_dim = unet.cross_attention_dim();
        tch::manual_seed(1);
        let x = Tensor::randn([2, 4, size, size], (Kind::Float, Device::Cpu)).to_kind(kind);
        let ctx = Tensor::randn([2, 77, ctx_dim], (Kind::Float, Device::Cpu)).to_kind(kind);
        for _ in 0..calls {
            let _ = unet.forward(&x, 981.0, &ctx);
        }
        return;
    }
    // The timed step: batch 2 at S x S (`--latent`, default 64) with the
    // model's own channels and context width (`--folder` for another U-Net).
    let size: i64 = flag("--latent").map_or(64, |s| s.parse().expect("--latent S"));
    let ctx_dim = unet.cross_attention_dim();
    tch::manual_seed(1);
    let sample = Tensor::randn(
        [1, unet.config.in_channels, size, size],
        (Kind::Float, Device::Cpu),
    );
    let cond = Tensor::randn([1, 77, ctx_dim], (Kind::Float, Device::Cpu));
    let uncond = Tensor::randn([1, 77, ctx_dim], (Kind::Float, Device::Cpu));
    let steps: usize = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // BENCH_CONV=alternate: every timed step runs twice, once with the
    // convolution kernels diffgraph chooses and once with libtorch's alone
    // (diffgraph_nodes_sd::conv, cpu_kernels::small_conv and winograd); BENCH_OP_THREADS=alternate: once with small
    // ops on one thread and once at the full count (diffgraph_nodes_sd::op_threads);
    // BENCH_SMALL_ATTENTION=alternate: once with diffgraph's small-head
    // attention kernel and once with libtorch's (diffgraph_nodes_sd::cpu_kernels::small_attention);
    // BENCH_WINOGRAD=alternate: once with and once without the Winograd
    // convolutions (diffgraph_nodes_sd::cpu_kernels::winograd).
    // Alternating, so both see the same machine.
    let alternate = |var: &str| std::env::var(var).is_ok_and(|v| v == "alternate");
    let chosen = Policy {
        field: "step_s",
        gemm_max_output: conv::GEMM_MAX_OUTPUT_POSITIONS,
        small_ops_serial: true,
        small_attention: true,
        small_conv: true,
        winograd: true,
    };
    let mut policies = vec![chosen];
    if alternate("BENCH_CONV") {
        policies.push(Policy {
            field: "step_libtorch_conv_s",
            gemm_max_output: 0,
            small_conv: false,
            winograd: false,
            ..chosen
        });
    }
    if alternate("BENCH_OP_THREADS") {
        policies.push(Policy {
            field: "step_all_ops_threaded_s",
            small_ops_serial: false,
            ..chosen
        });
    }
    if alternate("BENCH_WINOGRAD") {
        policies.push(Policy {
            field: "step_no_winograd_s",
            winograd: false,
            ..chosen
        });
    }
    if alternate("BENCH_SMALL_ATTENTION") {
        policies.push(Policy {
            field: "step_libtorch_attention_s",
            small_attention: false,
            ..chosen
        });
    }
    let mut times = vec![Vec::new(); policies.len()];
    for step in 0..=steps {
        for (i, policy) in policies.iter().enumerate() {
            conv::set_gemm_max_output_positions(policy.gemm_max_output);
            op_threads::ENABLED.set(policy.small_ops_serial);
            small_attention::ENABLED.set(policy.small_attention);
            small_conv::ENABLED.set(policy.small_conv);
            winograd::ENABLED.set(policy.winograd);
            let t = Instant::now();
            let x = Tensor::cat(&[&sample, &sample], 0);
            let ctx = Tensor::cat(&[&uncond, &cond], 0);
            let out = unet.forward(&x, 981.0, &ctx).to_kind(Kind::Float);
            let halves = out.chunk(2, 0);
            let _mixed = &halves[0] + (&halves[1] - &halves[0]) * 7.5;
            if step > 0 {
                times[i].push(t.elapsed().as_secs_f64());
            }
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let fields: Vec<String> = policies
        .iter()
        .zip(&mut times)
        .map(|(policy, t)| format!("\"{}\": {:.4}", policy.field, median(t)))
        .collect();
    println!(
        "{{{}, \"peak_rss_mib\": {:.0}}}",
        fields.join(", "),
        peak_rss_mib()
    );
}
