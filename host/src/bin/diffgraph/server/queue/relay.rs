//! WebSocket messages between workers and front-ends. A worker's job runner
//! sends ComfyUI's messages into its local broadcast channel exactly as
//! `serve` does; [`to_redis`] publishes each on `dg:events` (uploading the
//! files an `executed` message names first, with the Redis output store).
//! Every front-end runs [`from_redis`]: it fetches announced files it lacks,
//! then hands the message to its own WebSocket clients, who see the same
//! messages in the same order as from a single server. Pub/sub is not
//! durable: messages published while a front-end is disconnected are missed
//! (the history, in Redis, is not).
use super::super::state::{AppState, Payload, WsMessage};
use super::conn::{transient, Conn};
use super::keys;
use super::storage::{announced, OutputStore};
use diffgraph::worker::protocol::{from_hex, to_hex};
use serde_json::{json, Value as Json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Worker side: local messages out to Redis (a thread; ends when the
/// channel closes).
pub fn to_redis(
    mut rx: broadcast::Receiver<WsMessage>,
    mut conn: Conn,
    store: Arc<dyn OutputStore>,
    output: PathBuf,
) {
    std::thread::Builder::new()
        .name("relay-out".into())
        .spawn(move || loop {
            let m = match rx.blocking_recv() {
                Ok(m) => m,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("worker: warning: {n} messages dropped (Redis too slow)");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let payload = match &m.payload {
                Payload::Text(text) => {
                    let parsed: Json = serde_json::from_str(text).unwrap_or(Json::Null);
                    for rel in announced(&parsed) {
                        if let Err(e) = store.publish(&output, &rel) {
                            eprintln!("worker: warning: output {rel}: {e}");
                        }
                    }
                    json!({ "target": m.target, "text": &**text })
                }
                // Previews: hex, since pub/sub messages here are JSON text.
                Payload::Binary(bytes) => json!({ "target": m.target, "binary": to_hex(bytes) }),
            }
            .to_string();
            if let Err(e) = conn.run(|c| {
                redis::cmd("PUBLISH")
                    .arg(keys::EVENTS)
                    .arg(&payload)
                    .query::<i64>(c)
            }) {
                eprintln!("worker: warning: cannot publish a message: {e}");
            }
        })
        .expect("can start a thread");
}

/// Front-end side: Redis messages in to this server's WebSocket clients
/// (a thread; reconnects and resubscribes after Redis restarts).
pub fn from_redis(state: Arc<AppState>, client: redis::Client, store: Arc<dyn OutputStore>) {
    std::thread::Builder::new()
        .name("relay-in".into())
        .spawn(move || loop {
            if let Err(e) = subscribe(&state, &client, store.as_ref()) {
                if !transient(&e) {
                    eprintln!("warning: Redis messages: {e}");
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        })
        .expect("can start a thread");
}

fn subscribe(
    state: &AppState,
    client: &redis::Client,
    store: &dyn OutputStore,
) -> redis::RedisResult<()> {
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut sub = conn.as_pubsub();
    sub.subscribe(keys::EVENTS)?;
    loop {
        let msg = sub.get_message()?;
        let payload: String = msg.get_payload()?;
        let Ok(outer) = serde_json::from_str::<Json>(&payload) else {
            continue;
        };
        let target = outer["target"].as_str().map(str::to_string);
        if let Some(bytes) = outer["binary"].as_str().and_then(from_hex) {
            let payload = Payload::Binary(bytes.into());
            let _ = state.ws.send(WsMessage { target, payload });
            continue;
        }
        let Some(text) = outer["text"].as_str() else {
            continue;
        };
        let inner: Json = serde_json::from_str(text).unwrap_or(Json::Null);
        for rel in announced(&inner) {
            if let Err(e) = store.fetch(&state.output, &rel) {
                eprintln!("warning: output {rel}: {e}");
            }
        }
        let payload = Payload::Text(text.into());
        let _ = state.ws.send(WsMessage { target, payload });
    }
}
