//! The queue seam: `serve` keeps its queue and history in SQLite and runs
//! jobs itself (in-process queue), or, with `--queue redis://HOST:PORT/N`,
//! keeps them in Redis, where any number of `diffgraph worker --queue`
//! processes on any machines take jobs from Redis Streams and any number of
//! front-ends serve the same API (docs/scale-out.md).
//!
//! [`Db`] is what the HTTP handlers and the job runner call: the same
//! operations on either backend. The Redis pieces: `keys` (where things
//! live), `conn` (a connection that survives a Redis restart), `jobs` (the
//! queue and history), `relay` (WebSocket messages and output files between
//! workers and front-ends), `streams` (taking, reclaiming, acknowledging,
//! dead-lettering), `worker` (`diffgraph worker --queue`), `status`
//! (`diffgraph queue status`).
pub mod conn;
pub mod jobs;
pub mod keys;
pub mod presence;
pub mod relay;
pub mod status;
pub mod storage;
pub mod streams;
pub mod worker;

use super::db::{self, Job};
use serde_json::Value as Json;

/// The queue and history: SQLite (`serve` runs the jobs) or Redis (workers do).
pub enum Db {
    Local(db::Db),
    Redis(jobs::RedisJobs),
}

impl Db {
    pub fn is_redis(&self) -> bool {
        matches!(self, Db::Redis(_))
    }

    pub fn contains(&self, id: &str) -> Result<bool, String> {
        match self {
            Db::Local(d) => d.contains(id),
            Db::Redis(r) => r.contains(id),
        }
    }

    pub fn insert(&self, job: &Job, front: bool) -> Result<i64, String> {
        match self {
            Db::Local(d) => d.insert(job, front),
            Db::Redis(r) => r.insert(job, front),
        }
    }

    pub fn remaining(&self) -> Result<usize, String> {
        match self {
            Db::Local(d) => d.remaining(),
            Db::Redis(r) => r.remaining(),
        }
    }

    /// The next job for the in-process runner; never one with Redis (the
    /// workers take those from the streams).
    pub fn take_next(&mut self) -> Result<Option<Job>, String> {
        match self {
            Db::Local(d) => d.take_next(),
            Db::Redis(_) => Ok(None),
        }
    }

    pub fn finish(
        &self,
        id: &str,
        state: &str,
        outputs: &Json,
        messages: &Json,
    ) -> Result<(), String> {
        match self {
            Db::Local(d) => d.finish(id, state, outputs, messages),
            Db::Redis(r) => r.finish(id, state, outputs, messages),
        }
    }

    pub fn queue(&self) -> Result<(Vec<Job>, Vec<Job>), String> {
        match self {
            Db::Local(d) => d.queue(),
            Db::Redis(r) => r.queue(),
        }
    }

    pub fn delete_queued(&self, ids: Option<&[String]>) -> Result<usize, String> {
        match self {
            Db::Local(d) => d.delete_queued(ids),
            Db::Redis(r) => r.delete_queued(ids),
        }
    }

    pub fn history(&self, id: Option<&str>, max_items: Option<usize>) -> Result<Vec<Job>, String> {
        match self {
            Db::Local(d) => d.history(id, max_items),
            Db::Redis(r) => r.history(id, max_items),
        }
    }

    pub fn delete_history(&self, ids: Option<&[String]>) -> Result<usize, String> {
        match self {
            Db::Local(d) => d.delete_history(ids),
            Db::Redis(r) => r.delete_history(ids),
        }
    }

    /// With Redis: interrupts through the workers and returns
    /// `Some(the id interrupted)`; None for the in-process queue (the
    /// handler interrupts its own worker).
    pub fn interrupt_remote(&self, wanted: Option<&str>) -> Option<Result<Option<String>, String>> {
        match self {
            Db::Local(_) => None,
            Db::Redis(r) => Some(r.interrupt(wanted)),
        }
    }
}

/// Opens the backend `serve` (and a worker) was given: Redis with
/// `--queue`, else SQLite in the output folder. Also returns the ids
/// re-queued and failed by SQLite's recovery (none with Redis: reclaiming
/// is the workers' job).
pub fn open(
    queue: Option<&str>,
    output: &std::path::Path,
) -> Result<(Db, Vec<String>, Vec<String>), String> {
    match queue {
        Some(url) => {
            let c = conn::Conn::connect(conn::client(url)?)?;
            Ok((Db::Redis(jobs::RedisJobs::new(c)), Vec::new(), Vec::new()))
        }
        None => {
            let (d, r, f) = db::Db::open(&output.join("diffgraph-server.sqlite3"))?;
            Ok((Db::Local(d), r, f))
        }
    }
}
