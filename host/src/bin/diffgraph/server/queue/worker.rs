//! `diffgraph worker --queue redis://...`: one process per GPU (or CPU
//! box). It runs jobs exactly as `serve` does (the same job runner, the
//! same supervised child process holding the plugins and the executor's
//! cache), one at a time, taking them from the Redis streams:
//!
//! 1. the front stream, then the streams of models resident here (model
//!    affinity), then the others, except those whose model is resident on
//!    another idle worker (it will take them: no reload);
//! 2. every `visibility/2`, entries whose worker stopped heartbeating for
//!    `--visibility-ms` (XAUTOCLAIM); a job taken more than
//!    `--max-attempts` times goes to the dead-letter stream instead;
//! 3. while a job runs, a heartbeat thread refreshes this worker's record
//!    (state, job, resident models, loads) and the entry's idle time.
//!
//! SIGINT/SIGTERM: finish the current job, then leave; a second one hands
//! the job back to the queue and leaves at once.
use super::super::runner;
use super::super::state::{AppState, Payload};
use super::conn::{self, Conn};
use super::keys;
use super::presence::{advertise, default_name, heartbeat, leave, lock, workers, Info, Shared};
use super::relay;
use super::storage;
use super::streams::{Entry, Streams};
use crate::args::EXIT_BAD_INPUT;
use crate::worker::WorkerArgs;
use diffgraph::worker::Supervisor;
use serde_json::{json, Value as Json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `serve`'s state for this worker: the job runner, the child process
/// command and the Redis history come from the same code as `serve`.
fn state(a: &WorkerArgs, url: &str) -> Result<AppState, String> {
    use clap::Parser;
    #[derive(Parser)]
    struct ServeOnly {
        #[command(flatten)]
        a: super::super::args::ServeArgs,
    }
    let mut argv: Vec<std::ffi::OsString> = vec!["serve".into(), "--queue".into(), url.into()];
    argv.extend(["--output".into(), a.out.clone().into_os_string()]);
    argv.extend(["--input".into(), a.server.input.clone().into_os_string()]);
    argv.extend(["--models".into(), a.server.models.clone().into_os_string()]);
    argv.extend([
        "--device".into(),
        crate::worker::device_arg(a.device).into(),
    ]);
    for p in &a.plugins.plugins {
        argv.extend(["--plugins".into(), p.clone().into_os_string()]);
    }
    if let Some(mb) = a.server.cache_mb {
        argv.extend(["--cache-mb".into(), mb.to_string().into()]);
    }
    argv.extend(a.server.preview.to_args());
    let s = ServeOnly::try_parse_from(argv).map_err(|e| e.to_string())?;
    AppState::new(&s.a)
}

pub fn run(a: WorkerArgs, url: &str) -> i32 {
    match serve_queue(a, url) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("worker: {e}");
            EXIT_BAD_INPUT
        }
    }
}

