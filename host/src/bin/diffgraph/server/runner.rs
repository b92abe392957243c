//! The job runner: one thread takes queued jobs from the database in order,
//! runs each in the supervised worker, turns the worker's events into
//! ComfyUI's WebSocket messages, and records the outcome in the history.
use super::db::Job;
use super::state::AppState;
use diffgraph::graph::comfy_api;
use diffgraph::pngtext;
use diffgraph::worker::{protocol, JobEnd, Supervisor};
use serde_json::{json, Map, Value as Json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// ComfyUI's binary event type of a preview frame (`server.py` `BinaryEventTypes`).
const PREVIEW_IMAGE: u32 = 1;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn spawn(state: Arc<AppState>) {
    std::thread::Builder::new()
        .name("job-runner".into())
        .spawn(move || {
            let mut supervisor = Supervisor::new(state.worker.clone());
            *state.interrupter.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(supervisor.interrupter());
            // Start the worker early: the first job should not pay for it.
            if let Err(e) = supervisor.start() {
                eprintln!("warning: {e}");
            }
            state.set_device_stats(supervisor.device.clone());
            loop {
                // Hot reload (`--watch`) between jobs, never during one.
                for path in state.reloads.take_pending() {
                    match supervisor.reload(&path) {
                        Ok((name, generation)) => {
                            eprintln!("worker: reloaded plugin `{name}` (generation {generation})")
                        }
                        Err(e) => eprintln!("worker: not reloading {}: {e}", path.display()),
                    }
                }
                let next = state
                    .db
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take_next();
                match next {
                    Ok(Some(job)) => run_job(&state, &mut supervisor, job),
                    Ok(None) => {
                        let (lock, cv) = &state.wake;
                        let mut woken = lock.lock().unwrap_or_else(|p| p.into_inner());
                        while !*woken {
                            woken = cv.wait(woken).unwrap_or_else(|p| p.into_inner());
                        }
                        *woken = false;
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            }
        })
        .expect("can start a thread");
}

/// Sends a message to the prompt's client (all clients if it gave none) and
/// keeps the ones ComfyUI keeps in the history's `status.messages`.
struct Messages<'a> {
    state: &'a AppState,
    job: &'a Job,
    kept: Vec<Json>,
}

impl Messages<'_> {
    fn send(&mut self, kind: &str, mut data: Json) {
        data["prompt_id"] = self.job.id.clone().into();
        if kind.starts_with("execution_") {
            data["timestamp"] = now_ms().into();
            self.kept.push(json!([kind, data]));
        }
        self.state.send(self.job.client_id.as_deref(), kind, data);
    }
}

pub(super) fn run_job(state: &AppState, supervisor: &mut Supervisor, job: Job) {
    *state.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(job.id.clone());
    state.send_status();
    let mut msgs = Messages {
        state,
        job: &job,
        kept: Vec::new(),
    };
    // Progress and `executing` are for the graph's top-level nodes (loop
    // bodies run once per step; the loop node carries the progress).
    let (top, types) = match diffgraph::parse_graph(&job.graph, &[], &state.registry(), true) {
        Ok(c) => {
            let types = c
                .graph
                .nodes
                .iter()
                .map(|n| (n.id.clone(), Json::from(n.type_name.clone())))
                .collect::<Map<_, _>>();
            (c.top_level_ids(), types)
        }
        Err(_) => (HashSet::new(), Map::new()),
    };
    msgs.send("execution_start", json!({}));
    // A ComfyUI prompt's node `ID` runs as native nodes `ID` and `ID:part`
    // (`comfy::expand`): its clients hear of `ID` only, once per run of parts.
    let comfy = !comfy_api::is_native(&job.prompt);
    let shown = |n: &str| match n.split_once(':') {
        Some((id, _)) if comfy => id.to_string(),
        _ => n.to_string(),
    };
    let mut executed: Vec<String> = Vec::new();
    let mut executing: Option<String> = None;
    let mut cached: HashSet<String> = HashSet::new();
    let mut outputs = Map::new();
    let end = supervisor.run(&job.id, &job.graph, &mut |e| {
        let node = e["node"].as_str().unwrap_or_default();
        let kind = e["event"].as_str().unwrap_or_default();
        if kind == "preview" {
            // ComfyUI's PREVIEW_IMAGE frame: event 1, then the format code
            // (big-endian u32) and the image (`server.py` `send_image`).
            let Some(bytes) = e["image"].as_str().and_then(protocol::from_hex) else {
                return;
            };
            let format = e["format"].as_u64().unwrap_or(1) as u32;
            let mut data = format.to_be_bytes().to_vec();
            data.extend_from_slice(&bytes);
            state.send_binary(job.client_id.as_deref(), PREVIEW_IMAGE, &data);
            return;
        }
        if kind == "device" {
            let mut stats = e.clone();
            if let Some(o) = stats.as_object_mut() {
                o.remove("event");
            }
            state.set_device_stats(stats);
            return;
        }
        if !top.contains(node) {
            return;
        }
        let id = shown(node);
        match kind {
            "node_cached" if cached.insert(id.clone()) => {
                msgs.send("execution_cached", json!({ "nodes": [id] }))
            }
            "node_start" if executing.as_deref() != Some(id.as_str()) => {
                msgs.send("executing", json!({ "node": id, "display_node": id }));
                executing = Some(id);
            }
            "node_done" if executed.last() != Some(&id) => executed.push(id),
            "loop_step" | "node_progress" => msgs.send(
                "progress",
                json!({ "value": e["done"], "max": e["total"], "node": id }),
            ),
            // As soon as an output node has written its files: ComfyUI's
            // `executed`, with the job's graph already in every PNG.
            "output_done" => {
                let files: Vec<&str> = e["files"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Json::as_str)
                    .collect();
                embed_graph(&job, &files);
                let images = image_outputs(&state.output, &files);
                if images.is_empty() {
                    return;
                }
                msgs.send(
                    "executed",
                    json!({ "node": id, "display_node": id, "output": { "images": images } }),
                );
                let entry = outputs.entry(id).or_insert_with(|| json!({ "images": [] }));
                if let Some(list) = entry["images"].as_array_mut() {
                    list.extend(images);
                }
            }
            _ => {}
        }
    });
    let type_of = |n: &Option<String>| {
        n.as_ref()
            .and_then(|n| types.get(n))
            .cloned()
            .unwrap_or(Json::Null)
    };
    let (final_state, outputs) = match end {
        JobEnd::Done { .. } => {
            msgs.send("execution_success", json!({}));
            ("success", Json::Object(outputs))
        }
        JobEnd::Failed {
            node,
            interrupted: true,
            ..
        } => {
            msgs.send(
                "execution_interrupted",
                json!({ "node_id": node, "node_type": type_of(&node), "executed": executed }),
            );
            ("interrupted", json!({}))
        }
        JobEnd::Failed { node, error, .. } => {
            msgs.send(
                "execution_error",
                json!({
                    "node_id": node, "node_type": type_of(&node), "executed": executed,
                    "exception_message": error, "exception_type": "NodeError", "traceback": [],
                    "current_inputs": {}, "current_outputs": {},
                }),
            );
            ("error", json!({}))
        }
        JobEnd::Crashed { node, how } => {
            let (id, ty) = node.map_or((None, None), |(i, t)| (Some(i), Some(t)));
            let message = match &id {
                Some(n) => format!(
                    "the worker process died while node `{n}` ({}) ran: {how}; it was restarted",
                    ty.clone().unwrap_or_default()
                ),
                None => format!("the worker process died: {how}; it was restarted"),
            };
            eprintln!("job {}: {message}", job.id);
            msgs.send("execution_error", json!({
                "node_id": id, "node_type": ty, "executed": executed,
                "exception_message": message, "exception_type": "WorkerCrashed", "traceback": [],
                "current_inputs": {}, "current_outputs": {},
            }));
            ("error", json!({}))
        }
    };
    if let Err(e) = state.db().finish(
        &job.id,
        final_state,
        &outputs,
        &Json::Array(msgs.kept.clone()),
    ) {
        eprintln!("error: job {}: {e}", job.id);
    }
    *state.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
    // ComfyUI's end-of-prompt marker, after the history is written.
    state.send(
        job.client_id.as_deref(),
        "executing",
        json!({ "node": null, "prompt_id": job.id }),
    );
    state.send_status();
}

/// `[{filename, subfolder, type}]` for the files under the output folder.
fn image_outputs(output_dir: &Path, files: &[&str]) -> Vec<Json> {
    files
        .iter()
        .filter_map(|f| {
            let real = std::fs::canonicalize(f).ok()?;
            let rel = real.strip_prefix(output_dir).ok()?;
            let filename = rel.file_name()?.to_string_lossy().to_string();
            let subfolder = rel
                .parent()
                .map(|p| p.to_string_lossy().to_string())
                .unwrap_or_default();
            Some(json!({ "filename": filename, "subfolder": subfolder, "type": "output" }))
        })
        .collect()
}

/// Writes the job's graph into every PNG it produced, as ComfyUI does: the
/// API-format prompt under `prompt` (a native graph under `diffgraph`), and
/// each `extra_data.extra_pnginfo` entry (ComfyUI's `workflow`) under its key.
fn embed_graph(job: &Job, files: &[&str]) {
    let prompt = job.prompt.to_string();
    let mut entries: Vec<(String, String)> = vec![if comfy_api::is_native(&job.prompt) {
        (pngtext::NATIVE_KEY.into(), job.graph.clone())
    } else {
        (pngtext::PROMPT_KEY.into(), prompt)
    }];
    for (k, v) in job.extra["extra_pnginfo"].as_object().into_iter().flatten() {
        entries.push((k.clone(), v.to_string()));
    }
    let entries: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for f in files.iter().filter(|f| f.ends_with(".png")) {
        if let Err(e) = pngtext::add_to_file(Path::new(f), &entries) {
            eprintln!("warning: job {}: {e}", job.id);
        }
    }
}
