//! `diffgraph queue status --queue redis://...`: the live workers (state,
//! job, resident models, loads), queue depth per model stream, running and
//! finished counts, and the dead letters with their errors.
use super::conn::{self, Conn};
use super::jobs::RedisJobs;
use super::keys;
use crate::args::EXIT_BAD_INPUT;
use clap::{Args, Subcommand};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap};

#[derive(Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Workers, their models, queue depth and dead letters.
    Status {
        /// redis://HOST:PORT/N
        #[arg(long, value_name = "URL")]
        queue: String,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub fn queue(a: QueueArgs) -> i32 {
    let QueueCommand::Status { queue, json } = a.command;
    match collect(&queue) {
        Ok(s) if json => {
            println!("{s}");
            0
        }
        Ok(s) => {
            print!("{}", text(&s));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_BAD_INPUT
        }
    }
}

/// Everything `status` shows, as JSON.
pub fn collect(url: &str) -> Result<Json, String> {
    let client = conn::client(url)?;
    let mut c = Conn::connect(client.clone())?;
    let err = |e: redis::RedisError| format!("redis: {e}");
    let workers = super::presence::workers(&mut c).map_err(err)?;
    let jobs = RedisJobs::new(Conn::new(client));
    let (running, queued) = jobs.queue()?;
    let mut per_model: BTreeMap<String, usize> = BTreeMap::new();
    for j in &queued {
        *per_model.entry(keys::model_key(&j.graph)).or_default() += 1;
    }
    let finished: usize = c
        .run(|c| redis::cmd("ZCARD").arg(keys::HISTORY).query(c))
        .map_err(err)?;
    let dead: Vec<(String, HashMap<String, String>)> = c
        .run(|c| {
            redis::cmd("XRANGE")
                .arg(keys::DEAD)
                .arg("-")
                .arg("+")
                .query(c)
        })
        .map_err(err)?;
    let workers: Vec<Json> = workers
        .iter()
        .map(|w| {
            let get = |k: &str| w.get(k).cloned().unwrap_or_default();
            let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
            json!({
                "name": get("name"), "state": get("state"), "job": get("job"),
                "models": serde_json::from_str::<Json>(&get("models")).unwrap_or(json!([])),
                "loads": num("loads"), "jobs": num("jobs"), "seen_ms": num("seen"),
            })
        })
        .collect();
    let dead: Vec<Json> = dead
        .into_iter()
        .map(|(entry, f)| {
            json!({
                "entry": entry,
                "prompt_id": f.get("id"),
                "errors": f.get("errors").and_then(|e| serde_json::from_str::<Json>(e).ok()),
            })
        })
        .collect();
    Ok(json!({
        "workers": workers,
        "queued": queued.len(),
        "running": running.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        "queued_by_model": per_model,
        "finished": finished,
        "dead_letters": dead,
    }))
}

fn text(s: &Json) -> String {
    let mut out = format!(
        "{} queued, {} running, {} finished, {} dead letter(s)\n",
        s["queued"],
        s["running"].as_array().map_or(0, Vec::len),
        s["finished"],
        s["dead_letters"].as_array().map_or(0, Vec::len)
    );
    let workers = s["workers"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("workers: {}\n", workers.len()));
    for w in &workers {
        let models: Vec<&str> = w["models"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .collect();
        out.push_str(&format!(
            "  {:<20} {:<6} jobs {:<5} loads {:<4} {}{}\n",
            w["name"].as_str().unwrap_or_default(),
            w["state"].as_str().unwrap_or_default(),
            w["jobs"],
            w["loads"],
            w["job"]
                .as_str()
                .filter(|j| !j.is_empty())
                .map(|j| format!("running {j} "))
                .unwrap_or_default(),
            if models.is_empty() {
                String::new()
            } else {
                format!("models {}", models.join(", "))
            }
        ));
    }
    for (model, n) in s["queued_by_model"].as_object().into_iter().flatten() {
        let m = if model.is_empty() {
            "(no model)"
        } else {
            model
        };
        out.push_str(&format!("queued for {m}: {n}\n"));
    }
    for d in s["dead_letters"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "dead letter {}: {}\n",
            d["prompt_id"], d["errors"]
        ));
    }
    out
}
