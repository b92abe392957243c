//! `diffgraph watch`: run a graph, then keep running it as plugin libraries
//! are rebuilt and the graph file is edited. Folders are watched (not files:
//! cargo replaces a library by remove + link, editors save by rename), events
//! are debounced, and each change reports what was reloaded, what re-ran and
//! what came from the cache.
use crate::args::{WatchArgs, EXIT_BAD_INPUT};
use diffgraph::plugin::discovery::PluginSource;
use diffgraph::watch::{cargo, Session};
use diffgraph::worker::Supervisor;
use diffgraph::{report, Executor, Registry};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) enum Msg {
    Changed(Vec<PathBuf>),
    WatchError(String),
    Stop,
}

/// Prints one event: a JSON line, or a human line on stderr.
struct Printer {
    json: bool,
}

impl Printer {
    fn event(&self, kind: &str, fields: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            let mut v = fields;
            v["event"] = kind.into();
            println!("{v}");
        } else {
            eprintln!("{}", human());
        }
    }
}

pub fn watch(a: WatchArgs) -> i32 {
    let p = Printer { json: a.json };
    let (device, line) = match crate::commands::set_up_device(&a.exec) {
        Ok(d) => d,
        Err(code) => return code,
    };
    eprintln!("{line}");
    let dirs = a.exec.plugins.sources();
    let mut exec = Executor::new(Registry::new());
    exec.set_device(device);
    exec.set_output_dir(a.exec.out.to_string_lossy());
    let graph_path = std::path::absolute(&a.graph).unwrap_or(a.graph.clone());
    let mut session = match Session::new(exec, &graph_path, a.exec.set.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot create a staging folder: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    session.set_models(a.exec.models.folders());

    // Every generation, the first too, is loaded from a private copy.
    for file in dirs.iter().flat_map(PluginSource::files) {
        if let Err(e) = session.reload_library(&file) {
            eprintln!("warning: plugin {}: {e} (not loaded)", file.display());
        }
    }

    let crates = if a.build {
        match cargo::discover(Path::new(".")) {
            Ok((crates, _)) => crates,
            Err(e) => {
                eprintln!("error: --build: {e}");
                return EXIT_BAD_INPUT;
            }
        }
    } else {
        Vec::new()
    };

    let (tx, rx) = mpsc::channel::<Msg>();
    let fs_tx = tx.clone();
    // Only writes count: reading a file (as reloading does) must not trigger
    // another reload.
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let _ = fs_tx.send(match res {
            Ok(e) if is_write(&e.kind) => Msg::Changed(e.paths),
            Ok(_) => return,
            Err(e) => Msg::WatchError(e.to_string()),
        });
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: cannot watch files: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let graph_dir = graph_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut watched: Vec<(PathBuf, RecursiveMode)> = vec![(graph_dir, RecursiveMode::NonRecursive)];
    watched.extend(
        dirs.iter()
            .map(|s| (s.dir.clone(), RecursiveMode::NonRecursive)),
    );
    watched.extend(
        crates
            .iter()
            .map(|c| (c.root.clone(), RecursiveMode::Recursive)),
    );
    for (dir, mode) in &watched {
        if let Err(e) = watcher.watch(dir, *mode) {
            eprintln!("warning: cannot watch {}: {e}", dir.display());
        }
    }

    // With --isolate: the worker running the graph (started at the first run).
    let mut worker = match a.exec.isolate {
        true => match crate::isolate::worker_command(&a.exec, Some(&session.plugin_files())) {
            Ok(c) => Some(Isolated {
                supervisor: Supervisor::new(c),
                files: session.plugin_files(),
            }),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_BAD_INPUT;
            }
        },
        false => None,
    };
    let interrupt = session.exec.interrupt_flag();
    let interrupter = worker.as_ref().map(|w| w.supervisor.interrupter());
    let stop_tx = tx.clone();
    let _ = ctrlc::set_handler(crate::interrupt::handler(move || {
        interrupt.store(true, Ordering::Relaxed);
        if let Some(i) = &interrupter {
            i.interrupt(WATCH_JOB);
        }
        let _ = stop_tx.send(Msg::Stop);
    }));
    let mut run_once = |session: &mut Session, p: &Printer, reloaded: &[serde_json::Value]| {
        match worker.as_mut() {
            Some(w) => run_isolated(session, w, &a.exec, p, reloaded),
            None => run_once(session, p, reloaded),
        }
    };

    if let Err(e) = session.reload_graph() {
        p.event(
            "graph_invalid",
            serde_json::json!({ "errors": e.0 }),
            || format!("graph invalid, waiting for a fix:\n{e}"),
        );
    } else {
        run_once(&mut session, &p, &[]);
    }
    p.event(
        "watching",
        serde_json::json!({ "paths": watched.iter().map(|w| &w.0).collect::<Vec<_>>() }),
        || format!("watching {} folder(s); Ctrl-C to stop", watched.len()),
    );

    while let Ok(msg) = rx.recv() {
        let paths = match msg {
            Msg::Stop => break,
            Msg::WatchError(e) => {
                eprintln!("warning: file watching: {e}");
                continue;
            }
            Msg::Changed(paths) => match debounce(&rx, paths, Duration::from_millis(a.debounce_ms))
            {
                Some(paths) => paths,
                None => break,
            },
        };
        let mut reloaded = Vec::new();
        let mut graph_changed = false;
        let mut to_build = Vec::new();
        for path in &paths {
            if path == &graph_path {
                graph_changed = true;
            } else if let Some(k) = cargo::crate_of(&crates, path) {
                if !to_build
                    .iter()
                    .any(|b: &&cargo::PluginCrate| b.package == k.package)
                {
                    to_build.push(k);
                }
            } else if is_watched_library(path, &dirs) && path.is_file() {
                let started = Instant::now();
                match session.reload_library(path) {
                    Ok(lib) => {
                        reloaded.push(serde_json::json!({ "plugin": lib.name, "path": path, "generation": lib.generation }));
                        p.event(
                            "reloaded",
                            serde_json::json!({ "plugin": lib.name, "path": path, "generation": lib.generation, "seconds": started.elapsed().as_secs_f64() }),
                            || format!("reloaded plugin `{}` from {} (generation {})", lib.name, path.display(), lib.generation),
                        );
                    }
                    Err(e) => p.event(
                        "reload_failed",
                        serde_json::json!({ "path": path, "error": e }),
                        || {
                            format!(
                                "not reloading {}: {e}\n  the previous generation keeps serving",
                                path.display()
                            )
                        },
                    ),
                }
            }
        }
        for k in to_build {
            p.event("build", serde_json::json!({ "package": k.package }), || {
                format!("building {} ...", k.package)
            });
            let release = dirs.iter().any(|s| s.dir.ends_with("release"));
            if let Err(e) = cargo::build(k, release) {
                p.event(
                    "build_failed",
                    serde_json::json!({ "package": k.package, "error": e }),
                    || e.clone(),
                );
            }
        }
        if graph_changed {
            if let Err(e) = session.reload_graph() {
                p.event(
                    "graph_invalid",
                    serde_json::json!({ "errors": e.0 }),
                    || format!("graph invalid, waiting for a fix:\n{e}"),
                );
                continue;
            }
        }
        if graph_changed || !reloaded.is_empty() {
            run_once(&mut session, &p, &reloaded);
        }
        if session.exec.interrupt_flag().load(Ordering::Relaxed) {
            break;
        }
    }
    p.event("stopped", serde_json::json!({}), || "stopped".into());
    0
}

