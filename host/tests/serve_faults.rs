//! `diffgraph serve` when things go wrong: crashing nodes, a SIGKILLed
//! server restarted with jobs queued, the security limits (tokens, path
//! confinement, body sizes, malformed requests); hot reload (`--watch`); the
//! worker loop's interrupts. A real server process on a free loopback port,
//! as in `serve.rs`.
mod serve_support;

use serde_json::{json, Value as Json};
use serve_support::*;
use std::time::Duration;

/// A node that aborts, segfaults, overflows its stack or exits fails its
/// job with an error naming the node and the signal; the next job runs.
#[test]
fn crashing_nodes_fail_their_job_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut ws = server.ws("crash");
    ws.next();
    for (mode, how) in [
        ("abort", "SIGABRT"),
        ("segfault", "SIGSEGV"),
        ("stack_overflow", "killed by signal"),
        ("exit", "exited with status 3"),
    ] {
        let id = server.queue(&crash_graph(mode), Some("crash"));
        let msgs = ws.until_done(&id);
        let err = msgs
            .iter()
            .find(|m| m["type"] == "execution_error")
            .unwrap_or_else(|| panic!("{mode}: {:?}", types(&msgs)));
        assert_eq!(err["data"]["node_id"], "boom", "{err}");
        assert_eq!(err["data"]["node_type"], "Crash");
        let text = err["data"]["exception_message"].as_str().unwrap();
        assert!(
            text.contains(how) && text.contains("`boom`"),
            "{mode}: {text}"
        );
        let ok = server.queue(&image_graph(7, "after_crash"), Some("crash"));
        let msgs = ws.until_done(&ok);
        assert!(
            types(&msgs).contains(&"execution_success"),
            "{mode}: {:?}",
            types(&msgs)
        );
    }
    // A caught panic stays in-process: an ordinary execution_error.
    let id = server.queue(&json!({ "nodes": { "p": { "type": "Panic", "inputs": {} }, "o": { "type": "Sink", "inputs": { "x": ["p", "never"] } } } }), Some("crash"));
    let msgs = ws.until_done(&id);
    let err = msgs
        .iter()
        .find(|m| m["type"] == "execution_error")
        .unwrap();
    assert_eq!(err["data"]["node_id"], "p");
    assert!(err["data"]["exception_message"]
        .as_str()
        .unwrap()
        .contains("panicked"));
}

/// SIGKILL with jobs queued and one running: after a restart the queued
/// jobs run, the running one is re-queued once, the history is kept.
#[test]
fn sigkill_and_restart_keep_the_queue_and_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--max-queue", "5"]);
    let done = server.queue(&image_graph(1, "before"), None);
    server.wait_history(&done, Duration::from_secs(30));
    let mut ws = server.ws("k");
    ws.next();
    let long = server.queue(&sleep_graph(300, 20), None);
    let queued: Vec<String> = (0..3)
        .map(|i| server.queue(&image_graph(10 + i, "after_restart"), None))
        .collect();
    // The bounded queue: one more fits (5 = 1 running + 4), then 503.
    server.queue(&image_graph(20, "last"), None);
    let (s, r) = server.post("/prompt", &json!({ "prompt": image_graph(21, "refused") }));
    assert_eq!(s, 503, "{r}");
    assert_eq!(r["error"]["type"], "queue_full");
    loop {
        let m = ws.next();
        if m["type"] == "progress" && m["data"]["prompt_id"] == long.as_str() {
            break;
        }
    }
    server.kill();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        server.wait_history(&done, Duration::from_secs(5))["status"]["status_str"],
        "success"
    );
    // The re-queued long job runs again first; interrupt it.
    let mut ws = server.ws("k2");
    ws.next();
    loop {
        let m = ws.next();
        if m["type"] == "progress" && m["data"]["prompt_id"] == long.as_str() {
            break;
        }
    }
    server.post("/interrupt", &json!({}));
    for id in &queued {
        assert_eq!(
            server.wait_history(id, Duration::from_secs(60))["status"]["status_str"],
            "success"
        );
    }
    let h = server.wait_history(&long, Duration::from_secs(30));
    assert!(
        h["status"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m[0] == "execution_interrupted"),
        "{h}"
    );
}

