//! A real `redis-server` on a free loopback port (Debian's package,
//! installed by scripts/setup.sh), `diffgraph worker --queue` processes and
//! `diffgraph queue status`, for the scale-out tests. Every wait is bounded;
//! every process is killed when its handle drops.
#![allow(dead_code)]
#[path = "../serve_support/mod.rs"]
pub mod serve_support;
pub use serve_support::*;

use serde_json::{json, Value as Json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn redis_server() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .expect(
            "redis-server is not on PATH: run scripts/setup.sh (it installs Debian's redis-server)",
        )
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    aof: bool,
}

impl Redis {
    /// A fresh server; `aof`: append-only file, fsync on every write.
    pub fn start(dir: &Path, aof: bool) -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: dir.join("redis"),
            aof,
        };
        std::fs::create_dir_all(&r.dir).unwrap();
        r.restart();
        r
    }

    /// (Re)starts the server on the same port and data folder.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(redis_server());
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log"]);
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        self.child = Some(
            cmd.stdout(Stdio::null())
                .spawn()
                .expect("start redis-server"),
        );
        let t = Instant::now();
        while !self.ping() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not answer within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL (nothing flushed that was not already).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Worker {
    pub child: Child,
    pub name: String,
}

impl Worker {
    /// `diffgraph worker --queue` writing into `dir/output` (the folder the
    /// front-end started by `Server::start(dir, ..)` serves), with the core
    /// and testing plugins; waits until it is ready.
    pub fn start(dir: &Path, url: &str, name: &str, extra: &[&str]) -> Worker {
        let mut cmd = Command::new(common::diffgraph_bin());
        cmd.current_dir(repo_root())
            .args(["worker", "--queue", url, "--name", name, "--out"])
            .arg(dir.join("output"))
            .arg("--input")
            .arg(dir.join("input"))
            .arg("--models")
            .arg(repo_root().join("models"));
        for p in ["diffgraph_nodes_core", "diffgraph_testnodes"] {
            cmd.arg("--plugins").arg(common::plugin_path(p));
        }
        let mut child = cmd
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start diffgraph worker");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                if line.contains(": ready (") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the worker is ready within 60 s");
        Worker {
            child,
            name: name.into(),
        }
    }

    /// Machine loss: SIGKILL the worker and the child process it runs jobs in.
    pub fn sigkill(&mut self) {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let _ = self.child.kill();
        for c in children.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", c]).status();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// `diffgraph queue status --json`.
pub fn queue_status(url: &str) -> Json {
    let out = Command::new(common::diffgraph_bin())
        .args(["queue", "status", "--queue", url, "--json"])
        .output()
        .expect("run diffgraph queue status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// Sum of a numeric field over the live workers.
pub fn workers_total(status: &Json, field: &str) -> u64 {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[field].as_u64().unwrap())
        .sum()
}

/// Noise (seeded) passed through a Sleep of `ms`, saved as an 8x8 image.
pub fn slow_image_graph(seed: u64, ms: u64, prefix: &str) -> Json {
    json!({ "nodes": {
        "noise": { "type": "GaussianNoise", "inputs": { "seed": seed, "shape": [1, 3, 8, 8] } },
        "wait": { "type": "Sleep", "inputs": { "x": ["noise", "noise"], "ms": ms } },
        "img": { "type": "LatentToImage", "inputs": { "latent": ["wait", "x"] } },
        "save": { "type": "SaveImage", "inputs": { "image": ["img", "image"], "filename_prefix": prefix } }
    }})
}

/// The same, the noise going through `steps` loop iterations of `ms` each
/// (progress messages per step; long enough to kill a worker during it).
pub fn looping_image_graph(seed: u64, steps: u64, ms: u64, prefix: &str) -> Json {
    json!({ "nodes": {
        "noise": { "type": "GaussianNoise", "inputs": { "seed": seed, "shape": [1, 3, 8, 8] } },
        "l": { "type": "Loop", "inputs": { "over": steps, "x": ["noise", "noise"] },
               "body": { "s": { "type": "Sleep", "inputs": { "x": ["l", "x"], "ms": ms } } },
               "next": { "x": ["s", "x"] } },
        "img": { "type": "LatentToImage", "inputs": { "latent": ["l", "x"] } },
        "save": { "type": "SaveImage", "inputs": { "image": ["img", "image"], "filename_prefix": prefix } }
    }})
}

/// The decoded pixels of the first image of a history entry, via `/view`.
pub fn first_image_pixels(server: &Server, entry: &Json) -> Vec<u8> {
    let img = entry["outputs"]
        .as_object()
        .unwrap()
        .values()
        .find_map(|o| o["images"].as_array().and_then(|l| l.first()).cloned())
        .expect("an image output");
    let (status, _, body) = server.request(
        "GET",
        &format!(
            "/view?filename={}&subfolder={}&type=output",
            img["filename"].as_str().unwrap(),
            img["subfolder"].as_str().unwrap()
        ),
        &[],
        b"",
    );
    assert_eq!(status, 200, "/view of {img}");
    image::load_from_memory(&body)
        .expect("a PNG")
        .to_rgb8()
        .into_raw()
}

/// Waits until the history holds `n` entries; returns it.
pub fn wait_history_count(server: &Server, n: usize, limit: Duration) -> Json {
    let t = Instant::now();
    loop {
        let (_, h) = server.get("/history");
        let have = h.as_object().map_or(0, |m| m.len());
        if have >= n {
            return h;
        }
        assert!(
            t.elapsed() < limit,
            "{have} of {n} history entries within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