/// Creations, content changes, renames and removals; not reads or metadata.
pub(crate) fn is_write(kind: &notify::EventKind) -> bool {
    use notify::event::{EventKind, ModifyKind};
    matches!(kind, EventKind::Create(_) | EventKind::Remove(_))
        || matches!(kind, EventKind::Modify(m) if !matches!(m, ModifyKind::Metadata(_)))
}

/// Collects the changed paths of a burst of events: waits until no event has
/// come for `quiet` (cargo and editors write in several steps). None when
/// asked to stop meanwhile.
pub(crate) fn debounce(
    rx: &mpsc::Receiver<Msg>,
    first: Vec<PathBuf>,
    quiet: Duration,
) -> Option<Vec<PathBuf>> {
    let mut paths = first;
    while let Ok(msg) = rx.recv_timeout(quiet) {
        match msg {
            Msg::Changed(more) => paths.extend(more),
            Msg::WatchError(e) => eprintln!("warning: file watching: {e}"),
            Msg::Stop => return None,
        }
    }
    paths.sort();
    paths.dedup();
    Some(paths)
}

pub(crate) fn is_watched_library(path: &Path, sources: &[PluginSource]) -> bool {
    sources.iter().any(|s| s.matches(path))
}

fn run_once(session: &mut Session, p: &Printer, reloaded: &[serde_json::Value]) {
    let Some(result) = session.run(&diffgraph::Silent) else {
        return;
    };
    match result {
        Ok(o) => {
            let outputs = report::outputs_json(&o);
            p.event(
                "run",
                serde_json::json!({ "executed": o.executed, "cached": o.cached, "seconds": o.seconds, "outputs": outputs, "reloaded": reloaded }),
                || {
                    format!(
                        "ran in {:.1} ms: re-ran [{}], cached [{}]",
                        o.seconds * 1e3,
                        o.executed.join(", "),
                        o.cached.join(", ")
                    )
                },
            );
        }
        Err(e) => p.event("run_failed", report::run_error_fields(&e), || {
            format!("error: {e}")
        }),
    }
}