fn serve_queue(a: WorkerArgs, url: &str) -> Result<(), String> {
    if a.server.watch {
        return Err("--watch is for `serve` without --queue; restart queue workers to pick up rebuilt plugins".into());
    }
    let state = Arc::new(state(&a, url)?);
    let client = conn::client(url)?;
    let name = a.server.name.clone().unwrap_or_else(default_name);
    let visibility = Duration::from_millis(a.server.visibility_ms.max(300));
    let store: Arc<dyn storage::OutputStore> = storage::open(a.server.output_store, &client).into();
    relay::to_redis(
        state.ws.subscribe(),
        Conn::new(client.clone()),
        store,
        state.output.clone(),
    );
    let info: Shared = Arc::new(Mutex::new(Info {
        state: "starting",
        ..Info::default()
    }));
    let mut supervisor = Supervisor::new(state.worker.clone());
    let interrupter = supervisor.interrupter();
    *state.interrupter.lock().unwrap_or_else(|p| p.into_inner()) = Some(interrupter.clone());
    heartbeat(client.clone(), name.clone(), info.clone(), visibility);
    listen_interrupts(client.clone(), info.clone(), interrupter);
    let signals = Arc::new(AtomicUsize::new(0));
    {
        let signals = signals.clone();
        let _ = ctrlc::set_handler(move || {
            signals.fetch_add(1, Ordering::SeqCst);
        });
    }
    let t = supervisor.start()?;
    lock(&info).epoch = supervisor.starts;
    let mut streams = Streams::new(Conn::connect(client.clone())?, name.clone());
    let mut others = Conn::new(client.clone());
    lock(&info).state = "idle";
    advertise(&mut others, &name, &lock(&info), visibility).map_err(|e| e.to_string())?;
    eprintln!("worker {name}: ready ({t:.2} s), queue {url}");
    let mut last_reclaim = Instant::now() - visibility;
    // A second signal while a job runs: hand it back and leave at once.
    {
        let (signals, info, client) = (signals.clone(), info.clone(), client.clone());
        let name = name.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(50));
            if signals.load(Ordering::SeqCst) < 2 {
                continue;
            }
            let running = lock(&info).running.clone();
            if let Some(e) = running {
                let mut s = Streams::new(Conn::new(client.clone()), name.clone());
                match s.hand_back(&e) {
                    Ok(()) => eprintln!("worker {name}: handed job {} back", e.job_id),
                    Err(err) => eprintln!("worker {name}: could not hand back {}: {err}", e.job_id),
                }
            }
            leave(&client, &name);
            std::process::exit(130);
        });
    }
    while signals.load(Ordering::SeqCst) == 0 {
        let entry = match next_entry(
            &mut streams,
            &mut others,
            &a,
            &info,
            visibility,
            &mut last_reclaim,
        ) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("worker {name}: {e}");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let Some(entry) = entry else { continue };
        if let Err(e) = run_entry(&state, &mut supervisor, &mut streams, &a, &info, entry) {
            eprintln!("worker {name}: {e}");
        }
        let _ = advertise(&mut others, &name, &lock(&info), visibility);
    }
    eprintln!("worker {name}: stopping (signal)");
    leave(&client, &name);
    Ok(())
}

