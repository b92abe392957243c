//! The job runner: one thread takes queued jobs from the database in order,
//! runs each in the supervised worker, turns the worker's events into
//! ComfyUI's WebSocket messages, and records the outcome in the history.
use super::db::Job;
use super::state::AppState;
use diffgraph::graph::comfy_api;
use diffgraph::pngtext;
use diffgraph::worker::{JobEnd, Supervisor};
use serde_json::{json, Map, Value as Json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

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
            loop {
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
    let (top, types) = match diffgraph::parse_graph(&job.graph, &[], &state.registry, true) {
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
    let mut executed: Vec<String> = Vec::new();
    let end = supervisor.run(&job.id, &job.graph, &mut |e| {
        let node = e["node"].as_str().unwrap_or_default();
        if !top.contains(node) {
            return;
        }
        match e["event"].as_str().unwrap_or_default() {
            "node_cached" => msgs.send("execution_cached", json!({ "nodes": [node] })),
            "node_start" => msgs.send("executing", json!({ "node": node, "display_node": node })),
            "node_done" => executed.push(node.to_string()),
            "loop_step" | "node_progress" => msgs.send(
                "progress",
                json!({ "value": e["done"], "max": e["total"], "node": node }),
            ),
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
        JobEnd::Done { files, .. } => {
            embed_graph(&job, &files);
            let outputs = image_outputs(&state.output, &files);
            for (node, output) in outputs.as_object().into_iter().flatten() {
                msgs.send(
                    "executed",
                    json!({ "node": node, "display_node": node, "output": output }),
                );
            }
            msgs.send("execution_success", json!({}));
            ("success", outputs)
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

/// `{node: {"images": [{filename, subfolder, type}]}}` for the files under
/// the output folder that the output nodes wrote.
fn image_outputs(output_dir: &Path, files: &Json) -> Json {
    let mut map = Map::new();
    for (node, list) in files.as_object().into_iter().flatten() {
        let images: Vec<Json> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
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
            .collect();
        if !images.is_empty() {
            map.insert(node.clone(), json!({ "images": images }));
        }
    }
    Json::Object(map)
}

/// Writes the job's graph into every PNG it produced, as ComfyUI does: the
/// API-format prompt under `prompt` (a native graph under `diffgraph`), and
/// each `extra_data.extra_pnginfo` entry (ComfyUI's `workflow`) under its key.
fn embed_graph(job: &Job, files: &Json) {
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
    let pngs = files
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(_, l)| l.as_array().into_iter().flatten());
    for f in pngs
        .filter_map(Json::as_str)
        .filter(|f| f.ends_with(".png"))
    {
        if let Err(e) = pngtext::add_to_file(Path::new(f), &entries) {
            eprintln!("warning: job {}: {e}", job.id);
        }
    }
}