/// Bearer tokens; paths confined to their folders; body limits; uploads
/// checked; JSON errors for bad requests.
#[test]
fn security_tokens_paths_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--auth-token-file",
            token_file.to_str().unwrap(),
            "--max-body-mb",
            "1",
        ],
    );
    // Tokens.
    assert_eq!(
        server
            .request("GET", "/queue", &[("Authorization", "Bearer wrong")], b"")
            .0,
        401
    );
    assert_eq!(
        server
            .request(
                "GET",
                "/api/object_info",
                &[("Authorization", "Basic x")],
                b""
            )
            .0,
        401
    );
    assert_eq!(server.get("/queue").0, 200);
    assert_eq!(
        server
            .request(
                "GET",
                "/queue?token=s3cret-token",
                &[("Authorization", "none")],
                b""
            )
            .0,
        200
    );
    let stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let url = format!("ws://127.0.0.1:{}/ws?clientId=x", server.port);
    assert!(
        tungstenite::client(url.as_str(), stream).is_err(),
        "a socket without the token is refused"
    );
    server.ws("x").next();

    // Uploads: a PNG is stored (renamed, not overwritten, the second time).
    let png = png_bytes();
    let (ct, body) = multipart("cat.png", &png, &[("subfolder", "pets")]);
    let up = |ct: &str, body: &[u8]| {
        let (s, _, b) = server.request("POST", "/upload/image", &[("Content-Type", ct)], body);
        (s, serde_json::from_slice::<Json>(&b).unwrap())
    };
    assert_eq!(
        up(&ct, &body),
        (
            200,
            json!({ "name": "cat.png", "subfolder": "pets", "type": "input" })
        )
    );
    assert_eq!(up(&ct, &body).1["name"], "cat (1).png");
    let (s, _, got) = server.request(
        "GET",
        "/view?filename=cat.png&subfolder=pets&type=input",
        &[],
        b"",
    );
    assert_eq!((s, got), (200, png.clone()));
    for (name, fields) in [
        ("../evil.png", vec![]),
        ("ok.png", vec![("subfolder", "../../x")]),
        ("ok.png", vec![("subfolder", "/tmp")]),
    ] {
        let (ct, body) = multipart(name, &png, &fields);
        let (s, r) = up(&ct, &body);
        assert_eq!(s, 403, "{name} {fields:?}: {r}");
        assert!(r["error"]["message"].is_string());
    }
    let (ct, body) = multipart("fake.png", b"#!/bin/sh\necho not an image\n", &[]);
    assert_eq!(up(&ct, &body).0, 415);
    assert!(!dir.path().join("input/fake.png").exists());

    // /view confinement: .., absolute, a symlink out of the folder.
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("output/link")).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("output/file_link.png"),
    )
    .unwrap();
    for q in [
        "filename=secret.txt&subfolder=..&type=output",
        "filename=../secret.txt&type=input",
        "filename=%2Fetc%2Fpasswd&type=output",
        "filename=passwd&subfolder=%2Fetc",
        "filename=secret.txt&subfolder=link",
        "filename=file_link.png",
        "filename=x&type=elsewhere",
    ] {
        let (s, _, b) = server.request("GET", &format!("/view?{q}"), &[], b"");
        assert!(s == 403 || s == 400, "{q}: {s}");
        assert!(
            serde_json::from_slice::<Json>(&b).unwrap()["error"]["type"].is_string(),
            "{q}"
        );
        assert!(!String::from_utf8_lossy(&b).contains("secret\""));
    }
    assert_eq!(server.get("/view?filename=missing.png").0, 404);

    // Body limits and malformed requests: 4xx with JSON, never a 500.
    let big = vec![b' '; (1 << 20) + 10];
    let (s, _, b) = server.request(
        "POST",
        "/prompt",
        &[("Content-Type", "application/json")],
        &big,
    );
    assert_eq!(s, 413);
    assert!(serde_json::from_slice::<Json>(&b).is_ok());
    let (ct, body) = multipart("big.png", &vec![0u8; (1 << 20) + 10], &[]);
    assert_eq!(up(&ct, &body).0, 413);
    for (path, body) in [
        ("/prompt", "{not json"),
        ("/prompt", "[1,2]"),
        ("/prompt", "{\"prompt\": 5}"),
        ("/queue", "{\"delete\": 5}"),
        ("/history", "{\"delete\": \"x\"}"),
    ] {
        let (s, _, b) = server.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert!((400..500).contains(&s), "{path} {body}: {s}");
        assert!(serde_json::from_slice::<Json>(&b).is_ok(), "{path} {body}");
    }
    assert_eq!(server.get("/history?max_items=x").0, 400);
    assert_eq!(server.get("/no/such/thing").0, 404);
    // No CORS headers: other origins cannot read replies from a browser.
    let (_, head, _) = server.request("GET", "/queue", &[("Origin", "http://evil.example")], b"");
    assert!(!head.contains("access-control-allow-origin"));
}