fn listen_interrupts(
    client: redis::Client,
    info: Shared,
    interrupter: diffgraph::worker::Interrupter,
) {
    std::thread::Builder::new()
        .name("interrupts".into())
        .spawn(move || loop {
            let r = (|| -> redis::RedisResult<()> {
                let mut c = client.get_connection_with_timeout(Duration::from_secs(2))?;
                let mut sub = c.as_pubsub();
                sub.subscribe(keys::INTERRUPT)?;
                loop {
                    let payload: String = sub.get_message()?.get_payload()?;
                    let m: Json = serde_json::from_str(&payload).unwrap_or(Json::Null);
                    let running = lock(&info).running.as_ref().map(|e| e.job_id.clone());
                    if let (Some(id), Some(want)) = (running, m["prompt_id"].as_str()) {
                        if id == want {
                            interrupter.interrupt(&id);
                        }
                    }
                }
            })();
            if let Err(e) = r {
                if !conn::transient(&e) {
                    eprintln!("worker: interrupts: {e}");
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        })
        .expect("can start a thread");
}

/// The next entry to run, by the order in this module's doc; None after
/// a short wait with nothing to do.
fn next_entry(
    streams: &mut Streams,
    others: &mut Conn,
    a: &WorkerArgs,
    info: &Shared,
    visibility: Duration,
    last_reclaim: &mut Instant,
) -> Result<Option<Entry>, String> {
    let e = |e: redis::RedisError| e.to_string();
    let queues = streams.queues().map_err(e)?;
    if last_reclaim.elapsed() >= visibility / 2 {
        *last_reclaim = Instant::now();
        for q in &queues {
            if let Some(entry) = streams
                .reclaim(q, visibility.as_millis() as u64)
                .map_err(e)?
            {
                return Ok(Some(entry));
            }
        }
    }
    let affinity = !a.server.no_affinity;
    // Streams whose model another idle worker has loaded are left to it.
    let mut elsewhere: Vec<String> = Vec::new();
    if affinity {
        for w in workers(others).map_err(e)? {
            let idle = w.get("state").map(String::as_str) == Some("idle");
            if w.get("name") == Some(&streams.name) || !idle {
                continue;
            }
            let models: Vec<String> = w
                .get("models")
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_default();
            elsewhere.extend(models.iter().map(|m| keys::stream(m)));
        }
    }
    let resident: Vec<String> = lock(info)
        .models
        .iter()
        .rev()
        .map(|m| keys::stream(m))
        .collect();
    let heads = streams.heads(&queues).map_err(e)?;
    let mut waiting: Vec<(&String, (u64, u64))> = queues
        .iter()
        .zip(heads)
        .filter_map(|(q, h)| h.map(|h| (q, h)))
        .collect();
    waiting.sort_by_key(|(_, h)| *h);
    let now = super::jobs::now_ms();
    let overdue = |h: &(u64, u64)| now.saturating_sub(h.0) > a.server.affinity_wait_ms;
    let mut order: Vec<&String> = Vec::new();
    for (q, h) in &waiting {
        if *q == keys::FRONT || !affinity || overdue(h) {
            push(q, &mut order);
        }
    }
    if affinity {
        for r in &resident {
            if let Some((q, _)) = waiting.iter().find(|(q, _)| *q == r) {
                push(q, &mut order);
            }
        }
        for (q, _) in &waiting {
            if !elsewhere.contains(q) {
                push(q, &mut order);
            }
        }
    }
    for q in order {
        if let Some(entry) = streams
            .read(std::slice::from_ref(q), None)
            .map_err(e)?
            .pop()
        {
            return Ok(Some(entry));
        }
    }
    // Nothing for us now: wait a little for new entries.
    let listen: Vec<String> = queues
        .into_iter()
        .filter(|q| !elsewhere.contains(q))
        .collect();
    let mut got = streams.read(&listen, Some(250)).map_err(e)?;
    let first = if got.is_empty() {
        None
    } else {
        Some(got.remove(0))
    };
    for extra in got {
        streams.hand_back(&extra).map_err(e)?;
    }
    Ok(first)
}

fn push<'a>(q: &'a String, order: &mut Vec<&'a String>) {
    if !order.contains(&q) {
        order.push(q);
    }
}

/// Takes, runs, records and acknowledges one entry.
fn run_entry(
    state: &AppState,
    supervisor: &mut Supervisor,
    streams: &mut Streams,
    a: &WorkerArgs,
    info: &Shared,
    entry: Entry,
) -> Result<(), String> {
    let e = |e: redis::RedisError| e.to_string();
    let Some(taken) = streams.take(&entry).map_err(e)? else {
        return Ok(()); // finished or deleted already: acknowledged
    };
    if taken.attempts > i64::from(a.server.max_attempts) {
        let mut errors = taken.errors.clone();
        errors.push(format!(
            "taken {} times (--max-attempts {}): moved to the dead-letter stream",
            taken.attempts, a.server.max_attempts
        ));
        let messages = json!([["execution_error", {
            "prompt_id": taken.job.id, "exception_type": "DeadLetter",
            "exception_message": errors.join("; "), "traceback": [] }]]);
        state
            .db()
            .finish(&taken.job.id, "error", &json!({}), &messages)?;
        streams.dead_letter(&entry, &errors).map_err(e)?;
        eprintln!(
            "worker {}: job {} dead-lettered: {}",
            streams.name,
            taken.job.id,
            errors.join("; ")
        );
        return Ok(());
    }
    let model = keys::model_key(&taken.job.graph);
    let loaders = keys::loader_nodes(&taken.job.graph);
    {
        let mut i = lock(info);
        i.state = "busy";
        i.running = Some(entry.clone());
        // Room for one more model only by dropping the cache (a GPU that
        // holds --max-models checkpoints): restart the child process.
        let full = a.server.max_models > 0 && i.models.len() >= a.server.max_models;
        if full && !model.is_empty() && !i.models.contains(&model) {
            supervisor.stop();
            i.models.clear();
            i.epoch = supervisor.starts + 1;
        }
    }
    let mut probe = state.ws.subscribe();
    let id = taken.job.id.clone();
    runner::run_job(state, supervisor, taken.job);
    let restarted = lock(info).epoch != supervisor.starts;
    // Count the loader nodes that really ran (not from the cache).
    let mut loads = 0;
    while let Ok(m) = probe.try_recv() {
        let Payload::Text(text) = &m.payload else {
            continue;
        };
        let m: Json = serde_json::from_str(text).unwrap_or(Json::Null);
        if m["type"] == "executing"
            && m["data"]["prompt_id"] == id.as_str()
            && loaders.iter().any(|l| m["data"]["node"] == l.as_str())
        {
            loads += 1;
        }
    }
    streams.ack(&entry).map_err(e)?;
    let mut i = lock(info);
    i.state = "idle";
    i.running = None;
    i.jobs += 1;
    i.loads += loads;
    if restarted {
        i.models.clear();
        i.epoch = supervisor.starts;
    }
    if !model.is_empty() {
        i.models.retain(|m| m != &model);
        i.models.push(model);
    }
    Ok(())
}
