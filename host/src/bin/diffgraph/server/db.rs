//! The queue and the history in one SQLite table (`<output>/diffgraph-server.sqlite3`),
//! so that a server killed with SIGKILL loses no accepted job: a job is
//! written before `POST /prompt` answers, and its state changes are written
//! as they happen. WAL mode: a process crash never loses a committed row.
//!
//! Recovery at start: a job that was `running` when the server died is put
//! back in the queue once (it may be what killed the server); if it was
//! already re-queued once it is marked `error` instead.
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value as Json};
use std::path::Path;

/// A job as stored.
#[derive(Clone, Debug)]
pub struct Job {
    pub number: i64,
    pub id: String,
    /// The prompt as submitted (native graph or ComfyUI API format).
    pub prompt: Json,
    /// The native graph text the worker runs.
    pub graph: String,
    pub client_id: Option<String>,
    pub extra: Json,
    pub outputs_to_execute: Json,
    pub state: String,
    pub outputs: Json,
    pub messages: Json,
}

impl Job {
    /// ComfyUI's queue item: `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
    pub fn queue_item(&self) -> Json {
        json!([
            self.number,
            self.id,
            self.prompt,
            self.extra,
            self.outputs_to_execute
        ])
    }

    /// ComfyUI's history entry.
    pub fn history_entry(&self) -> Json {
        json!({
            "prompt": self.queue_item(),
            "outputs": self.outputs,
            "status": {
                "status_str": if self.state == "success" { "success" } else { "error" },
                "completed": self.state == "success",
                "messages": self.messages,
            },
            "meta": {},
        })
    }
}

pub struct Db {
    conn: Connection,
}

const COLUMNS: &str =
    "number, id, prompt, graph, client_id, extra, outputs_to_execute, state, outputs, messages";

fn row_job(r: &rusqlite::Row) -> rusqlite::Result<Job> {
    let parse = |i: usize| -> rusqlite::Result<Json> {
        let s: Option<String> = r.get(i)?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Json::Null))
    };
    Ok(Job {
        number: r.get(0)?,
        id: r.get(1)?,
        prompt: parse(2)?,
        graph: r.get(3)?,
        client_id: r.get(4)?,
        extra: parse(5)?,
        outputs_to_execute: parse(6)?,
        state: r.get(7)?,
        outputs: Some(parse(8)?).filter(Json::is_object).unwrap_or(json!({})),
        messages: Some(parse(9)?).filter(Json::is_array).unwrap_or(json!([])),
    })
}

fn err(e: rusqlite::Error) -> String {
    format!("database: {e}")
}

