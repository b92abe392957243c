//! What running jobs in a supervised worker process costs (`diffgraph::worker`,
//! as `diffgraph serve` does), measured against the same graphs run
//! in-process: per job (a trivial graph) and per loop step (each step is one
//! progress event serialised, piped and parsed). Also through the server:
//! POST /prompt to `execution_success` for the demo model, cold and warm,
//! and jobs per second on a trivial graph.
//! Run: `cargo build --release --workspace && cargo bench -p diffgraph --bench isolation`.
#[path = "../tests/serve_support/mod.rs"]
mod serve_support;

use diffgraph::exec::{Event, Observer};
use diffgraph::worker::{JobEnd, Supervisor, WorkerCommand};
use diffgraph::{report, Executor, Registry};
use serde_json::json;
use serve_support::common;
use std::time::{Duration, Instant};

const TRIVIAL: &str = r#"{"nodes": {"a": {"type": "AddInt", "inputs": {"a": 1}}, "out": {"type": "Sink", "inputs": {"x": ["a", "sum"]}}}}"#;

/// A loop of `steps` AddInt steps; `init` differs per run so that nothing
/// comes from the cache.
fn looped(steps: usize, init: i64) -> String {
    json!({ "nodes": {
        "l": { "type": "Loop", "inputs": { "over": steps, "acc": init },
               "body": { "add": { "type": "AddInt", "inputs": { "a": ["l", "acc"], "b": ["l", "index"] } } },
               "next": { "acc": ["add", "sum"] } },
        "out": { "type": "Sink", "inputs": { "x": ["l", "acc"] } }
    }})
    .to_string()
}

/// What the worker does per event, minus the pipe: serialise it.
struct JsonEvents;
impl Observer for JsonEvents {
    fn event(&self, e: &Event) {
        std::hint::black_box(report::event_json(e).to_string());
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time(n: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    diffgraph::device::init();
    let testnodes = common::plugin_path("diffgraph_testnodes");
    let mut registry = Registry::new();
    registry.load_file(&testnodes).unwrap();
    let mut exec = Executor::new(registry);
    let mut in_process = |text: &str| {
        let checked = diffgraph::parse_graph(text, &[], &exec.registry, true).unwrap();
        exec.run(&checked, None, &JsonEvents).unwrap();
    };
    let mut sup = Supervisor::new(WorkerCommand {
        program: common::diffgraph_bin(),
        args: vec!["worker".into(), "--plugins".into(), testnodes.into()],
    });
    let start = sup.start().unwrap();
    let mut k = 0;
    let mut isolated = |text: &str| {
        k += 1;
        match sup.run(&k.to_string(), text, &mut |_| {}) {
            JobEnd::Done { .. } => {}
            other => panic!("{other:?}"),
        }
    };
    let steps = 10_000;
    let mut init = 0;
    let mut big = || {
        init += 1;
        looped(steps, init)
    };
    let job_in = time(301, || in_process(TRIVIAL));
    let job_iso = time(301, || isolated(TRIVIAL));
    let loop_in = time(7, || in_process(&big()));
    let loop_iso = time(7, || isolated(&big()));
    println!(
        "worker start (spawn + load the testing plugin): {:.1} ms",
        start * 1e3
    );
    println!(
        "trivial job, in-process: {:.3} ms; in the worker: {:.3} ms; isolation per job: {:.3} ms",
        job_in * 1e3,
        job_iso * 1e3,
        (job_iso - job_in) * 1e3
    );
    let (si, sw) = (loop_in / steps as f64, loop_iso / steps as f64);
    println!("loop step, in-process (events serialised): {:.2} us; in the worker: {:.2} us; isolation per step: {:.2} us", si * 1e6, sw * 1e6, (sw - si) * 1e6);

    // Through the server (its worker starts with the server).
    let dir = tempfile::tempdir().unwrap();
    let server = serve_support::Server::start(dir.path(), &[]);
    let demo: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(serve_support::repo_root().join("graphs/demo.json")).unwrap(),
    )
    .unwrap();
    let mut ws = server.ws("bench");
    ws.next();
    let mut demo_job = |seed: u64| {
        let mut g = demo.clone();
        g["nodes"]["noise"]["inputs"]["seed"] = seed.into();
        let t = Instant::now();
        let id = server.queue(&g, Some("bench"));
        loop {
            let m = ws.next();
            if m["type"] == "execution_success" && m["data"]["prompt_id"] == id.as_str() {
                return t.elapsed().as_secs_f64();
            }
        }
    };
    let cold = demo_job(1);
    let warm = median((2..7).map(&mut demo_job).collect());
    println!("demo model, POST /prompt to execution_success: cold {:.2} s, warm (model cached; median of 5) {:.2} s", cold, warm);
    let n = 200;
    let t = Instant::now();
    let ids: Vec<String> = (0..n)
        .map(|i| server.queue(&serve_support::image_graph(i, &format!("bench/{i}")), None))
        .collect();
    server.wait_idle(Duration::from_secs(300));
    let rate = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(
        server.get("/history").1.as_object().unwrap().len(),
        n as usize + 6
    );
    drop(ids);
    println!("trivial image graph (noise -> PNG 8x8), {n} jobs queued at once: {rate:.0} jobs/s");
}
