//! The parent side: start the worker, hand it one job at a time, follow its
//! events, and when it dies say which node it was running and how it died,
//! then start a fresh one for the next job.
use super::protocol::{Reply, Request};
use serde_json::Value as Json;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How to start a worker: a program (usually `std::env::current_exe()`)
/// and its arguments (`worker --plugins ... --out ...`).
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// How a job ended.
#[derive(Debug)]
pub enum JobEnd {
    /// `outcome` is `report::outcome_json`; `files` the files each target wrote.
    Done { outcome: Json, files: Json },
    /// Failed inside the worker, which lives on.
    Failed {
        node: Option<String>,
        error: String,
        interrupted: bool,
    },
    /// The worker process died during the job: `node` (with its type) is the
    /// node it had started, `how` the signal or exit status. The next job
    /// starts a new worker.
    Crashed {
        node: Option<(String, String)>,
        how: String,
    },
}

/// Sends an interrupt to whatever job the worker is running; usable from
/// another thread while [`Supervisor::run`] blocks.
#[derive(Clone, Default)]
pub struct Interrupter {
    stdin: Arc<Mutex<Option<ChildStdin>>>,
}

impl Interrupter {
    /// Interrupts job `job`: now if it runs, as it starts if it is on its way.
    pub fn interrupt(&self, job: &str) {
        send(&self.stdin, &Request::Interrupt { job: job.into() });
    }
}

fn send(stdin: &Mutex<Option<ChildStdin>>, req: &Request) -> bool {
    let mut guard = stdin.lock().unwrap_or_else(|p| p.into_inner());
    let Some(pipe) = guard.as_mut() else {
        return false;
    };
    let mut line = serde_json::to_string(req).expect("requests serialise");
    line.push('\n');
    pipe.write_all(line.as_bytes())
        .and_then(|_| pipe.flush())
        .is_ok()
}

struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

/// Owns the worker process; restarts it after a crash.
pub struct Supervisor {
    command: WorkerCommand,
    running: Option<Running>,
    stdin: Interrupter,
    /// Workers started so far (1 after the first job; more after crashes).
    pub starts: usize,
    /// The worker's device and memory as it reported them when it started
    /// (`device::stats_json`; later figures come as `device` events).
    pub device: Json,
}

impl Supervisor {
    pub fn new(command: WorkerCommand) -> Supervisor {
        Supervisor {
            command,
            running: None,
            stdin: Interrupter::default(),
            starts: 0,
            device: Json::Null,
        }
    }

    pub fn interrupter(&self) -> Interrupter {
        self.stdin.clone()
    }

    /// Starts the next worker with `command` (other plugin libraries:
    /// `watch --isolate` after a reload); the running worker is stopped. The
    /// interrupter stays valid.
    pub fn restart_with(&mut self, command: WorkerCommand) {
        self.stop();
        self.command = command;
    }

