//! A real `diffgraph serve` process on a free loopback port, and a small
//! client (HTTP/1.1 over std TCP, WebSocket with tungstenite) doing what
//! ComfyUI's `script_examples` do. Every wait is bounded.
#![allow(dead_code)]
use serde_json::{json, Value as Json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
pub mod common;

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub token: Option<String>,
}

/// The repository root (the demo graph reads `models/shapes-ldm` from there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

impl Server {
    /// Starts a server whose folders live under `dir` (output, input), with
    /// the core plugin and the testing fixtures; `extra` arguments appended.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let plugins: Vec<PathBuf> = [
            "diffgraph_nodes_core",
            "diffgraph_testnodes",
            "diffgraph_nodes_sd",
            "diffgraph_nodes_sampling",
            "diffgraph_nodes_guidance",
        ]
        .iter()
        .map(|p| common::plugin_path(p))
        .collect();
        Server::start_with(dir, &plugins, extra)
    }

    /// [`Server::start`] with these `--plugins` (files or folders).
    pub fn start_with(dir: &Path, plugins: &[PathBuf], extra: &[&str]) -> Server {
        let out = dir.join("output");
        let input = dir.join("input");
        let mut cmd = Command::new(common::diffgraph_bin());
        cmd.current_dir(repo_root())
            .arg("serve")
            .arg("--output")
            .arg(&out)
            .arg("--input")
            .arg(&input);
        // Defaults unless `extra` says otherwise.
        if !extra.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        if !extra.contains(&"--models") {
            cmd.arg("--models").arg(repo_root().join("models"));
        }
        for p in plugins {
            cmd.arg("--plugins").arg(p);
        }
        cmd.args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start diffgraph serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.rsplit(':').next().unwrap().parse::<u16>().unwrap());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server says where it listens within 60 s");
        let token = extra
            .iter()
            .position(|a| *a == "--auth-token-file")
            .map(|i| {
                std::fs::read_to_string(extra[i + 1])
                    .unwrap()
                    .trim()
                    .to_string()
            });
        Server {
            child,
            port,
            dir: dir.to_path_buf(),
            token,
        }
    }

    pub fn output(&self) -> PathBuf {
        self.dir.join("output")
    }

    /// One request; returns (status, headers lowercased, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        if let Some(t) = &self.token {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            {
                head.push_str(&format!("Authorization: Bearer {t}\r\n"));
            }
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        // The server may answer (413) before reading a large body.
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response");
        let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(
            !head.contains("transfer-encoding: chunked"),
            "unexpected chunked reply"
        );
        (status, head, raw[split + 4..].to_vec())
    }

    pub fn get(&self, path: &str) -> (u16, Json) {
        let (s, _, b) = self.request("GET", path, &[], b"");
        (
            s,
            serde_json::from_slice(&b)
                .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&b)})),
        )
    }

    pub fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        let (s, _, b) = self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        (
            s,
            serde_json::from_slice(&b)
                .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&b)})),
        )
    }

    /// `POST /prompt` with a graph; the prompt id (panics unless accepted).
    pub fn queue(&self, prompt: &Json, client_id: Option<&str>) -> String {
        let (s, r) = self.post(
            "/prompt",
            &json!({ "prompt": prompt, "client_id": client_id }),
        );
        assert_eq!(s, 200, "{r}");
        r["prompt_id"].as_str().unwrap().to_string()
    }

    /// Waits until the queue is empty and nothing runs.
    pub fn wait_idle(&self, limit: Duration) {
        let t = Instant::now();
        loop {
            let (_, r) = self.get("/prompt");
            if r["exec_info"]["queue_remaining"] == 0 {
                return;
            }
            assert!(
                t.elapsed() < limit,
                "the queue did not drain within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the history entry of `id`.
    pub fn wait_history(&self, id: &str, limit: Duration) -> Json {
        let t = Instant::now();
        loop {
            let (_, r) = self.get(&format!("/history/{id}"));
            if let Some(e) = r.get(id) {
                return e.clone();
            }
            assert!(t.elapsed() < limit, "no history for {id} within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ws(&self, client_id: &str) -> Ws {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let token = self
            .token
            .as_ref()
            .map(|t| format!("&token={t}"))
            .unwrap_or_default();
        let url = format!(
            "ws://127.0.0.1:{}/ws?clientId={client_id}{token}",
            self.port
        );
        let (socket, _) = tungstenite::client(url.as_str(), stream).expect("websocket handshake");
        Ws {
            socket,
            binary: Vec::new(),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Ws {
    pub socket: tungstenite::WebSocket<TcpStream>,
    /// Binary frames (previews) received so far, with the number of text
    /// messages received before each.
    pub binary: Vec<(usize, Vec<u8>)>,
}

impl Ws {
    /// The next text message as JSON (binary frames kept in `binary`).
    pub fn next(&mut self) -> Json {
        loop {
            match self
                .socket
                .read()
                .expect("a websocket message within the timeout")
            {
                tungstenite::Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                tungstenite::Message::Binary(b) => self.binary.push((0, b.to_vec())),
                _ => continue,
            }
        }
    }

    /// Messages until `executing` with node null for `prompt_id` (as
    /// `websockets_api_example.py` waits), inclusive.
    pub fn until_done(&mut self, prompt_id: &str) -> Vec<Json> {
        let mut seen = Vec::new();
        loop {
            let before = self.binary.len();
            let m = self.next();
            for b in &mut self.binary[before..] {
                b.0 = seen.len();
            }
            let done = m["type"] == "executing"
                && m["data"]["node"].is_null()
                && m["data"]["prompt_id"] == prompt_id;
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
}

/// A native graph writing one 8x8 noise image with `prefix`.
pub fn image_graph(seed: u64, prefix: &str) -> Json {
    json!({ "nodes": {
        "noise": { "type": "GaussianNoise", "inputs": { "seed": seed, "shape": [1, 3, 8, 8] } },
        "img": { "type": "LatentToImage", "inputs": { "latent": ["noise", "noise"] } },
        "save": { "type": "SaveImage", "inputs": { "image": ["img", "image"], "filename_prefix": prefix } }
    }})
}

/// A loop of `steps` iterations of `ms` each (progress per step).
pub fn sleep_graph(steps: u64, ms: u64) -> Json {
    json!({ "nodes": {
        "l": { "type": "Loop", "inputs": { "over": steps, "x": 0 },
               "body": { "s": { "type": "Sleep", "inputs": { "x": ["l", "x"], "ms": ms } } },
               "next": { "x": ["s", "x"] } },
        "out": { "type": "Sink", "inputs": { "x": ["l", "x"] } }
    }})
}

/// A graph whose node `boom` kills its process in `mode`.
pub fn crash_graph(mode: &str) -> Json {
    json!({ "nodes": { "boom": { "type": "Crash", "inputs": { "mode": mode } } } })
}

/// multipart/form-data with one file field `image` and text fields.
pub fn multipart(filename: &str, data: &[u8], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "diffgraphtestboundary7MA4YWxk";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A small valid PNG.
pub fn png_bytes() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(4, 4, image::Rgb([200, 10, 10]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The `type` of each WebSocket message, in order.
pub fn types(msgs: &[Json]) -> Vec<&str> {
    msgs.iter().map(|m| m["type"].as_str().unwrap()).collect()
}
