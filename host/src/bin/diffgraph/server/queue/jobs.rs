//! The queue and history in Redis, with the same operations as the SQLite
//! `db::Db` the in-process server uses, so the HTTP handlers do not know
//! which one they talk to. Each state change is one Lua script (atomic in
//! Redis), so two front-ends or a front-end and a worker never interleave
//! inside one.
use super::super::db::Job;
use super::conn::Conn;
use super::keys;
use redis::{Script, Value};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::sync::Mutex;

/// Queue a job unless its id exists: hash, pending set, stream entry.
const INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local n
if ARGV[2] == 'front' then n = -redis.call('INCR', KEYS[6]) else n = redis.call('INCR', KEYS[5]) end
redis.call('HSET', KEYS[1], 'number', n, unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], n, ARGV[1])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[1])
redis.call('SADD', KEYS[4], KEYS[3])
return n";

/// Record how a job ended, once: a second finish (a reclaimed job whose
/// first worker was only slow) changes nothing. 1 if recorded.
const FINISH: &str = r"
local st = redis.call('HGET', KEYS[1], 'state')
if (not st) or st == 'success' or st == 'error' or st == 'interrupted' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'outputs', ARGV[3], 'messages', ARGV[4], 'finished', ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return 1";

/// Remove a job if it is in state ARGV[2] (queued, or a finished one).
const DELETE: &str = r"
local st = redis.call('HGET', KEYS[1], 'state')
local want = ARGV[2]
local ok = (st == want) or (want == 'done' and (st == 'success' or st == 'error' or st == 'interrupted'))
if not ok then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1";

pub struct RedisJobs {
    pub conn: Mutex<Conn>,
}