impl Db {
    /// Opens (creates) the database and recovers jobs that were running.
    /// Returns it with the ids re-queued and the ids marked failed.
    pub fn open(path: &Path) -> Result<(Db, Vec<String>, Vec<String>), String> {
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS jobs (
               number INTEGER NOT NULL,
               id TEXT PRIMARY KEY,
               prompt TEXT NOT NULL,
               graph TEXT NOT NULL,
               client_id TEXT,
               extra TEXT NOT NULL,
               outputs_to_execute TEXT NOT NULL,
               state TEXT NOT NULL,
               attempts INTEGER NOT NULL DEFAULT 0,
               outputs TEXT,
               messages TEXT,
               finished INTEGER
             );
             CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, number);",
        )
        .map_err(err)?;
        let ids = |state_sql: &str| -> Result<Vec<String>, String> {
            let mut st = conn
                .prepare(&format!("SELECT id FROM jobs WHERE {state_sql}"))
                .map_err(err)?;
            let rows = st.query_map([], |r| r.get(0)).map_err(err)?;
            rows.collect::<Result<_, _>>().map_err(err)
        };
        let requeue = ids("state = 'running' AND attempts < 2")?;
        let failed = ids("state = 'running' AND attempts >= 2")?;
        let messages = json!([["execution_error", {
            "exception_message": "the server stopped twice while this job ran; not retried again",
            "exception_type": "ServerRestart"}]]);
        conn.execute(
            "UPDATE jobs SET state = 'error', outputs = '{}', messages = ?1, finished = strftime('%s','now')
             WHERE state = 'running' AND attempts >= 2",
            [messages.to_string()],
        )
        .map_err(err)?;
        conn.execute(
            "UPDATE jobs SET state = 'queued' WHERE state = 'running'",
            [],
        )
        .map_err(err)?;
        Ok((Db { conn }, requeue, failed))
    }

    pub fn contains(&self, id: &str) -> Result<bool, String> {
        let found: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(err)?;
        Ok(found.is_some())
    }

    /// Queues a job; `front` puts it before every queued job. Returns its number.
    pub fn insert(&self, job: &Job, front: bool) -> Result<i64, String> {
        let edge: Option<i64> = self
            .conn
            .query_row(
                if front {
                    "SELECT MIN(number) FROM jobs"
                } else {
                    "SELECT MAX(number) FROM jobs"
                },
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let number = match edge {
            None => 0,
            Some(n) if front => n - 1,
            Some(n) => n + 1,
        };
        self.conn
            .execute(
                "INSERT INTO jobs (number, id, prompt, graph, client_id, extra, outputs_to_execute, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued')",
                params![
                    number,
                    job.id,
                    job.prompt.to_string(),
                    job.graph,
                    job.client_id,
                    job.extra.to_string(),
                    job.outputs_to_execute.to_string()
                ],
            )
            .map_err(err)?;
        Ok(number)
    }

    fn select(&self, filter: &str, p: impl rusqlite::Params) -> Result<Vec<Job>, String> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM jobs WHERE {filter}"))
            .map_err(err)?;
        let rows = st.query_map(p, row_job).map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    /// Queued plus running.
    pub fn remaining(&self) -> Result<usize, String> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(err)
    }

    /// Takes the first queued job and marks it running.
    pub fn take_next(&mut self) -> Result<Option<Job>, String> {
        let tx = self.conn.transaction().map_err(err)?;
        let job = {
            let mut st = tx
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY number LIMIT 1"
                ))
                .map_err(err)?;
            st.query_row([], row_job).optional().map_err(err)?
        };
        if let Some(j) = &job {
            tx.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1 WHERE id = ?1",
                [&j.id],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(job)
    }

    /// Records how a job ended (`success`, `error`, `interrupted`).
    pub fn finish(
        &self,
        id: &str,
        state: &str,
        outputs: &Json,
        messages: &Json,
    ) -> Result<(), String> {
        self.conn
            .execute(
                "UPDATE jobs SET state = ?2, outputs = ?3, messages = ?4, finished = strftime('%s','now') WHERE id = ?1",
                params![id, state, outputs.to_string(), messages.to_string()],
            )
            .map(|_| ())
            .map_err(err)
    }

    /// (running, pending) in queue order.
    pub fn queue(&self) -> Result<(Vec<Job>, Vec<Job>), String> {
        Ok((
            self.select("state = 'running' ORDER BY number", [])?,
            self.select("state = 'queued' ORDER BY number", [])?,
        ))
    }

    /// Removes queued jobs: those in `ids`, or all with None. Returns how many.
    pub fn delete_queued(&self, ids: Option<&[String]>) -> Result<usize, String> {
        match ids {
            None => self
                .conn
                .execute("DELETE FROM jobs WHERE state = 'queued'", []),
            Some(ids) => ids.iter().try_fold(0, |n, id| {
                self.conn
                    .execute("DELETE FROM jobs WHERE state = 'queued' AND id = ?1", [id])
                    .map(|k| n + k)
            }),
        }
        .map_err(err)
    }

    /// Finished jobs, oldest first (`max_items`: the newest that many), or one.
    pub fn history(&self, id: Option<&str>, max_items: Option<usize>) -> Result<Vec<Job>, String> {
        let done = "state IN ('success', 'error', 'interrupted')";
        match (id, max_items) {
            (Some(id), _) => self.select(&format!("{done} AND id = ?1"), [id]),
            (None, Some(n)) => {
                let mut jobs = self.select(
                    &format!("{done} ORDER BY finished DESC, rowid DESC LIMIT ?1"),
                    [n as i64],
                )?;
                jobs.reverse();
                Ok(jobs)
            }
            (None, None) => self.select(&format!("{done} ORDER BY finished, rowid"), []),
        }
    }

    /// Removes finished jobs: those in `ids`, or all with None.
    pub fn delete_history(&self, ids: Option<&[String]>) -> Result<usize, String> {
        let done = "state IN ('success', 'error', 'interrupted')";
        match ids {
            None => self
                .conn
                .execute(&format!("DELETE FROM jobs WHERE {done}"), []),
            Some(ids) => ids.iter().try_fold(0, |n, id| {
                self.conn
                    .execute(&format!("DELETE FROM jobs WHERE {done} AND id = ?1"), [id])
                    .map(|k| n + k)
            }),
        }
        .map_err(err)
    }
}