/// The job id of every isolated watch run (Ctrl-C interrupts it, then stops).
const WATCH_JOB: &str = "watch";

/// `watch --isolate`: the worker and the plugin files it was started with.
struct Isolated {
    supervisor: Supervisor,
    files: Vec<PathBuf>,
}

/// One run in the worker. A worker that dies while running a newer
/// generation of a plugin than the last run that worked is not the end: the
/// session falls back to that generation (said loudly) and runs again.
fn run_isolated(
    session: &mut Session,
    w: &mut Isolated,
    exec: &crate::args::ExecArgs,
    p: &Printer,
    reloaded: &[serde_json::Value],
) {
    for attempt in 0..2 {
        let text = match session.native_text() {
            None => return,
            Some(Err(e)) => {
                p.event(
                    "graph_invalid",
                    serde_json::json!({ "errors": e.0 }),
                    || format!("graph invalid, waiting for a fix:\n{e}"),
                );
                return;
            }
            Some(Ok(t)) => t,
        };
        let files = session.plugin_files();
        if files != w.files {
            // New generations: a worker that loads them (its cache starts empty).
            match crate::isolate::worker_command(exec, Some(&files)) {
                Ok(c) => w.supervisor.restart_with(c),
                Err(e) => return eprintln!("error: {e}"),
            }
            w.files = files;
        }
        let end = crate::isolate::run_job(&mut w.supervisor, WATCH_JOB, &text, &diffgraph::Silent);
        if end.ok {
            session.mark_good();
            let o = &end.json;
            p.event(
                "run",
                serde_json::json!({ "executed": o["executed"], "cached": o["cached"], "seconds": o["seconds"], "outputs": o["outputs"], "reloaded": reloaded, "isolated": true }),
                || {
                    let names = |k: &str| {
                        let v = o[k].as_array().cloned().unwrap_or_default();
                        v.iter().filter_map(|x| x.as_str().map(str::to_string)).collect::<Vec<_>>().join(", ")
                    };
                    format!(
                        "ran in {:.1} ms (worker process): re-ran [{}], cached [{}]",
                        o["seconds"].as_f64().unwrap_or_default() * 1e3,
                        names("executed"),
                        names("cached")
                    )
                },
            );
            return;
        }
        let error = end.json["error"].as_str().unwrap_or_default().to_string();
        let back = if end.crashed && attempt == 0 {
            session.fall_back()
        } else {
            None
        };
        let Some(back) = back else {
            let mut fields = end.json.clone();
            fields["reloaded"] = reloaded.into();
            p.event("run_failed", fields, || format!("error: {error}"));
            return;
        };
        let plugins: Vec<serde_json::Value> = back
            .iter()
            .map(|(name, good, bad)| serde_json::json!({ "plugin": name, "generation": good, "crashed_generation": bad }))
            .collect();
        p.event(
            "fell_back",
            serde_json::json!({ "node": end.json["node"], "error": error, "plugins": plugins }),
            || {
                let which: Vec<String> = back
                    .iter()
                    .map(|(n, good, bad)| format!("`{n}` generation {bad} -> {good}"))
                    .collect();
                format!(
                    "error: {error}\n  the reloaded plugin crashed the worker: falling back to the \
                     previous generation ({}) until the next rebuild",
                    which.join(", ")
                )
            },
        );
    }
}
