//! `diffgraph serve` end to end: a real server process on a free loopback
//! port, driven the way ComfyUI's `script_examples/basic_api_example.py` and
//! `websockets_api_example.py` drive ComfyUI (the scripts themselves:
//! `serve_examples.rs`), with previews and early `executed`; load,
//! interrupts, PNG graphs (faults, security, hot reload and the worker
//! protocol: `serve_faults.rs`).
mod serve_support;

use serde_json::{json, Value as Json};
use serve_support::*;
use std::collections::HashMap;
use std::time::Duration;

/// What the two example scripts do, on the embedded demo model: queue the
/// prompt, follow the socket until `executing` null, read the history and
/// fetch every image with `/view`. Also ComfyUI-API-format input and the
/// informational endpoints.
#[test]
fn comfyui_example_clients_run_the_demo_graph() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--preview-method", "auto", "--preview-size", "64"],
    );
    let demo: Json = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("graphs/demo.json")).unwrap(),
    )
    .unwrap();

    // basic_api_example.py: POST {"prompt": ...} to /prompt.
    let (s, r) = server.post("/prompt", &json!({ "prompt": demo }));
    assert_eq!(s, 200, "{r}");
    assert!(
        r["prompt_id"].is_string() && r["number"].is_i64() && r["node_errors"] == json!({}),
        "{r}"
    );
    let first = r["prompt_id"].as_str().unwrap().to_string();

    // websockets_api_example.py: socket first, then the prompt with client_id.
    let mut ws = server.ws("client-a");
    let hello = ws.next();
    assert_eq!(hello["type"], "status");
    assert_eq!(hello["data"]["sid"], "client-a");
    assert!(hello["data"]["status"]["exec_info"]["queue_remaining"].is_u64());
    // Another seed: the model and the prompts come from the cache, the sampler runs.
    let mut demo2 = demo.clone();
    demo2["nodes"]["noise"]["inputs"]["seed"] = 7.into();
    let id = server.queue(&demo2, Some("client-a"));
    let msgs = ws.until_done(&id);
    let mine: Vec<&Json> = msgs
        .iter()
        .filter(|m| m["data"]["prompt_id"] == id.as_str())
        .collect();
    let kinds: Vec<&str> = mine.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"execution_start"), "{kinds:?}");
    assert!(
        kinds.contains(&"execution_cached"),
        "the second run reuses the loaded model: {kinds:?}"
    );
    let steps: Vec<u64> = mine
        .iter()
        .filter(|m| m["type"] == "progress")
        .map(|m| {
            assert_eq!(m["data"]["max"], 20);
            assert_eq!(m["data"]["node"], "denoise");
            m["data"]["value"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        (1..=20).collect::<Vec<_>>(),
        "one progress message per sampler step"
    );
    let executed = mine
        .iter()
        .find(|m| m["type"] == "executed")
        .expect("executed");
    let images = executed["data"]["output"]["images"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(images[0]["type"], "output");
    assert_eq!(kinds[kinds.len() - 2..], ["execution_success", "executing"]);
    // One binary preview frame per sampler step, as ComfyUI sends them:
    // event 1 (PREVIEW_IMAGE), format 2 (PNG), the image scaled to fit
    // --preview-size.
    // (The first job, queued without a client id, is everyone's: its frames
    // may have come first.)
    let start = msgs
        .iter()
        .position(|m| m["type"] == "execution_start" && m["data"]["prompt_id"] == id.as_str())
        .unwrap();
    let frames: Vec<&(usize, Vec<u8>)> = ws.binary.iter().filter(|f| f.0 > start).collect();
    assert_eq!(frames.len(), 20, "one preview per step");
    for (_, frame) in &frames {
        assert_eq!(frame[..8], [0, 0, 0, 1, 0, 0, 0, 2]);
        let img = image::load_from_memory(&frame[8..]).expect("a PNG preview");
        assert_eq!((img.width(), img.height()), (64, 64));
    }
    let first_progress = msgs
        .iter()
        .position(|m| m["type"] == "progress" && m["data"]["prompt_id"] == id.as_str())
        .unwrap();
    assert!(
        frames[0].0 <= first_progress + 1 && frames[19].0 <= msgs.len() - 2,
        "previews stream with the steps, not after the job"
    );

    // `executed` as soon as an output node has written its files, before
    // the nodes after it run.
    let mut two = image_graph(5, "early");
    two["nodes"]["l"] = json!({ "type": "Loop", "inputs": { "over": 3, "x": ["save", "paths"] },
        "body": { "s": { "type": "Sleep", "inputs": { "x": ["l", "x"], "ms": 100 } } },
        "next": { "x": ["s", "x"] } });
    two["nodes"]["out"] = json!({ "type": "Sink", "inputs": { "x": ["l", "x"] } });
    let id2 = server.queue(&two, Some("client-a"));
    let msgs2 = ws.until_done(&id2);
    let at = |pred: &dyn Fn(&Json) -> bool| msgs2.iter().position(pred).unwrap();
    let executed = at(&|m| m["type"] == "executed" && m["data"]["node"] == "save");
    let progress = at(&|m| m["type"] == "progress" && m["data"]["node"] == "l");
    // The sink passes the file names on: it is an output with images too.
    let sink = at(&|m| m["type"] == "executed" && m["data"]["node"] == "out");
    assert!(
        executed < progress && progress < sink,
        "{:?}",
        types(&msgs2)
    );
    let h = server.wait_history(&id2, Duration::from_secs(60));
    assert_eq!(
        h["outputs"]["save"]["images"][0],
        msgs2[executed]["data"]["output"]["images"][0]
    );

    // get_history + get_image.
    for (pid, seed) in [(&first, 42), (&id, 7)] {
        let h = server.wait_history(pid, Duration::from_secs(120));
        assert_eq!(h["status"]["status_str"], "success", "{h}");
        assert_eq!(h["status"]["completed"], true);
        for (_, out) in h["outputs"].as_object().unwrap() {
            for img in out["images"].as_array().unwrap() {
                let q = format!(
                    "/view?filename={}&subfolder={}&type={}",
                    img["filename"].as_str().unwrap(),
                    img["subfolder"].as_str().unwrap(),
                    img["type"].as_str().unwrap()
                );
                let (s, head, bytes) = server.request("GET", &q, &[], b"");
                assert_eq!(s, 200);
                assert!(head.contains("content-type: image/png"));
                let png = image::load_from_memory(&bytes).expect("a PNG");
                assert_eq!((png.width(), png.height()), (64, 64));
                // The image carries the graph that made it.
                let text = diffgraph::pngtext::read(&bytes).unwrap();
                let (key, graph) = &text[0];
                assert_eq!(key, "diffgraph");
                let graph: Json = serde_json::from_str(graph).unwrap();
                // Outputs never overwrite (the second job's file gets a
                // counter): each image carries its own job's graph.
                assert_eq!(graph["nodes"]["noise"]["inputs"]["seed"], seed);
            }
        }
    }

    // ComfyUI's API format (node types and inputs as diffgraph names them).
    let api = json!({
        "1": { "class_type": "GaussianNoise", "inputs": { "seed": 3, "shape": { "__value__": [1, 3, 8, 8] } } },
        "2": { "class_type": "LatentToImage", "inputs": { "latent": ["1", 0] } },
        "3": { "class_type": "SaveImage", "inputs": { "image": ["2", 0], "filename_prefix": "api" } }
    });
    let id = server.queue(&api, None);
    let h = server.wait_history(&id, Duration::from_secs(60));
    assert_eq!(h["status"]["status_str"], "success", "{h}");
    assert_eq!(
        h["prompt"][2], api,
        "the history keeps the prompt as submitted"
    );
    let img = &h["outputs"]["3"]["images"][0];
    let (_, _, bytes) = server.request(
        "GET",
        &format!("/view?filename={}", img["filename"].as_str().unwrap()),
        &[],
        b"",
    );
    let text = diffgraph::pngtext::read(&bytes).unwrap();
    assert_eq!(
        text[0].0, "prompt",
        "ComfyUI's key for an API-format prompt"
    );
    assert_eq!(serde_json::from_str::<Json>(&text[0].1).unwrap(), api);

    // The informational endpoints, bare and under /api.
    for prefix in ["", "/api"] {
        let (s, info) = server.get(&format!("{prefix}/object_info"));
        assert_eq!(s, 200);
        // A name both have is ComfyUI's node (what ComfyUI clients send).
        let save = &info["SaveImage"];
        assert_eq!(save["input"]["required"]["images"][0], "IMAGE");
        assert_eq!(
            save["input"]["required"]["filename_prefix"][1]["default"],
            "ComfyUI"
        );
        assert_eq!(save["output_node"], true);
        assert_eq!(
            save["input_order"]["required"],
            json!(["images", "filename_prefix"])
        );
        let ckpt = &info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0];
        assert!(ckpt.as_array().unwrap().iter().any(|c| c == "shapes-ldm"));
        let sched = &info["Scheduler"]["input"];
        let sampler = sched["required"]["sampler"]
            .as_array()
            .or(sched["optional"]["sampler"].as_array())
            .expect("sampler input");
        assert!(
            sampler[0].as_array().unwrap().iter().any(|c| c == "ddim"),
            "choices as a list: {sampler:?}"
        );
        assert_eq!(
            info["GaussianNoise"]["input"]["required"]["seed"][1]["min"],
            0.0
        );
        assert_eq!(info["GaussianNoise"]["output_name"], json!(["noise"]));
        let (s, one) = server.get(&format!("{prefix}/object_info/AddInt"));
        assert_eq!(s, 200);
        assert_eq!(one["AddInt"]["output"], json!(["INT"]));
        assert_eq!(server.get(&format!("{prefix}/object_info/Nope")).0, 404);
        let (s, stats) = server.get(&format!("{prefix}/system_stats"));
        assert_eq!(s, 200);
        assert!(stats["system"]["ram_total"].as_u64().unwrap() > 0 && stats["devices"].is_array());
        // As the worker reported it (a CPU: no device memory).
        assert_eq!(
            stats["devices"][0],
            json!({ "name": "cpu", "type": "cpu", "index": null, "vram_total": 0,
                    "vram_free": 0, "torch_vram_total": 0, "torch_vram_free": 0 })
        );
        assert_eq!(
            server.get(&format!("{prefix}/features")).1["max_upload_size"],
            32 << 20
        );
        assert!(server.get(&format!("{prefix}/embeddings")).1.is_array());
        assert!(server
            .get(&format!("{prefix}/models"))
            .1
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "shapes-ldm"));
        assert!(
            server
                .get(&format!("{prefix}/models/shapes-ldm"))
                .1
                .as_array()
                .unwrap()
                .len()
                > 1
        );
    }
}

