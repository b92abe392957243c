//! What the handlers and the job runner share.
use super::args::ServeArgs;
use super::queue::Db;
use diffgraph::worker::{Interrupter, WorkerCommand};
use diffgraph::Registry;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use tokio::sync::broadcast;

/// One WebSocket message: for one client (`Some(client_id)`) or everyone.
#[derive(Clone, Debug)]
pub struct WsMessage {
    pub target: Option<String>,
    pub payload: Payload,
}

/// A JSON text message, or a binary one (ComfyUI's previews).
#[derive(Clone, Debug)]
pub enum Payload {
    Text(Arc<str>),
    Binary(Arc<[u8]>),
}

pub struct AppState {
    /// Node types, for validation and `/object_info` (nodes run in the
    /// worker); replaced whole by a hot reload (`reload`).
    pub registry: RwLock<Registry>,
    pub reloads: super::reload::Reloads,
    pub db: Mutex<Db>,
    /// Set when a job is queued; the runner waits on it.
    pub wake: (Mutex<bool>, Condvar),
    pub ws: broadcast::Sender<WsMessage>,
    /// The running job's id, and how to interrupt it.
    pub running: Mutex<Option<String>>,
    pub interrupter: Mutex<Option<Interrupter>>,
    pub worker: WorkerCommand,
    pub output: PathBuf,
    pub input: PathBuf,
    pub temp: PathBuf,
    pub models: PathBuf,
    pub token: Option<String>,
    /// `--device` as given (cpu, cuda:N, auto), for `/system_stats`.
    pub device: String,
    /// The worker's device and memory as it last reported them
    /// (`device::stats_json`: at its start and after each job); Null before.
    pub device_stats: Mutex<serde_json::Value>,
    pub max_queue: usize,
    pub max_body: usize,
}

fn folder(p: &Path, what: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(p).map_err(|e| format!("{what} folder {}: {e}", p.display()))?;
    std::fs::canonicalize(p).map_err(|e| format!("{what} folder {}: {e}", p.display()))
}

impl AppState {
    pub fn new(a: &ServeArgs) -> Result<AppState, String> {
        let output = folder(&a.output, "output")?;
        let input = folder(&a.input, "input")?;
        let temp = folder(&output.join("temp"), "temp")?;
        let models = std::fs::canonicalize(&a.models).unwrap_or_else(|_| a.models.clone());
        let token = match &a.auth_token_file {
            None => None,
            Some(f) => {
                let t = std::fs::read_to_string(f)
                    .map_err(|e| format!("--auth-token-file {}: {e}", f.display()))?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    return Err(format!(
                        "--auth-token-file {}: the file is empty",
                        f.display()
                    ));
                }
                Some(t)
            }
        };
        diffgraph::device::init();
        let (registry, skipped) = super::reload::load_plugins(&a.plugins.sources(), a.watch);
        for s in skipped {
            eprintln!("warning: {s}");
        }
        let (db, requeued, failed) = super::queue::open(a.queue.as_deref(), &output)?;
        if !requeued.is_empty() {
            eprintln!(
                "re-queued {} job(s) that were running when the server stopped",
                requeued.len()
            );
        }
        if !failed.is_empty() {
            eprintln!(
                "marked {} job(s) failed: the server stopped twice while they ran",
                failed.len()
            );
        }
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut args: Vec<std::ffi::OsString> = vec!["worker".into()];
        for p in &a.plugins.plugins {
            args.push("--plugins".into());
            args.push(std::path::absolute(p).unwrap_or(p.clone()).into());
        }
        let device = crate::worker::device_arg(a.device);
        args.push("--device".into());
        args.push(device.clone().into());
        args.push("--out".into());
        args.push(output.clone().into());
        args.extend(a.preview.to_args());
        if a.watch {
            args.push("--watch".into());
        }
        if let Some(mb) = a.cache_mb {
            args.push("--cache-mb".into());
            args.push(mb.to_string().into());
        }
        Ok(AppState {
            registry: RwLock::new(registry),
            reloads: Default::default(),
            db: Mutex::new(db),
            wake: (Mutex::new(true), Condvar::new()),
            ws: broadcast::channel(4096).0,
            running: Mutex::new(None),
            interrupter: Mutex::new(None),
            worker: WorkerCommand { program: exe, args },
            output,
            input,
            temp,
            models,
            token,
            device,
            device_stats: Mutex::new(serde_json::Value::Null),
            max_queue: a.max_queue,
            max_body: a.max_body_mb.saturating_mul(1 << 20),
        })
    }

    /// The node types now (a cheap copy: a hot reload may replace them).
    pub fn registry(&self) -> Registry {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the worker's latest device report (Null: keep the last).
    pub fn set_device_stats(&self, stats: serde_json::Value) {
        if !stats.is_null() {
            *self.device_stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
        }
    }

    /// Wakes the runner (a job was queued).
    pub fn wake(&self) {
        *self.wake.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.1.notify_all();
    }

    /// Sends a message `{"type", "data"}` to one client or all.
    pub fn send(&self, target: Option<&str>, kind: &str, data: serde_json::Value) {
        let text = serde_json::json!({ "type": kind, "data": data }).to_string();
        let _ = self.ws.send(WsMessage {
            target: target.map(str::to_string),
            payload: Payload::Text(text.into()),
        });
    }

    /// Sends a binary message: ComfyUI's big-endian u32 event type, then
    /// `data` (`server.py` `encode_bytes`).
    pub fn send_binary(&self, target: Option<&str>, event: u32, data: &[u8]) {
        let mut bytes = Vec::with_capacity(4 + data.len());
        bytes.extend_from_slice(&event.to_be_bytes());
        bytes.extend_from_slice(data);
        let _ = self.ws.send(WsMessage {
            target: target.map(str::to_string),
            payload: Payload::Binary(bytes.into()),
        });
    }

    /// ComfyUI's `status` message body.
    pub fn status(&self) -> serde_json::Value {
        let remaining = self.db().remaining().unwrap_or(0);
        serde_json::json!({ "status": { "exec_info": { "queue_remaining": remaining } } })
    }

    /// Broadcasts the queue length (after every queue change).
    pub fn send_status(&self) {
        self.send(None, "status", self.status());
    }
}
