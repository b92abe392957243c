//! A queue worker's presence in Redis: its record (state, running job,
//! resident models, loads; expiring without heartbeats), the heartbeat
//! thread that refreshes it and the running entry's idle time, and leaving.
//! `diffgraph queue status` and model-affinity routing read the records.
use super::conn::Conn;
use super::keys;
use super::streams::{touch, Entry};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the heartbeat advertises.
#[derive(Default)]
pub struct Info {
    pub state: &'static str,
    pub running: Option<Entry>,
    /// Model keys resident in the child's executor cache, most recent last.
    pub models: Vec<String>,
    /// Loader nodes that ran (not cached) since this worker started.
    pub loads: u64,
    pub jobs: u64,
    /// The child process generation `models` belongs to (a crashed child
    /// is restarted with an empty cache).
    pub epoch: usize,
}

pub type Shared = Arc<Mutex<Info>>;

pub fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Info> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes this worker's record (expires after `ttl` without a heartbeat).
pub fn advertise(
    conn: &mut Conn,
    name: &str,
    info: &Info,
    ttl: Duration,
) -> redis::RedisResult<()> {
    let key = keys::worker(name);
    let job = info
        .running
        .as_ref()
        .map(|e| e.job_id.clone())
        .unwrap_or_default();
    let models = json!(info.models).to_string();
    conn.run(|c| {
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("name")
            .arg(name)
            .arg("state")
            .arg(info.state)
            .arg("job")
            .arg(&job)
            .arg("models")
            .arg(&models)
            .arg("loads")
            .arg(info.loads)
            .arg("jobs")
            .arg(info.jobs)
            .arg("seen")
            .arg(super::jobs::now_ms())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(keys::WORKERS)
            .arg(name)
            .ignore()
            .query::<()>(c)
    })
}

/// The other live workers' records.
pub fn workers(conn: &mut Conn) -> redis::RedisResult<Vec<HashMap<String, String>>> {
    let names: Vec<String> = conn.run(|c| redis::cmd("SMEMBERS").arg(keys::WORKERS).query(c))?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let hashes: Vec<HashMap<String, String>> = conn.run(|c| {
        let mut p = redis::pipe();
        for n in &names {
            p.hgetall(keys::worker(n));
        }
        p.query(c)
    })?;
    let (live, gone): (Vec<_>, Vec<_>) = names
        .into_iter()
        .zip(hashes)
        .partition(|(_, h)| !h.is_empty());
    if !gone.is_empty() {
        let gone: Vec<String> = gone.into_iter().map(|(n, _)| n).collect();
        conn.run(|c| {
            redis::cmd("SREM")
                .arg(keys::WORKERS)
                .arg(&gone)
                .query::<()>(c)
        })?;
    }
    Ok(live.into_iter().map(|(_, h)| h).collect())
}

pub fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

pub fn leave(client: &redis::Client, name: &str) {
    let mut c = Conn::new(client.clone());
    c.patience = Duration::from_secs(2);
    let _ = c.run(|c| {
        redis::pipe()
            .cmd("DEL")
            .arg(keys::worker(name))
            .ignore()
            .cmd("SREM")
            .arg(keys::WORKERS)
            .arg(name)
            .ignore()
            .query::<()>(c)
    });
}

pub fn heartbeat(client: redis::Client, name: String, info: Shared, visibility: Duration) {
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            let mut conn = Conn::new(client);
            loop {
                std::thread::sleep(visibility / 3);
                let running = lock(&info).running.clone();
                if let Some(e) = running {
                    let _ = touch(&mut conn, &name, &e);
                }
                let _ = advertise(&mut conn, &name, &lock(&info), visibility);
            }
        })
        .expect("can start a thread");
}