/// 8 clients at once, 200 prompts, valid and invalid mixed: every valid one runs
/// exactly once with its history and a viewable image; every invalid one
/// gets ComfyUI's node_errors. Then interrupt, delete a queued job, clear.
#[test]
fn load_interrupt_delete_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(Server::start(dir.path(), &[]));
    let mut ws = server.ws("watcher");
    ws.next();
    let threads: Vec<_> = (0..8u64)
        .map(|c| {
            let server = server.clone();
            std::thread::spawn(move || {
                let mut valid = Vec::new();
                for k in 0..25u64 {
                    let seed = c * 100 + k;
                    let prompt = match k % 4 {
                        1 => json!({ "nodes": { "save": { "type": "SaveImage", "inputs": { "image": 5, "filename_prefix": "x" } } } }),
                        2 => json!({ "nodes": { "a": { "type": "NoSuchNode", "inputs": {} }, "o": { "type": "Sink", "inputs": { "x": ["a", "y"] } } } }),
                        _ => image_graph(seed, &format!("load/c{c}_{k}")),
                    };
                    let (s, r) = server.post("/prompt", &json!({ "prompt": prompt }));
                    if k % 4 == 1 {
                        assert_eq!(s, 400, "{r}");
                        let e = &r["node_errors"]["save"];
                        assert_eq!(e["class_type"], "SaveImage");
                        assert_eq!(e["errors"][0]["type"], "return_type_mismatch", "{r}");
                        assert_eq!(e["errors"][0]["extra_info"]["input_name"], "image");
                        assert_eq!(r["error"]["type"], "prompt_outputs_failed_validation");
                    } else if k % 4 == 2 {
                        assert_eq!(s, 400, "{r}");
                        assert_eq!(r["error"]["type"], "invalid_prompt", "{r}");
                    } else {
                        assert_eq!(s, 200, "{r}");
                        valid.push(r["prompt_id"].as_str().unwrap().to_string());
                    }
                }
                valid
            })
        })
        .collect();
    let valid: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(
        valid.len(),
        104,
        "8 clients x 25 prompts, 13 of each 25 valid"
    );
    // Every valid prompt: exactly one execution_success, seen on the socket.
    let mut successes: HashMap<String, usize> = HashMap::new();
    while successes.len() < valid.len() {
        let m = ws.next();
        if m["type"] == "execution_success" {
            *successes
                .entry(m["data"]["prompt_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_ne!(m["type"], "execution_error", "{m}");
    }
    server.wait_idle(Duration::from_secs(60));
    let (_, history) = server.get("/history");
    for id in &valid {
        assert_eq!(successes[id], 1, "{id} ran once");
        let h = &history[id];
        assert_eq!(h["status"]["status_str"], "success", "{id}: {h}");
        let img = &h["outputs"]["save"]["images"][0];
        let q = format!(
            "/view?filename={}&subfolder={}&type=output",
            img["filename"].as_str().unwrap(),
            img["subfolder"].as_str().unwrap()
        );
        let (s, _, bytes) = server.request("GET", &q, &[], b"");
        assert_eq!(s, 200, "{q}");
        image::load_from_memory(&bytes).expect("a PNG");
    }
    assert_eq!(history.as_object().unwrap().len(), valid.len());

    // Interrupt a running job; delete one queued behind it; the other runs.
    let long = server.queue(&sleep_graph(200, 20), None);
    let deleted = server.queue(&image_graph(1, "deleted"), None);
    let kept = server.queue(&image_graph(2, "kept"), None);
    let (_, q) = server.get("/queue");
    assert_eq!(
        q["queue_pending"].as_array().unwrap().len() + q["queue_running"].as_array().unwrap().len(),
        3
    );
    assert_eq!(
        server.post("/queue", &json!({ "delete": [deleted] })).1["deleted"],
        1
    );
    loop {
        let m = ws.next();
        if m["type"] == "progress" && m["data"]["prompt_id"] == long.as_str() {
            assert_eq!(m["data"]["node"], "l");
            assert_eq!(m["data"]["max"], 200);
            break;
        }
    }
    let (s, r) = server.post("/interrupt", &json!({ "prompt_id": long }));
    assert_eq!((s, r["interrupted"].as_str()), (200, Some(long.as_str())));
    assert_eq!(
        server.wait_history(&long, Duration::from_secs(30))["status"]["status_str"],
        "error"
    );
    let msgs = server.wait_history(&long, Duration::from_secs(1))["status"]["messages"].clone();
    assert!(
        msgs.as_array()
            .unwrap()
            .iter()
            .any(|m| m[0] == "execution_interrupted"),
        "{msgs}"
    );
    assert_eq!(
        server.wait_history(&kept, Duration::from_secs(30))["status"]["status_str"],
        "success"
    );
    assert_eq!(server.get(&format!("/history/{deleted}")).1, json!({}));

    // Clear: queued jobs go, the running one stays.
    let long = server.queue(&sleep_graph(100, 20), None);
    let queued: Vec<String> = (0..3)
        .map(|i| server.queue(&image_graph(i, "cleared"), None))
        .collect();
    server.post("/queue", &json!({ "clear": true }));
    let (_, q) = server.get("/queue");
    assert_eq!(q["queue_pending"], json!([]), "{q}");
    server.post("/interrupt", &json!({}));
    server.wait_history(&long, Duration::from_secs(30));
    server.wait_idle(Duration::from_secs(30));
    for id in queued {
        assert_eq!(server.get(&format!("/history/{id}")).1, json!({}));
    }
    // History delete and clear.
    assert_eq!(
        server.post("/history", &json!({ "delete": [kept] })).1["deleted"],
        1
    );
    server.post("/history", &json!({ "clear": true }));
    assert_eq!(server.get("/history").1, json!({}));
}

/// `run` writes the graph (overrides applied) into its PNGs, and
/// `run image.png` re-runs it: the same pixels.
#[test]
fn run_embeds_its_graph_and_reruns_it_from_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("g.json");
    std::fs::write(&graph, image_graph(5, "first").to_string()).unwrap();
    let run = |args: &[&str], out: &str| {
        let o = std::process::Command::new(common::diffgraph_bin())
            .arg("run")
            .args(args)
            .args([
                "-q",
                "--plugins",
                common::plugin_path("diffgraph_nodes_core")
                    .to_str()
                    .unwrap(),
                "--out",
            ])
            .arg(dir.path().join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let first = run(&[graph.to_str().unwrap(), "--set", "noise.seed=9"], "a");
    let text = diffgraph::pngtext::read(&std::fs::read(&first).unwrap()).unwrap();
    let embedded: Json = serde_json::from_str(&text[0].1).unwrap();
    assert_eq!(
        embedded["nodes"]["noise"]["inputs"]["seed"], 9,
        "overrides applied"
    );
    let second = run(&[&first], "b");
    assert_ne!(first, second);
    let pixels = |p: &str| image::open(p).unwrap().to_rgb8().into_raw();
    assert_eq!(pixels(&first), pixels(&second));
    // A PNG without a graph is refused clearly.
    let plain = dir.path().join("plain.png");
    std::fs::write(&plain, png_bytes()).unwrap();
    let o = std::process::Command::new(common::diffgraph_bin())
        .arg("run")
        .arg(&plain)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("carries no graph"));
}
