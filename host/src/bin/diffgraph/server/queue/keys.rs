//! Where everything lives in Redis. One prefix (`dg`) for every key, so a
//! Redis shared with other programs is safe, and `KEYS`-free listing.
//!
//! - `dg:job:<id>`: a hash per job (the prompt, the native graph, state,
//!   outputs, messages, attempts, the worker running it, errors).
//! - `dg:q:<model>`: one stream per model key (the checkpoints a job loads),
//!   plus `dg:q:!front` for `front: true` prompts; consumer group `workers`.
//!   `dg:queues` is the set of those streams.
//! - `dg:pending` (sorted set, queue number -> id): queued and running jobs;
//!   `dg:history` (sorted set, finish time -> id): finished jobs.
//! - `dg:dead`: the dead-letter stream (jobs that failed too often).
//! - `dg:workers` (set of names) and `dg:worker:<name>` (hash with a TTL:
//!   state, job, resident models, loads; gone when heartbeats stop).
//! - `dg:events`: pub/sub channel of WebSocket messages (workers -> front-ends);
//!   `dg:interrupt`: pub/sub channel of interrupts (front-ends -> workers).
//! - `dg:file:<subfolder/name>`: an output file's bytes (`--output-store redis`).
pub const GROUP: &str = "workers";
pub const PENDING: &str = "dg:pending";
pub const HISTORY: &str = "dg:history";
pub const QUEUES: &str = "dg:queues";
pub const FRONT: &str = "dg:q:!front";
pub const DEAD: &str = "dg:dead";
pub const WORKERS: &str = "dg:workers";
pub const EVENTS: &str = "dg:events";
pub const INTERRUPT: &str = "dg:interrupt";
pub const SEQ: &str = "dg:seq";
pub const FRONT_SEQ: &str = "dg:frontseq";

pub fn job(id: &str) -> String {
    format!("dg:job:{id}")
}

pub fn worker(name: &str) -> String {
    format!("dg:worker:{name}")
}

pub fn file(rel: &str) -> String {
    format!("dg:file:{rel}")
}

/// The stream for jobs with model key `model` ("" : jobs that load nothing).
pub fn stream(model: &str) -> String {
    if model.is_empty() {
        return "dg:q:-".into();
    }
    if model.len() <= 200 {
        return format!("dg:q:{model}");
    }
    format!(
        "dg:q:#{:016x}",
        xxhash_rust::xxh3::xxh3_64(model.as_bytes())
    )
}

/// The model key of a native graph: each top-level loader node (type
/// `Load*`: LoadCheckpoint, LoadADM, ...) with its string inputs (the
/// checkpoint paths), sorted and joined. Jobs with one key share a stream,
/// and a worker that ran one has those models in its executor's cache.
pub fn model_key(graph: &str) -> String {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(graph) else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    for (_, node) in doc["nodes"].as_object().into_iter().flatten() {
        let ty = node["type"].as_str().unwrap_or_default();
        if !ty.rsplit('/').next().unwrap_or(ty).starts_with("Load") {
            continue;
        }
        let mut inputs: Vec<String> = node["inputs"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|s| format!("{k}={s}")))
            .collect();
        inputs.sort();
        parts.push(format!("{ty}({})", inputs.join(",")));
    }
    parts.sort();
    parts.dedup();
    parts.join("+")
}

/// The ids of a native graph's top-level loader nodes (to count real loads:
/// a loader that runs instead of coming from the cache).
pub fn loader_nodes(graph: &str) -> Vec<String> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(graph) else {
        return Vec::new();
    };
    doc["nodes"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| {
            let ty = n["type"].as_str().unwrap_or_default();
            ty.rsplit('/').next().unwrap_or(ty).starts_with("Load")
        })
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_key_names_the_loaders_and_their_paths() {
        let g = r#"{"nodes": {
            "b": {"type": "LoadCheckpoint", "inputs": {"path": "models/x", "dtype": "fp32"}},
            "a": {"type": "sd/LoadADM", "inputs": {"path": "m.pt", "flags": ["f", "flags"]}},
            "n": {"type": "GaussianNoise", "inputs": {"seed": 1}}}}"#;
        assert_eq!(
            model_key(g),
            "LoadCheckpoint(dtype=fp32,path=models/x)+sd/LoadADM(path=m.pt)"
        );
        let mut l = loader_nodes(g);
        l.sort();
        assert_eq!(l, ["a", "b"]);
        assert_eq!(model_key(r#"{"nodes": {}}"#), "");
        assert_eq!(stream(""), "dg:q:-");
        assert!(stream(&"x".repeat(300)).starts_with("dg:q:#"));
    }
}