/// `--watch`: a plugin library overwritten in place is reloaded between
/// jobs: the next job runs its nodes again (a new generation) while another
/// plugin's results stay cached; a job queued before the change completes;
/// a library that fails the ABI handshake is refused and the old generation
/// serves on. Every wait is a bounded poll on job results.
#[test]
fn watch_reloads_plugins_between_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let lib = plugins.join("libdiffgraph_testnodes.so");
    let good = common::plugin_path("diffgraph_testnodes");
    std::fs::copy(&good, &lib).unwrap();
    let core = common::plugin_path("diffgraph_nodes_core");
    let server = Server::start_with(dir.path(), &[core, plugins.clone()], &["--watch"]);
    let mut ws = server.ws("w");
    ws.next();
    let graph = json!({ "nodes": {
        "noise": { "type": "GaussianNoise", "inputs": { "seed": 1, "shape": [1, 3, 8, 8] } },
        "p": { "type": "PassTensor", "inputs": { "x": ["noise", "noise"] } },
        "out": { "type": "Sink", "inputs": { "x": ["p", "x"] } }
    }});
    // Runs the graph; which of noise/p came from the cache.
    let run = |ws: &mut Ws| {
        let id = server.queue(&graph, Some("w"));
        let msgs = ws.until_done(&id);
        assert!(
            msgs.iter().any(|m| m["type"] == "execution_success"),
            "{:?}",
            types(&msgs)
        );
        let cached = |n: &str| {
            msgs.iter().any(|m| {
                m["type"] == "execution_cached"
                    && m["data"]["nodes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x == n)
            })
        };
        (cached("noise"), cached("p"))
    };
    assert_eq!(run(&mut ws), (false, false));
    assert_eq!(run(&mut ws), (true, true), "both cached on a second run");

    // Until the new generation serves: p runs again, noise stays cached.
    let until_reloaded = |ws: &mut Ws| {
        let t = std::time::Instant::now();
        loop {
            match run(ws) {
                (true, false) => return,
                (true, true) => {}
                other => panic!("noise must stay cached: {other:?}"),
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no reload within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let long = server.queue(&sleep_graph(5, 200), None);
    std::fs::copy(&good, &lib).unwrap(); // in place, as `cp` does
    until_reloaded(&mut ws);
    let h = server.wait_history(&long, Duration::from_secs(60));
    assert_eq!(h["status"]["status_str"], "success", "{h}");

    // A library of another ABI version: refused; the old generation serves.
    std::fs::copy(common::plugin_path("diffgraph_testnodes_bad_abi"), &lib).unwrap();
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        assert_eq!(run(&mut ws), (true, true), "the old generation serves");
    }
    std::fs::copy(&good, &lib).unwrap();
    until_reloaded(&mut ws);
}

/// The worker loop on its own (`diffgraph::worker::child::serve`, no
/// process), driven one job at a time as a supervisor does: an interrupt
/// that arrives before its job starts stops it as it starts, one during a
/// run stops it at the next step, and one for another job stops nothing.
#[test]
fn worker_interrupts_reach_their_job_only() {
    use diffgraph::worker::child;
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Out(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Out {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let registry = common::registry_with(&["diffgraph_testnodes"]);
    let (reader, mut writer) = std::io::pipe().unwrap();
    let out = Out::default();
    let o = out.clone();
    let worker = std::thread::spawn(move || {
        child::serve(
            diffgraph::Executor::new(registry),
            std::io::BufReader::new(reader),
            o,
            false,
        )
    });
    let mut send = |v: Json| writeln!(writer, "{v}").unwrap();
    let run = |job: &str, g: &Json| json!({ "op": "run", "job": job, "graph": g.to_string() });
    // Waits for a reply line of `job` with `reply` kind (`event/KIND` for
    // an event of that kind); returns it.
    let wait = |job: &str, reply: &str| -> Json {
        let (reply, event) = reply.split_once('/').unwrap_or((reply, ""));
        let t = std::time::Instant::now();
        loop {
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            let found = text
                .lines()
                .map(|l| serde_json::from_str::<Json>(l).unwrap())
                .find(|r| {
                    r["job"] == job
                        && r["reply"] == reply
                        && (event.is_empty() || r["event"]["event"] == event)
                });
            if let Some(r) = found {
                return r;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no {reply} for {job}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    send(run("a", &sleep_graph(3, 1)));
    wait("a", "done");
    send(json!({ "op": "interrupt", "job": "b" }));
    send(run("b", &sleep_graph(500, 10)));
    let b = wait("b", "failed");
    assert_eq!(
        (b["interrupted"].as_bool(), b["node"].is_null()),
        (Some(true), true),
        "{b}"
    );
    send(run("c", &sleep_graph(500, 10)));
    wait("c", "event/loop_step");
    send(json!({ "op": "interrupt", "job": "zzz" }));
    std::thread::sleep(Duration::from_millis(50));
    send(json!({ "op": "interrupt", "job": "c" }));
    let c = wait("c", "failed");
    assert_eq!(c["interrupted"], true, "{c}");
    send(json!({ "op": "interrupt", "job": "gone" }));
    send(run("d", &sleep_graph(3, 1)));
    wait("d", "done");
    drop(writer);
    worker.join().unwrap();
}
