//! The queue endpoints: `/prompt`, `/queue`, `/interrupt`, `/history`
//! (ComfyUI's shapes, `server.py`).
use super::db::Job;
use super::prompt;
use super::state::AppState;
use super::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value as Json_};
use std::collections::HashMap;
use std::sync::Arc;

type Result<T> = std::result::Result<T, ApiError>;

/// A JSON body; a body over the limit is a 413, bad JSON a 400.
pub fn json_body(body: std::result::Result<Bytes, BytesRejection>) -> Result<Json_> {
    let bytes = body.map_err(|e| ApiError(e.status(), "bad_body".into(), e.body_text()))?;
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad("invalid_json", format!("the body is not JSON: {e}")))
}

fn internal(e: String) -> ApiError {
    ApiError::internal(e)
}

/// Prompt ids are UUID-shaped random strings (no crate needed: std's
/// randomly keyed hasher, the clock and a counter).
fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut words = [0u64; 2];
    for w in &mut words {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        *w = h.finish();
    }
    let hex = format!("{:016x}{:016x}", words[0], words[1]);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

pub async fn post_prompt(
    State(state): State<Arc<AppState>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let body = json_body(body)?;
    let Some(p) = body.get("prompt") else {
        let e = prompt::prompt_error("no_prompt", "No prompt provided");
        return Ok((StatusCode::BAD_REQUEST, Json(e)).into_response());
    };
    let models = diffgraph::comfy::ModelFolders::new(std::slice::from_ref(&state.models))
        .with_input(state.input.clone());
    let (accepted, _) = match prompt::check(p, &state.registry(), &models) {
        Ok(a) => a,
        Err(e) => return Ok((StatusCode::BAD_REQUEST, Json(e)).into_response()),
    };
    let mut extra = body
        .get("extra_data")
        .cloned()
        .filter(Json_::is_object)
        .unwrap_or(json!({}));
    let client_id = body
        .get("client_id")
        .and_then(Json_::as_str)
        .or_else(|| extra.get("client_id").and_then(Json_::as_str))
        .map(str::to_string);
    if let Some(c) = &client_id {
        extra["client_id"] = c.clone().into();
    }
    let front = body.get("front").and_then(Json_::as_bool).unwrap_or(false);
    let id = match body.get("prompt_id").and_then(Json_::as_str) {
        Some(id) if !id.is_empty() && id.len() <= 128 => id.to_string(),
        Some(_) => {
            return Err(ApiError::bad(
                "invalid_prompt_id",
                "prompt_id must be 1 to 128 characters",
            ))
        }
        None => new_id(),
    };
    let mut job = Job {
        number: 0,
        id: id.clone(),
        prompt: p.clone(),
        graph: accepted.graph,
        client_id,
        extra,
        outputs_to_execute: accepted.outputs.into(),
        state: "queued".into(),
        outputs: json!({}),
        messages: json!([]),
    };
    {
        let db = state.db();
        let queued = db.remaining().map_err(internal)?;
        if queued >= state.max_queue {
            let e = prompt::prompt_error(
                "queue_full",
                &format!(
                    "the queue is full ({} jobs, --max-queue {}); retry later",
                    queued, state.max_queue
                ),
            );
            return Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                Json(e),
            )
                .into_response());
        }
        if db.contains(&id).map_err(internal)? {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "duplicate_prompt_id".into(),
                format!("prompt_id {id} exists"),
            ));
        }
        job.number = db.insert(&job, front).map_err(internal)?;
    }
    state.wake();
    state.send_status();
    Ok(Json(json!({ "prompt_id": id, "number": job.number, "node_errors": {} })).into_response())
}

pub async fn get_prompt(State(state): State<Arc<AppState>>) -> Json<Json_> {
    Json(json!({ "exec_info": state.status()["status"]["exec_info"] }))
}

pub async fn get_queue(State(state): State<Arc<AppState>>) -> Result<Json<Json_>> {
    let (running, pending) = state.db().queue().map_err(internal)?;
    let items = |jobs: Vec<Job>| jobs.iter().map(Job::queue_item).collect::<Vec<_>>();
    Ok(Json(
        json!({ "queue_running": items(running), "queue_pending": items(pending) }),
    ))
}

fn id_list(v: &Json_) -> Result<Vec<String>> {
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::bad("invalid_delete", "`delete` must be a list of prompt ids"))?;
    Ok(list
        .iter()
        .filter_map(Json_::as_str)
        .map(str::to_string)
        .collect())
}

/// ComfyUI's `{"clear": true}` and/or `{"delete": [ids]}` body, applied
/// with `delete` (None: every row); how many rows went.
fn clear_or_delete(
    body: &Json_,
    delete: impl Fn(Option<&[String]>) -> std::result::Result<usize, String>,
) -> Result<usize> {
    let mut removed = 0;
    if body.get("clear").and_then(Json_::as_bool) == Some(true) {
        removed += delete(None).map_err(internal)?;
    }
    if let Some(d) = body.get("delete") {
        removed += delete(Some(&id_list(d)?)).map_err(internal)?;
    }
    Ok(removed)
}

/// `{"clear": true}` and/or `{"delete": [ids]}` on the queued jobs.
pub async fn post_queue(
    State(state): State<Arc<AppState>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Json_>> {
    let removed = clear_or_delete(&json_body(body)?, |ids| state.db().delete_queued(ids))?;
    state.send_status();
    Ok(Json(json!({ "deleted": removed })))
}

/// Interrupts the running job (only if it is `prompt_id`, when given).
pub async fn interrupt(
    State(state): State<Arc<AppState>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Json_>> {
    let body = json_body(body)?;
    let wanted = body.get("prompt_id").and_then(Json_::as_str);
    if let Some(hit) = state.db().interrupt_remote(wanted) {
        return Ok(Json(json!({ "interrupted": hit.map_err(internal)? })));
    }
    let running = state
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let hit = match (&running, wanted) {
        (Some(_), None) => true,
        (Some(r), Some(w)) => r == w,
        (None, _) => false,
    };
    if let (true, Some(job)) = (hit, &running) {
        let interrupter = state.interrupter.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = interrupter.as_ref() {
            i.interrupt(job);
        }
    }
    Ok(Json(
        json!({ "interrupted": if hit { running } else { None } }),
    ))
}

pub async fn get_history(
    State(state): State<Arc<AppState>>,
    query: std::result::Result<
        Query<HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Json<Json_>> {
    let Query(q) = query.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let max = match q.get("max_items") {
        None => None,
        Some(m) => Some(
            m.parse::<usize>()
                .map_err(|_| ApiError::bad("invalid_query", "max_items must be a count"))?,
        ),
    };
    let jobs = state.db().history(None, max).map_err(internal)?;
    Ok(Json(history_map(&jobs)))
}

fn history_map(jobs: &[Job]) -> Json_ {
    let map: Map<String, Json_> = jobs
        .iter()
        .map(|j| (j.id.clone(), j.history_entry()))
        .collect();
    Json_::Object(map)
}

pub async fn get_history_one(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Json_>> {
    let jobs = state.db().history(Some(&id), None).map_err(internal)?;
    Ok(Json(history_map(&jobs)))
}

/// `{"clear": true}` and/or `{"delete": [ids]}` on the history.
pub async fn post_history(
    State(state): State<Arc<AppState>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Json_>> {
    let removed = clear_or_delete(&json_body(body)?, |ids| state.db().delete_history(ids))?;
    Ok(Json(json!({ "deleted": removed })))
}