fn err(e: redis::RedisError) -> String {
    format!("redis: {e}")
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A job from its hash (None if the hash is empty: no such job).
pub fn job_from_hash(h: &HashMap<String, String>) -> Option<Job> {
    let id = h.get("id")?.clone();
    let parse = |k: &str| {
        h.get(k)
            .and_then(|s| serde_json::from_str::<Json>(s).ok())
            .unwrap_or(Json::Null)
    };
    Some(Job {
        number: h.get("number").and_then(|n| n.parse().ok()).unwrap_or(0),
        id,
        prompt: parse("prompt"),
        graph: h.get("graph").cloned().unwrap_or_default(),
        client_id: h.get("client_id").cloned(),
        extra: parse("extra"),
        outputs_to_execute: parse("outputs_to_execute"),
        state: h.get("state").cloned().unwrap_or_default(),
        outputs: Some(parse("outputs"))
            .filter(Json::is_object)
            .unwrap_or(json!({})),
        messages: Some(parse("messages"))
            .filter(Json::is_array)
            .unwrap_or(json!([])),
    })
}

impl RedisJobs {
    pub fn new(conn: Conn) -> RedisJobs {
        RedisJobs {
            conn: Mutex::new(conn),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contains(&self, id: &str) -> Result<bool, String> {
        self.conn()
            .run(|c| redis::cmd("EXISTS").arg(keys::job(id)).query::<bool>(c))
            .map_err(err)
    }

    /// Queues a job on its model's stream (`front`: the front stream, read
    /// first by every worker). Returns its number; an error if the id exists.
    pub fn insert(&self, job: &Job, front: bool) -> Result<i64, String> {
        let stream = if front {
            keys::FRONT.to_string()
        } else {
            keys::stream(&keys::model_key(&job.graph))
        };
        let mut fields: Vec<String> = vec![
            "id".into(),
            job.id.clone(),
            "prompt".into(),
            job.prompt.to_string(),
            "graph".into(),
            job.graph.clone(),
            "extra".into(),
            job.extra.to_string(),
            "outputs_to_execute".into(),
            job.outputs_to_execute.to_string(),
            "state".into(),
            "queued".into(),
            "attempts".into(),
            "0".into(),
            "queued_at".into(),
            now_ms().to_string(),
        ];
        if let Some(c) = &job.client_id {
            fields.extend(["client_id".into(), c.clone()]);
        }
        let script = Script::new(INSERT);
        let number: Option<i64> = self
            .conn()
            .run(|c| {
                script
                    .key(keys::job(&job.id))
                    .key(keys::PENDING)
                    .key(&stream)
                    .key(keys::QUEUES)
                    .key(keys::SEQ)
                    .key(keys::FRONT_SEQ)
                    .arg(&job.id)
                    .arg(if front { "front" } else { "back" })
                    .arg(&fields)
                    .invoke(c)
            })
            .map_err(err)?;
        number.ok_or_else(|| format!("prompt_id {} exists", job.id))
    }

    /// Queued plus running.
    pub fn remaining(&self) -> Result<usize, String> {
        self.conn()
            .run(|c| redis::cmd("ZCARD").arg(keys::PENDING).query::<usize>(c))
            .map_err(err)
    }

    /// Jobs by id, in the order given (missing ones skipped).
    pub fn load(&self, ids: &[String]) -> Result<Vec<Job>, String> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let hashes: Vec<HashMap<String, String>> = self
            .conn()
            .run(|c| {
                let mut p = redis::pipe();
                for id in ids {
                    p.hgetall(keys::job(id));
                }
                p.query(c)
            })
            .map_err(err)?;
        Ok(hashes.iter().filter_map(job_from_hash).collect())
    }

    fn range(&self, key: &str, rev: bool, limit: Option<usize>) -> Result<Vec<String>, String> {
        let stop = limit.map_or(-1, |n| n as isize - 1);
        if stop < 0 && limit.is_some() {
            return Ok(Vec::new());
        }
        self.conn()
            .run(|c| {
                redis::cmd(if rev { "ZREVRANGE" } else { "ZRANGE" })
                    .arg(key)
                    .arg(0)
                    .arg(stop)
                    .query::<Vec<String>>(c)
            })
            .map_err(err)
    }

    /// (running, pending) in queue order.
    pub fn queue(&self) -> Result<(Vec<Job>, Vec<Job>), String> {
        let jobs = self.load(&self.range(keys::PENDING, false, None)?)?;
        Ok(jobs.into_iter().partition(|j| j.state == "running"))
    }

    fn delete_where(&self, ids: Vec<String>, index: &str, state: &str) -> Result<usize, String> {
        let script = Script::new(DELETE);
        let mut n = 0;
        for id in ids {
            let k: i64 = self
                .conn()
                .run(|c| {
                    script
                        .key(keys::job(&id))
                        .key(index)
                        .arg(&id)
                        .arg(state)
                        .invoke(c)
                })
                .map_err(err)?;
            n += k as usize;
        }
        Ok(n)
    }

    /// Removes queued jobs (a worker that later meets its stream entry
    /// skips it: the job hash is gone).
    pub fn delete_queued(&self, ids: Option<&[String]>) -> Result<usize, String> {
        let ids = match ids {
            Some(ids) => ids.to_vec(),
            None => self.range(keys::PENDING, false, None)?,
        };
        self.delete_where(ids, keys::PENDING, "queued")
    }

    pub fn history(&self, id: Option<&str>, max_items: Option<usize>) -> Result<Vec<Job>, String> {
        let done = |j: &Job| matches!(j.state.as_str(), "success" | "error" | "interrupted");
        let ids = match (id, max_items) {
            (Some(id), _) => vec![id.to_string()],
            (None, Some(n)) => {
                let mut ids = self.range(keys::HISTORY, true, Some(n))?;
                ids.reverse();
                ids
            }
            (None, None) => self.range(keys::HISTORY, false, None)?,
        };
        Ok(self.load(&ids)?.into_iter().filter(done).collect())
    }

    pub fn delete_history(&self, ids: Option<&[String]>) -> Result<usize, String> {
        let ids = match ids {
            Some(ids) => ids.to_vec(),
            None => self.range(keys::HISTORY, false, None)?,
        };
        self.delete_where(ids, keys::HISTORY, "done")
    }

    /// Records how a job ended, unless it already has (idempotent by job id).
    pub fn finish(
        &self,
        id: &str,
        state: &str,
        outputs: &Json,
        messages: &Json,
    ) -> Result<(), String> {
        let script = Script::new(FINISH);
        let (o, m, t) = (outputs.to_string(), messages.to_string(), now_ms());
        let _: i64 = self
            .conn()
            .run(|c| {
                script
                    .key(keys::job(id))
                    .key(keys::PENDING)
                    .key(keys::HISTORY)
                    .arg(id)
                    .arg(state)
                    .arg(&o)
                    .arg(&m)
                    .arg(t)
                    .invoke(c)
            })
            .map_err(err)?;
        Ok(())
    }

    /// Asks the workers to interrupt `wanted` (every running job with None:
    /// there is no single "current" job across many workers). Returns the
    /// id interrupted, if any.
    pub fn interrupt(&self, wanted: Option<&str>) -> Result<Option<String>, String> {
        let (running, _) = self.queue()?;
        let hits: Vec<String> = running
            .into_iter()
            .map(|j| j.id)
            .filter(|id| wanted.is_none_or(|w| w == id))
            .collect();
        for id in &hits {
            let msg = json!({ "prompt_id": id }).to_string();
            self.conn()
                .run(|c| {
                    redis::cmd("PUBLISH")
                        .arg(keys::INTERRUPT)
                        .arg(&msg)
                        .query::<Value>(c)
                })
                .map_err(err)?;
        }
        Ok(hits.into_iter().next())
    }
}
