//! A worker's side of the Redis Streams protocol: read new entries through
//! the consumer group, reclaim entries whose worker stopped heartbeating
//! (XAUTOCLAIM after the visibility timeout), keep the running entry's idle
//! time low while it runs (XCLAIM JUSTID: the heartbeat), acknowledge,
//! hand back, dead-letter. A stream entry carries only the job id; the job
//! hash is the truth, so a re-delivered entry of a finished job is skipped
//! (job ids are the idempotency keys).
use super::super::db::Job;
use super::conn::Conn;
use super::jobs::{job_from_hash, now_ms};
use super::keys;
use redis::{RedisResult, Script, Value};
use serde_json::json;
use std::collections::{HashMap, HashSet};

/// Mark a job running on worker ARGV[1] unless it is gone or finished.
/// Returns {attempts, previous state, previous worker}; attempts 0: skip it.
const TAKE: &str = r"
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'queued' and st ~= 'running' then return {0, st or '', ''} end
local prev = redis.call('HGET', KEYS[1], 'worker') or ''
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1], 'started', ARGV[2])
local a = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {a, st, prev}";

/// Put a job back at the tail of its stream for another worker.
const HAND_BACK: &str = r"
redis.call('XADD', KEYS[1], '*', 'id', ARGV[1])
redis.call('XACK', KEYS[1], ARGV[3], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], 'state') == 'running' then
  redis.call('HSET', KEYS[2], 'state', 'queued', 'worker', '')
end
return 1";

/// One delivered stream entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub stream: String,
    pub entry: String,
    pub job_id: String,
}

/// What taking an entry's job gave.
pub struct Taken {
    pub job: Job,
    pub attempts: i64,
    /// Errors of earlier attempts (a worker that died during it).
    pub errors: Vec<String>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Entries from `[[id, [field, value, ...]], ...]`.
fn entries(stream: &str, list: &Value) -> Vec<Entry> {
    let Value::Array(items) = list else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let entry = text(pair.first()?)?;
            let Value::Array(fields) = pair.get(1)? else {
                return None;
            };
            let job_id = fields
                .chunks(2)
                .find(|kv| text(&kv[0]).as_deref() == Some("id"))
                .and_then(|kv| kv.get(1).and_then(text))?;
            Some(Entry {
                stream: stream.to_string(),
                entry,
                job_id,
            })
        })
        .collect()
}

pub struct Streams {
    pub conn: Conn,
    pub name: String,
    groups: HashSet<String>,
}

impl Streams {
    pub fn new(conn: Conn, name: String) -> Streams {
        Streams {
            conn,
            name,
            groups: HashSet::new(),
        }
    }

    fn ensure_group(&mut self, stream: &str) -> RedisResult<()> {
        if self.groups.contains(stream) {
            return Ok(());
        }
        let r = self.conn.run(|c| {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(keys::GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query::<()>(c)
        });
        match r {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        self.groups.insert(stream.to_string());
        Ok(())
    }

    /// Every job stream, the front stream first, each with its group.
    pub fn queues(&mut self) -> RedisResult<Vec<String>> {
        let mut list: Vec<String> = self
            .conn
            .run(|c| redis::cmd("SMEMBERS").arg(keys::QUEUES).query(c))?;
        list.retain(|s| s != keys::FRONT);
        list.sort();
        list.insert(0, keys::FRONT.to_string());
        for s in &list {
            self.ensure_group(s)?;
        }
        Ok(list)
    }

    /// New entries: at most one per stream; `block_ms` waits for one.
    pub fn read(&mut self, streams: &[String], block_ms: Option<u64>) -> RedisResult<Vec<Entry>> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let name = self.name.clone();
        let r = self.conn.run(|c| {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(keys::GROUP)
                .arg(&name)
                .arg("COUNT")
                .arg(1);
            if let Some(ms) = block_ms {
                cmd.arg("BLOCK").arg(ms);
            }
            cmd.arg("STREAMS").arg(streams);
            for _ in streams {
                cmd.arg(">");
            }
            cmd.query::<Value>(c)
        });
        let reply = match r {
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis lost its data (no persistence): make the groups again.
                self.groups.clear();
                for s in streams {
                    self.ensure_group(s)?;
                }
                return Ok(Vec::new());
            }
            other => other?,
        };
        let mut out = Vec::new();
        let per_stream: Vec<(Value, Value)> = match reply {
            Value::Array(list) => list
                .into_iter()
                .filter_map(|v| match v {
                    Value::Array(mut p) if p.len() == 2 => {
                        let l = p.pop()?;
                        Some((p.pop()?, l))
                    }
                    _ => None,
                })
                .collect(),
            Value::Map(m) => m,
            _ => Vec::new(),
        };
        for (s, list) in per_stream {
            if let Some(s) = text(&s) {
                out.extend(entries(&s, &list));
            }
        }
        Ok(out)
    }

