//! diffgraph's side of `scripts/bench/sd.sh` (a): graphs/txt2img_sd1.json on
//! the tiny SD1 model (Euler, 20 steps, guidance 7.5, 16x24): checkpoint load
//! time (the LoadCheckpoint node), then the median generation time of 5 runs
//! with different seeds (the loaded model served from the cache, as a
//! long-running host does), and peak memory. Prints one JSON object.
use diffgraph::graph::overrides::Override;
use diffgraph::{Event, Executor, Observer, Registry};
use std::cell::Cell;
use std::path::Path;
use std::time::Instant;

struct LoadTime(Cell<f64>);
impl Observer for LoadTime {
    fn event(&self, e: &Event) {
        if let Event::NodeDone {
            id: "ckpt",
            seconds,
        } = e
        {
            self.0.set(*seconds);
        }
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: 0 kB");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let threads: i32 = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    tch::set_num_threads(threads);
    diffgraph::device::init();
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().and_then(|d| d.parent()).unwrap();
    let mut registry = Registry::new();
    for p in ["core", "sampling", "sd", "guidance"] {
        registry
            .load_file(&target.join(format!("libdiffgraph_nodes_{p}.so")))
            .expect("build the workspace first");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root).unwrap();
    let graph = root.join("graphs/txt2img_sd1.json");
    let mut exec = Executor::new(registry);
    exec.set_output_dir(
        std::env::temp_dir()
            .join("diffgraph-bench")
            .to_string_lossy(),
    );
    let load = LoadTime(Cell::new(0.0));
    let mut times = Vec::new();
    for seed in 0..6 {
        let set: Override = format!("noise.seed={seed}").parse().unwrap();
        let checked =
            diffgraph::load_graph(&graph, &[set], &exec.registry, true).expect("valid graph");
        let t = Instant::now();
        exec.run(&checked, None, &load).expect("run");
        let s = t.elapsed().as_secs_f64();
        if seed == 0 {
            times.push(s - load.0.get()); // the first run's generation, without the load
        } else {
            times.push(s);
        }
    }
    let mut timed = times[1..].to_vec();
    timed.sort_by(f64::total_cmp);
    println!(
        "{{\"load_s\": {:.4}, \"generate_s\": {:.4}, \"peak_rss_mib\": {:.0}}}",
        load.0.get(),
        timed[timed.len() / 2],
        peak_rss_mib()
    );
}