    /// Starts the worker now (if none runs) and waits until it has loaded its
    /// plugins; returns how long that took.
    pub fn start(&mut self) -> Result<f64, String> {
        if self.running.is_some() {
            return Ok(0.0);
        }
        let t = Instant::now();
        let mut child = Command::new(&self.command.program)
            .args(&self.command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start the worker {}: {e}",
                    self.command.program.display()
                )
            })?;
        self.starts += 1;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        loop {
            match read_reply(&mut stdout) {
                Some(Reply::Ready { device, .. }) => {
                    self.device = device;
                    break;
                }
                Some(_) => continue,
                None => {
                    let status = child.wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "the worker stopped while starting: {}",
                        describe_exit(status)
                    ));
                }
            }
        }
        *self.stdin.stdin.lock().unwrap_or_else(|p| p.into_inner()) = Some(stdin);
        self.running = Some(Running { child, stdout });
        Ok(t.elapsed().as_secs_f64())
    }

    /// Runs one job (native graph JSON text), calling `on_event` with each
    /// `report::event_json` event as it arrives (and previews, as
    /// `{"event": "preview", "node", "format", "image": hex}`).
    pub fn run(&mut self, job: &str, graph: &str, on_event: &mut dyn FnMut(&Json)) -> JobEnd {
        if let Err(e) = self.start() {
            return JobEnd::Crashed { node: None, how: e };
        }
        let request = Request::Run {
            job: job.into(),
            graph: graph.into(),
        };
        let sent = send(&self.stdin.stdin, &request);
        let mut current: Option<(String, String)> = None;
        let running = self.running.as_mut().expect("started");
        while let Some(reply) = sent.then(|| read_reply(&mut running.stdout)).flatten() {
            match reply {
                Reply::Event { job: j, event } if j == job => {
                    if event["event"] == "node_start" {
                        let s = |k: &str| event[k].as_str().unwrap_or_default().to_string();
                        current = Some((s("node"), s("type")));
                    }
                    on_event(&event);
                }
                // Passed on as an event: `{"event": "preview", node, format, image (hex)}`.
                Reply::Preview {
                    job: j,
                    node,
                    format,
                    image,
                } if j == job => on_event(&serde_json::json!({
                    "event": "preview", "node": node, "format": format, "image": image
                })),
                Reply::Done {
                    job: j,
                    outcome,
                    files,
                } if j == job => return JobEnd::Done { outcome, files },
                Reply::Failed {
                    job: j,
                    node,
                    error,
                    interrupted,
                } if j == job => {
                    return JobEnd::Failed {
                        node,
                        error,
                        interrupted,
                    }
                }
                _ => continue,
            }
        }
        // The pipe closed: the worker died (or could not be written to).
        let mut dead = self.running.take().expect("started");
        *self.stdin.stdin.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = dead.child.kill();
        let how = match dead.child.wait() {
            Ok(status) => describe_exit(status),
            Err(e) => format!("the worker vanished: {e}"),
        };
        JobEnd::Crashed { node: current, how }
    }
}

impl Supervisor {
    /// Has the worker load a new generation of the plugin library at
    /// `path` (between jobs: this waits for the answer): the plugin's name
    /// and generation, or why it was refused. A worker that is not running
    /// loads the file as it is when it starts.
    pub fn reload(&mut self, path: &std::path::Path) -> Result<(String, u64), String> {
        let Some(running) = self.running.as_mut() else {
            return Err("no worker runs; the next one loads the file as it starts".into());
        };
        let path = path.to_string_lossy().to_string();
        if send(&self.stdin.stdin, &Request::Reload { path: path.clone() }) {
            while let Some(reply) = read_reply(&mut running.stdout) {
                if let Reply::Reloaded { path: p, result } = reply {
                    if p == path {
                        return result;
                    }
                }
            }
        }
        // It died (a library whose initialisers crash): the next job starts another.
        let mut dead = self.running.take().expect("running");
        *self.stdin.stdin.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = dead.child.kill();
        let how = dead.child.wait().map(describe_exit).unwrap_or_default();
        Err(format!("the worker died while loading it: {how}"))
    }

    /// Stops the worker process (and with it everything its cache holds);
    /// the next job starts a fresh one.
    pub fn stop(&mut self) {
        *self.stdin.stdin.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(mut r) = self.running.take() {
            // Closing stdin ends the worker; kill in case a job still runs.
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The next reply; None at end of stream. Other lines (a plugin printing to
/// stdout) go to stderr.
fn read_reply(stdout: &mut BufReader<ChildStdout>) -> Option<Reply> {
    let mut line = String::new();
    loop {
        line.clear();
        match stdout.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => match serde_json::from_str::<Reply>(line.trim_end()) {
                Ok(r) => return Some(r),
                Err(_) => eprint!("worker: {line}"),
            },
        }
    }
}

/// "killed by signal 11 (SIGSEGV)", "exited with status 3".
pub fn describe_exit(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                4 => "SIGILL",
                6 => "SIGABRT",
                7 => "SIGBUS",
                8 => "SIGFPE",
                9 => "SIGKILL",
                11 => "SIGSEGV",
                15 => "SIGTERM",
                _ => "signal",
            };
            return format!("killed by signal {sig} ({name})");
        }
    }
    match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => format!("ended: {status}"),
    }
}
