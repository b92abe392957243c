//! Scale-out on Redis Streams (issue 19): a front-end (`serve --queue`) and
//! several `worker --queue` processes around a real redis-server on a free
//! loopback port. Many clients, exactly-once results, model affinity.
//! Faults (a worker SIGKILLed mid-job, dead letters, Redis restarted):
//! `scale_out_faults.rs`.
mod scale_out_support;

use scale_out_support::*;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// 1 front-end + 3 workers, 60 jobs from 4 concurrent WebSocket clients:
/// every job completes exactly once (one `execution_success` to its own
/// client, one history entry, one image), and the front-end serves the
/// histories and images the workers produced. A second front-end on the same
/// Redis: half the clients post to one and listen on the other (a load
/// balancer may split them so).
#[test]
fn three_workers_run_sixty_jobs_from_four_clients_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), false);
    let url = redis.url();
    let fronts = [
        Server::start(dir.path(), &["--queue", &url]),
        Server::start(dir.path(), &["--queue", &url]),
    ];
    let server = &fronts[0];
    let _workers: Vec<Worker> = (0..3)
        .map(|i| Worker::start(dir.path(), &url, &format!("w{i}"), &[]))
        .collect();
    let results: Vec<(String, Vec<String>, HashMap<String, usize>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|c| {
                let (post_to, listen_on) = (&fronts[c as usize % 2], &fronts[(c as usize / 2) % 2]);
                s.spawn(move || {
                    let client = format!("client{c}");
                    let mut ws = listen_on.ws(&client);
                    let ids: Vec<String> = (0..15)
                        .map(|k| {
                            let g = slow_image_graph(100 * c + k, 20, &format!("c{c}_j{k}"));
                            post_to.queue(&g, Some(&client))
                        })
                        .collect();
                    let mut successes: HashMap<String, usize> = HashMap::new();
                    let mut ended: HashSet<String> = HashSet::new();
                    while ended.len() < ids.len() {
                        let m = ws.next();
                        let id = m["data"]["prompt_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        if !id.is_empty() {
                            assert!(
                                ids.contains(&id),
                                "client {client} got another client's message: {m}"
                            );
                        }
                        if m["type"] == "execution_success" {
                            *successes.entry(id.clone()).or_default() += 1;
                        }
                        if m["type"] == "executing" && m["data"]["node"].is_null() {
                            ended.insert(id);
                        }
                    }
                    (client, ids, successes)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let history = wait_history_count(server, 60, Duration::from_secs(60));
    assert_eq!(history.as_object().unwrap().len(), 60);
    assert_eq!(
        fronts[1].get("/history").1,
        history,
        "both front-ends serve one history"
    );
    let mut files = HashSet::new();
    for (client, ids, successes) in &results {
        for id in ids {
            assert_eq!(successes.get(id), Some(&1), "{client}: {id} succeeded once");
            let entry = &history[id];
            assert_eq!(entry["status"]["status_str"], "success", "{entry}");
            assert_eq!(entry["prompt"][1], id.as_str());
            let pixels = first_image_pixels(server, entry);
            assert_eq!(pixels.len(), 8 * 8 * 3);
            let img = &entry["outputs"]["save"]["images"][0];
            assert!(files.insert(img["filename"].as_str().unwrap().to_string()));
        }
    }
    let pngs = std::fs::read_dir(server.output())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, 60, "one image per job, none twice");
    let status = queue_status(&url);
    assert_eq!(workers_total(&status, "jobs"), 60, "{status}");
    let busy = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["jobs"].as_u64().unwrap() > 0)
        .count();
    assert!(busy >= 2, "the jobs were shared: {status}");
    assert_eq!(status["queued"], 0);
    assert_eq!(status["finished"], 60);
    let (_, q) = server.get("/queue");
    assert_eq!(q, json!({ "queue_running": [], "queue_pending": [] }));
}

/// A .safetensors file holding one 4-element float tensor (a stand-in
/// checkpoint for `LoadTensor`, a loader node).
fn tensor_file(path: &std::path::Path, value: f32) {
    let header = br#"{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    for _ in 0..4 {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// Runs 16 jobs alternating two checkpoints (A: short jobs, B: long ones)
/// over 2 workers that hold one model at a time; returns the loads.
fn alternating_loads(affinity: bool) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    tensor_file(&a, 1.0);
    tensor_file(&b, 2.0);
    let redis = Redis::start(dir.path(), false);
    let url = redis.url();
    let server = Server::start(dir.path(), &["--queue", &url]);
    for k in 0..16u64 {
        let (path, ms) = if k % 2 == 0 {
            (&a, 20 + k)
        } else {
            (&b, 250 + k)
        };
        let g = json!({ "nodes": {
            "ckpt": { "type": "LoadTensor", "inputs": { "path": path.to_str().unwrap() } },
            "wait": { "type": "Sleep", "inputs": { "x": ["ckpt", "tensor"], "ms": ms } },
            "out": { "type": "Sink", "inputs": { "x": ["wait", "x"] } }
        }});
        server.queue(&g, None);
    }
    // Workers join a full queue (as after a burst), one after the other.
    let mut extra = vec!["--max-models", "1"];
    if !affinity {
        extra.push("--no-affinity");
    }
    let _w: Vec<Worker> = (0..2)
        .map(|i| Worker::start(dir.path(), &url, &format!("w{i}"), &extra))
        .collect();
    let history = wait_history_count(&server, 16, Duration::from_secs(90));
    for (id, e) in history.as_object().unwrap() {
        assert_eq!(e["status"]["status_str"], "success", "{id}: {e}");
    }
    let status = queue_status(&url);
    let loads = workers_total(&status, "loads");
    eprintln!("affinity {affinity}: {loads} loads; {status}");
    loads
}

/// Model affinity: two checkpoints alternating over 2 workers, each holding
/// one model at a time. With affinity a worker keeps to the checkpoint it
/// has loaded while its jobs last (one load per checkpoint and worker at
/// most: <= 4); in plain queue order nearly every job switches.
#[test]
fn affinity_cuts_model_loads_for_alternating_checkpoints() {
    let with = alternating_loads(true);
    let without = alternating_loads(false);
    assert!(with <= 4, "with affinity: {with} loads");
    assert!(
        without >= with + 3,
        "without affinity {without} loads, with {with}"
    );
}

/// Outputs through Redis (the worker's folder is not the front-end's),
/// interrupt and delete through the front-end, and a graceful stop: SIGTERM
/// lets the running job finish, then the worker leaves.
#[test]
fn redis_output_store_interrupt_delete_and_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), false);
    let url = redis.url();
    let server = Server::start(dir.path(), &["--queue", &url, "--output-store", "redis"]);
    let elsewhere = dir.path().join("worker-machine");
    let mut w = Worker::start(&elsewhere, &url, "w", &["--output-store", "redis"]);
    let mut ws = server.ws("c");

    let id = server.queue(&slow_image_graph(5, 1, "via_redis"), Some("c"));
    let entry = server.wait_history(&id, Duration::from_secs(60));
    assert_eq!(first_image_pixels(&server, &entry).len(), 8 * 8 * 3);
    assert!(server.output().join("via_redis.png").is_file());
    assert!(elsewhere.join("output/via_redis.png").is_file());

    // Interrupt the running job; delete one still queued behind it.
    let long = server.queue(&looping_image_graph(1, 40, 100, "long"), Some("c"));
    let queued = server.queue(&slow_image_graph(6, 1, "never"), Some("c"));
    loop {
        let m = ws.next();
        if m["type"] == "progress" && m["data"]["prompt_id"] == long.as_str() {
            break;
        }
    }
    // `front: true` is listed and run before the jobs queued earlier.
    let back = server.queue(&slow_image_graph(9, 1, "back"), Some("c"));
    let (s, r) = server.post(
        "/prompt",
        &json!({ "prompt": slow_image_graph(10, 1, "front"), "client_id": "c", "front": true }),
    );
    assert_eq!(s, 200, "{r}");
    let front = r["prompt_id"].as_str().unwrap().to_string();
    let (_, q) = server.get("/queue");
    let pending: Vec<&str> = q["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[1].as_str().unwrap())
        .collect();
    assert_eq!(pending, [front.as_str(), queued.as_str(), back.as_str()]);
    assert_eq!(q["queue_running"][0][1], long.as_str());
    let (_, r) = server.post("/queue", &json!({ "delete": [queued] }));
    assert_eq!(r["deleted"], 1);
    let (_, r) = server.post("/interrupt", &json!({ "prompt_id": long }));
    assert_eq!(r["interrupted"], long.as_str());
    let entry = server.wait_history(&long, Duration::from_secs(60));
    assert!(
        entry["status"]["messages"]
            .to_string()
            .contains("execution_interrupted"),
        "{entry}"
    );
    let started = |id: &str| {
        let e = server.wait_history(id, Duration::from_secs(60));
        assert_eq!(e["status"]["status_str"], "success", "{e}");
        e["status"]["messages"][0][1]["timestamp"].as_u64().unwrap()
    };
    assert!(started(&front) <= started(&back), "front ran first");

    // SIGTERM (Kubernetes' stop signal) during a job: it finishes, then the
    // worker exits 0 and leaves.
    let last = server.queue(&looping_image_graph(2, 10, 100, "last"), Some("c"));
    loop {
        let m = ws.next();
        if m["type"] == "progress" && m["data"]["prompt_id"] == last.as_str() {
            break;
        }
    }
    let pid = w.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let t = std::time::Instant::now();
    let code = loop {
        if let Some(s) = w.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the worker left within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
    let entry = server.wait_history(&last, Duration::from_secs(5));
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    let (_, h) = server.get("/history");
    assert!(h.get(&queued).is_none(), "the deleted job never ran");
    let status = queue_status(&url);
    assert_eq!(status["workers"].as_array().unwrap().len(), 0, "{status}");

    // Two SIGINTs during a job: it is handed back at once (exit 130) and
    // another worker runs it.
    let mut w2 = Worker::start(&elsewhere, &url, "w2", &["--output-store", "redis"]);
    let handed = server.queue(&looping_image_graph(3, 40, 100, "handed"), Some("c"));
    loop {
        let m = ws.next();
        if m["type"] == "progress" && m["data"]["prompt_id"] == handed.as_str() {
            break;
        }
    }
    let pid = w2.child.id().to_string();
    for _ in 0..2 {
        assert!(std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = std::time::Instant::now();
    let code = loop {
        if let Some(s) = w2.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the worker left at once"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code.code(), Some(130));
    let (_, q) = server.get("/queue");
    assert_eq!(
        q["queue_pending"][0][1],
        handed.as_str(),
        "handed back: {q}"
    );
    let _w3 = Worker::start(&elsewhere, &url, "w3", &["--output-store", "redis"]);
    let entry = server.wait_history(&handed, Duration::from_secs(60));
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
}
