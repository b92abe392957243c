//! `--isolate`: the graph runs in a supervised worker process
//! (`diffgraph::worker`, the hidden `worker` subcommand, as `serve` does), so
//! a node that aborts, segfaults, overflows its stack or calls `exit()` ends
//! in a failed run naming the node and the signal instead of a dead host.
//! The host validates first (errors as without `--isolate`), then sends the
//! native graph text; the worker's progress events drive the same progress
//! display and profile.
use crate::args::{ExecArgs, RunArgs, EXIT_BAD_INPUT};
use diffgraph::worker::{JobEnd, Supervisor, WorkerCommand};
use diffgraph::{report, Observer};
use serde_json::{json, Value as Json};
use std::ffi::OsString;
use std::path::PathBuf;

/// The worker command for `exec`'s device, threads and output folder;
/// plugins from `plugin_files` when given, else as `exec` names them.
pub fn worker_command(
    exec: &ExecArgs,
    plugin_files: Option<&[PathBuf]>,
) -> Result<WorkerCommand, String> {
    let program = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut args: Vec<OsString> = vec!["worker".into()];
    let plugins: Vec<PathBuf> = match plugin_files {
        Some(files) => files.to_vec(),
        None => exec.plugins.plugins.clone(),
    };
    for p in plugins {
        args.push("--plugins".into());
        args.push(std::path::absolute(&p).unwrap_or(p).into());
    }
    args.push("--device".into());
    args.push(crate::worker::device_arg(exec.device).into());
    args.push("--out".into());
    args.push(
        std::path::absolute(&exec.out)
            .unwrap_or(exec.out.clone())
            .into(),
    );
    if let Some(n) = exec.threads {
        args.push("--threads".into());
        args.push(n.to_string().into());
    }
    Ok(WorkerCommand { program, args })
}

/// What a crashed worker means for the user: one line naming the node.
pub fn crash_message(node: &Option<(String, String)>, how: &str) -> String {
    match node {
        Some((id, ty)) => {
            format!("node `{id}` ({ty}) crashed the worker process: {how}; the host is unharmed")
        }
        None => format!("the worker process died: {how}"),
    }
}

/// A job's end as the JSON `run --json` prints (`report::outcome_json` or
/// `report::run_error_json`'s shape, plus `"crashed": true` for a dead
/// worker), the files written, and whether it was interrupted.
pub struct Ended {
    pub json: Json,
    pub files: Vec<String>,
    pub ok: bool,
    pub interrupted: bool,
    pub crashed: bool,
}

/// Runs one job on `supervisor`, replaying its events into `observer`.
pub fn run_job(
    supervisor: &mut Supervisor,
    job: &str,
    text: &str,
    observer: &dyn Observer,
) -> Ended {
    let end = supervisor.run(job, text, &mut |e| report::replay_event(e, observer));
    let failed = |json: Json, interrupted: bool, crashed: bool| Ended {
        json,
        files: Vec::new(),
        ok: false,
        interrupted,
        crashed,
    };
    match end {
        JobEnd::Done { outcome, files } => {
            let files = files
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            Ended {
                json: outcome,
                files,
                ok: true,
                interrupted: false,
                crashed: false,
            }
        }
        JobEnd::Failed {
            node,
            error,
            interrupted,
        } => failed(
            json!({ "ok": false, "node": node, "error": error }),
            interrupted,
            false,
        ),
        JobEnd::Crashed { node, how } => failed(
            json!({
                "ok": false, "node": node.as_ref().map(|n| &n.0),
                "error": crash_message(&node, &how), "crashed": true,
            }),
            false,
            true,
        ),
    }
}

/// `run --isolate`, after the graph validated in the host.
pub fn run(a: &RunArgs, observer: &dyn Observer) -> i32 {
    let text = diffgraph::read_graph_text(&a.graph)
        .and_then(|t| diffgraph::native_graph_text(&t, &a.exec.set, &a.exec.models.folders()));
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprint!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let command = match worker_command(&a.exec, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let mut supervisor = Supervisor::new(command);
    let interrupter = supervisor.interrupter();
    let _ = ctrlc::set_handler(crate::interrupt::handler(move || {
        interrupter.interrupt("run")
    }));
    let end = run_job(&mut supervisor, "run", &text, observer);
    if end.ok {
        crate::commands::finish_ok(a, &end.files, &end.json)
    } else {
        crate::commands::finish_failed(a, &end.json, end.interrupted)
    }
}
