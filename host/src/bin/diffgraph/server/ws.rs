//! `GET /ws?clientId=`: ComfyUI's event stream. On connect the client gets
//! `status` with its `sid`; then every broadcast message and the messages of
//! its own prompts (those submitted with its `client_id`).
use super::state::{AppState, Payload};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

pub async fn handler(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sid = q
        .get("clientId")
        .filter(|c| !c.is_empty() && c.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            format!(
                "{:x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            )
        });
    ws.on_upgrade(move |socket| client(socket, state, sid))
}

async fn client(mut socket: WebSocket, state: Arc<AppState>, sid: String) {
    // Subscribe before the greeting so that nothing sent after it is missed.
    let mut rx = state.ws.subscribe();
    let mut hello = state.status();
    hello["sid"] = sid.clone().into();
    let text = serde_json::json!({ "type": "status", "data": hello }).to_string();
    if socket.send(Message::Text(text.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(m) => {
                    if m.target.as_deref().is_some_and(|t| t != sid) {
                        continue;
                    }
                    let out = match m.payload {
                        Payload::Text(t) => Message::Text(t.to_string().into()),
                        Payload::Binary(b) => Message::Binary(b.to_vec().into()),
                    };
                    if socket.send(out).await.is_err() {
                        return;
                    }
                }
                // A client too slow to keep up misses messages, not the server's memory.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
