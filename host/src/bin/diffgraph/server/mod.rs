//! `diffgraph serve`: ComfyUI's HTTP and WebSocket API on tokio + axum, with
//! the queue and history in SQLite (`db`) and jobs run in a supervised worker
//! process (`diffgraph::worker`, the hidden `worker` subcommand) so that a
//! crashing node fails its job, not the server. This module holds only HTTP
//! concerns; graph parsing, validation, running and the worker protocol are
//! the library's. Routes are ComfyUI's (`server.py`), with and without the
//! `/api` prefix.
mod api;
mod args;
mod db;
mod files;
mod info;
mod preview;
mod prompt;
mod queue;
mod reload;
mod runner;
mod state;
mod ws;

pub use args::{ServeArgs, WorkerArgs};
pub use queue::status::{queue as queue_command, QueueArgs};

use crate::args::EXIT_BAD_INPUT;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diffgraph::{Executor, SharedCache};
use serde_json::json;
use state::AppState;
use std::sync::Arc;

/// A JSON error reply: `{"error": {"type", "message"}}` with a 4xx status.
pub struct ApiError(pub StatusCode, pub String, pub String);

impl ApiError {
    pub fn bad(kind: &str, message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, kind.into(), message.into())
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal".into(),
            message.into(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "type": self.1, "message": self.2, "details": "", "extra_info": {} } });
        (self.0, Json(body)).into_response()
    }
}

/// A scale-out worker (`diffgraph worker --queue redis://...`).
pub fn queue_worker(a: crate::worker::WorkerArgs, url: &str) -> i32 {
    queue::worker::run(a, url)
}

/// The worker process a server (or `--isolate`) drives over stdin/stdout,
/// with a server build's options: hot reload, cache budget, previews.
pub fn child_worker(a: &crate::worker::WorkerArgs, device: tch::Device) {
    let o = &a.server;
    let (registry, skipped) = reload::load_plugins(&a.plugins.sources(), o.watch);
    for s in skipped {
        eprintln!("worker: warning: {s}");
    }
    let cache = match o.cache_mb {
        Some(mb) => SharedCache::with_budget(mb.saturating_mul(1 << 20)),
        None => SharedCache::default(),
    };
    let mut exec = Executor::with_cache(registry, cache);
    exec.set_device(device);
    exec.set_output_dir(a.out.to_string_lossy());
    let input = std::io::BufReader::new(std::io::stdin());
    let previewer = preview::previewer(o.preview.preview_method, o.preview.preview_size);
    diffgraph::worker::child::serve_with(exec, input, std::io::stdout(), true, previewer);
}

pub fn serve(a: ServeArgs) -> i32 {
    let state = match AppState::new(&a) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if state.db().is_redis() {
        // Workers run the jobs; their messages and outputs come through Redis.
        let url = a.queue.as_deref().unwrap_or_default();
        match queue::conn::client(url) {
            Ok(c) => {
                let store = queue::storage::open(a.output_store, &c).into();
                queue::relay::from_redis(state.clone(), c, store);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_BAD_INPUT;
            }
        }
    } else {
        runner::spawn(state.clone());
        if a.watch {
            let quiet = std::time::Duration::from_millis(300);
            if let Err(e) = reload::spawn_watcher(state.clone(), a.plugins.sources(), quiet) {
                eprintln!("error: --watch: {e}");
                return EXIT_BAD_INPUT;
            }
        }
    }
    let addr = std::net::SocketAddr::new(a.listen, a.port);
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return EXIT_BAD_INPUT;
            }
        };
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // Tests and scripts wait for this line (the port may be 0: any free one).
        println!("listening on http://{local}");
        let app = router(state);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        }
    })
}

fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/prompt", get(api::get_prompt).post(api::post_prompt))
        .route("/queue", get(api::get_queue).post(api::post_queue))
        .route("/interrupt", post(api::interrupt))
        .route("/history", get(api::get_history).post(api::post_history))
        .route("/history/{id}", get(api::get_history_one))
        .route("/view", get(files::view))
        .route("/upload/image", post(files::upload_image))
        .route("/models", get(files::model_folders))
        .route("/models/{folder}", get(files::models_in))
        .route("/embeddings", get(files::embeddings))
        .route("/object_info", get(info::object_info))
        .route("/object_info/{type}", get(info::object_info_one))
        .route("/system_stats", get(info::system_stats))
        .route("/features", get(info::features))
        .route("/ws", get(ws::handler))
}

/// Every route, bare and under `/api`; body limit; bearer-token check; JSON
/// 404s. No CORS layer: browsers on other origins are refused by default.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body;
    Router::new()
        .merge(routes())
        .nest("/api", routes())
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "not_found".into(),
                "no such endpoint".into(),
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// With `--auth-token-file`: every request needs `Authorization: Bearer
/// <token>` (or `?token=<token>`, for WebSocket clients and image tags).
async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    let given = header.or(query).unwrap_or_default();
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        next.run(req).await
    } else {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized".into(),
            "a valid bearer token is required".into(),
        )
        .into_response()
    }
}

/// Compares without stopping at the first difference (no timing oracle).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
