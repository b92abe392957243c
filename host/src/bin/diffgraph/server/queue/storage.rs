//! Where a worker's output files go so that every front-end can serve them
//! (`GET /view`): a folder every machine mounts (NFS-style; the worker's
//! `--out` and the front-end's `--output` are the same folder), or Redis
//! itself for small outputs (the worker uploads each file before announcing
//! it; a front-end writes it into its own output folder when the announcement
//! passes through it). An S3-compatible store is the next implementation of
//! the same two calls (docs/scale-out.md).
use super::conn::Conn;
use super::keys;
use std::path::Path;
use std::sync::Mutex;

/// `--output-store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A folder shared by every machine (the default; also a single machine).
    Folder,
    /// Redis keys `dg:file:<subfolder/name>` (files up to 16 MiB).
    Redis,
}

/// The largest file the Redis store takes.
pub const MAX_REDIS_FILE: usize = 16 << 20;

pub trait OutputStore: Send + Sync {
    /// The worker wrote `root/rel`; make it reachable by every front-end.
    fn publish(&self, root: &Path, rel: &str) -> Result<(), String>;
    /// A front-end wants `root/rel` and does not have it: fetch it there.
    /// False if the store does not have it either.
    fn fetch(&self, root: &Path, rel: &str) -> Result<bool, String>;
}

/// The shared folder: nothing to move.
pub struct SharedFolder;

impl OutputStore for SharedFolder {
    fn publish(&self, _: &Path, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn fetch(&self, root: &Path, rel: &str) -> Result<bool, String> {
        Ok(root.join(rel).is_file())
    }
}

pub struct RedisFiles {
    pub conn: Mutex<Conn>,
}

impl OutputStore for RedisFiles {
    fn publish(&self, root: &Path, rel: &str) -> Result<(), String> {
        let path = root.join(rel);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if bytes.len() > MAX_REDIS_FILE {
            return Err(format!(
                "{} has {} bytes, more than the Redis output store takes ({MAX_REDIS_FILE}); use a shared folder",
                path.display(),
                bytes.len()
            ));
        }
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.run(|c| {
            redis::cmd("SET")
                .arg(keys::file(rel))
                .arg(&bytes)
                .query::<()>(c)
        })
        .map_err(|e| format!("redis: {e}"))
    }

    fn fetch(&self, root: &Path, rel: &str) -> Result<bool, String> {
        let path = root.join(rel);
        if path.is_file() {
            return Ok(true);
        }
        let bytes: Option<Vec<u8>> = {
            let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            c.run(|c| redis::cmd("GET").arg(keys::file(rel)).query(c))
                .map_err(|e| format!("redis: {e}"))?
        };
        let Some(bytes) = bytes else {
            return Ok(false);
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        // Write beside, then rename: a reader never sees half a file.
        let tmp = path.with_extension(format!("part{}", std::process::id()));
        std::fs::write(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(true)
    }
}

/// The store `--output-store` names.
pub fn open(kind: StoreKind, client: &redis::Client) -> Box<dyn OutputStore> {
    match kind {
        StoreKind::Folder => Box::new(SharedFolder),
        StoreKind::Redis => Box::new(RedisFiles {
            conn: Mutex::new(Conn::new(client.clone())),
        }),
    }
}

/// The `subfolder/filename` of each output image an `executed` message
/// announces (ComfyUI's `{"output": {"images": [{filename, subfolder, type}]}}`),
/// only plain relative paths.
pub fn announced(message: &serde_json::Value) -> Vec<String> {
    if message["type"] != "executed" {
        return Vec::new();
    }
    let output = &message["data"]["output"];
    output
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(_, list)| list.as_array().into_iter().flatten())
        .filter(|f| f["type"] == "output" || f["type"].is_null())
        .filter_map(|f| {
            let name = f["filename"].as_str()?;
            let sub = f["subfolder"].as_str().unwrap_or_default();
            let rel = if sub.is_empty() {
                name.to_string()
            } else {
                format!("{sub}/{name}")
            };
            let plain = Path::new(&rel)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            plain.then_some(rel)
        })
        .collect()
}