    /// One entry of `stream` idle longer than `min_idle_ms` (its worker
    /// stopped heartbeating), now ours.
    pub fn reclaim(&mut self, stream: &str, min_idle_ms: u64) -> RedisResult<Option<Entry>> {
        let name = self.name.clone();
        let reply: Value = self.conn.run(|c| {
            redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(keys::GROUP)
                .arg(&name)
                .arg(min_idle_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(1)
                .query(c)
        })?;
        let Value::Array(parts) = reply else {
            return Ok(None);
        };
        Ok(parts
            .get(1)
            .and_then(|l| entries(stream, l).into_iter().next()))
    }

    /// Marks the entry's job running here; None if the job is gone or
    /// finished (the entry is then acknowledged and dropped).
    pub fn take(&mut self, e: &Entry) -> RedisResult<Option<Taken>> {
        let script = Script::new(TAKE);
        let name = self.name.clone();
        let key = keys::job(&e.job_id);
        let (attempts, prev_state, prev_worker): (i64, String, String) = self
            .conn
            .run(|c| script.key(&key).arg(&name).arg(now_ms()).invoke(c))?;
        if attempts == 0 {
            self.ack(e)?;
            return Ok(None);
        }
        let hash: HashMap<String, String> = self
            .conn
            .run(|c| redis::cmd("HGETALL").arg(&key).query(c))?;
        let mut errors: Vec<String> = hash
            .get("errors")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        if prev_state == "running" {
            errors.push(format!(
                "attempt {}: worker `{prev_worker}` stopped (no heartbeat) while running it",
                attempts - 1
            ));
            let list = json!(errors).to_string();
            self.conn.run(|c| {
                redis::cmd("HSET")
                    .arg(&key)
                    .arg("errors")
                    .arg(&list)
                    .query::<()>(c)
            })?;
        }
        Ok(job_from_hash(&hash).map(|job| Taken {
            job,
            attempts,
            errors,
        }))
    }

    /// Done with the entry: acknowledged and deleted (the stream stays short).
    pub fn ack(&mut self, e: &Entry) -> RedisResult<()> {
        self.conn.run(|c| {
            redis::pipe()
                .atomic()
                .cmd("XACK")
                .arg(&e.stream)
                .arg(keys::GROUP)
                .arg(&e.entry)
                .ignore()
                .cmd("XDEL")
                .arg(&e.stream)
                .arg(&e.entry)
                .ignore()
                .query::<()>(c)
        })
    }

    /// Gives the entry's job back to the queue (shutdown, or read too many).
    pub fn hand_back(&mut self, e: &Entry) -> RedisResult<()> {
        let script = Script::new(HAND_BACK);
        self.conn.run(|c| {
            script
                .key(&e.stream)
                .key(keys::job(&e.job_id))
                .arg(&e.job_id)
                .arg(&e.entry)
                .arg(keys::GROUP)
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    /// Moves a job that failed too often to the dead-letter stream with its
    /// errors, and acknowledges its entry.
    pub fn dead_letter(&mut self, e: &Entry, errors: &[String]) -> RedisResult<()> {
        let list = json!(errors).to_string();
        self.conn.run(|c| {
            redis::cmd("XADD")
                .arg(keys::DEAD)
                .arg("*")
                .arg("id")
                .arg(&e.job_id)
                .arg("stream")
                .arg(&e.stream)
                .arg("errors")
                .arg(&list)
                .query::<String>(c)
        })?;
        self.ack(e)
    }
}

/// Resets the running entry's idle time (the job is alive), from the
/// heartbeat thread's own connection; only while this worker still owns it
/// (a worker paused past the visibility timeout must not take back an entry
/// another worker reclaimed).
pub fn touch(conn: &mut Conn, name: &str, e: &Entry) -> RedisResult<()> {
    let pending: Value = conn.run(|c| {
        redis::cmd("XPENDING")
            .arg(&e.stream)
            .arg(keys::GROUP)
            .arg(&e.entry)
            .arg(&e.entry)
            .arg(1)
            .query(c)
    })?;
    let owner = match &pending {
        Value::Array(rows) => rows.first().and_then(|r| match r {
            Value::Array(f) => f.get(1).and_then(text),
            _ => None,
        }),
        _ => None,
    };
    if owner.as_deref() != Some(name) {
        return Ok(());
    }
    conn.run(|c| {
        redis::cmd("XCLAIM")
            .arg(&e.stream)
            .arg(keys::GROUP)
            .arg(name)
            .arg(0)
            .arg(&e.entry)
            .arg("JUSTID")
            .query::<Value>(c)
    })?;
    Ok(())
}

/// `ms-seq` as a pair, for ordering entry ids.
pub fn entry_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Array(kv) => kv
            .chunks(2)
            .find(|p| text(&p[0]).as_deref() == Some(name))
            .and_then(|p| p.get(1)),
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .map(|(_, v)| v),
        _ => None,
    }
}

impl Streams {
    /// The id of each stream's oldest entry not yet delivered to the group
    /// (None: nothing waiting), so that jobs are taken oldest first across
    /// the model streams.
    pub fn heads(&mut self, streams: &[String]) -> RedisResult<Vec<Option<(u64, u64)>>> {
        let infos: Vec<Value> = self.conn.run(|c| {
            let mut p = redis::pipe();
            for s in streams {
                p.cmd("XINFO").arg("GROUPS").arg(s);
            }
            p.query(c)
        })?;
        let last: Vec<String> = infos
            .iter()
            .map(|groups| {
                let list = match groups {
                    Value::Array(l) | Value::Set(l) => l.as_slice(),
                    _ => &[],
                };
                list.iter()
                    .find(|g| field(g, "name").and_then(text).as_deref() == Some(keys::GROUP))
                    .and_then(|g| field(g, "last-delivered-id").and_then(text))
                    .unwrap_or_else(|| "0-0".into())
            })
            .collect();
        let next: Vec<Value> = self.conn.run(|c| {
            let mut p = redis::pipe();
            for (s, l) in streams.iter().zip(&last) {
                p.cmd("XRANGE")
                    .arg(s)
                    .arg(format!("({l}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1);
            }
            p.query(c)
        })?;
        Ok(next
            .iter()
            .map(|v| entries("", v).first().map(|e| entry_id(&e.entry)))
            .collect())
    }
}
