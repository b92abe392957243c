//! The worker side: read requests, run jobs one at a time on one executor
//! (its cache outlives every job), write replies.
use super::protocol::{Reply, Request};
use crate::exec::{Event, Observer};
use crate::watch::Reloader;
use crate::{report, Executor, RunError, Value};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which job runs, and which job an interrupt was asked for. The request is
/// kept until its job starts (or another job does), so an interrupt that
/// arrives before its job started, or just before the executor cleared its
/// flag at the start of a run, is not lost, and one for another job never
/// stops the running one.
#[derive(Default)]
struct Jobs {
    running: Option<String>,
    asked: Option<String>,
}

/// Writes replies, one flushed line each, so that the parent has seen a
/// `node_start` before the node runs (and can name it if the process dies).
struct Replies<W: Write> {
    out: Mutex<W>,
}

impl<W: Write> Replies<W> {
    fn send(&self, reply: &Reply) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A parent that went away ends the worker at the next read.
        let _ = out.write_all(reply.line().as_bytes());
        let _ = out.flush();
    }
}

/// An encoded preview image: ComfyUI's format code (1 JPEG, 2 PNG) and bytes.
pub struct Preview {
    pub format: u32,
    pub bytes: Vec<u8>,
}

/// Makes a preview from the values a loop carries into its next iteration
/// (None: nothing to show, e.g. no latent among them). Called after every
/// loop iteration of every job, on the worker's thread: keep it cheap.
pub type Previewer = Box<dyn Fn(&[Value]) -> Option<Preview>>;

struct JobObserver<'a, W: Write> {
    job: &'a str,
    replies: &'a Replies<W>,
    jobs: &'a Mutex<Jobs>,
    flag: &'a AtomicBool,
    previewer: Option<&'a Previewer>,
    device: tch::Device,
}

impl<W: Write> Observer for JobObserver<'_, W> {
    fn event(&self, e: &Event) {
        if let Event::LoopCarried { id, values, .. } = e {
            // Tensors do not travel: a preview of them does, if asked for.
            if let Some(p) = self.previewer.and_then(|make| make(values)) {
                self.replies.send(&Reply::Preview {
                    job: self.job.to_string(),
                    node: id.to_string(),
                    format: p.format,
                    image: super::protocol::to_hex(&p.bytes),
                });
            }
            return;
        }
        // The executor clears its flag as a run starts: raise it again.
        if matches!(e, Event::RunStart { .. }) && lock(self.jobs).asked.as_deref() == Some(self.job)
        {
            self.flag.store(true, Ordering::Relaxed);
        }
        self.replies.send(&Reply::Event {
            job: self.job.to_string(),
            event: report::event_json(e),
        });
        if let Event::RunDone { .. } = e {
            // The device's memory after the job (`/system_stats`).
            let mut stats = crate::device::stats_json(self.device);
            stats["event"] = "device".into();
            self.replies.send(&Reply::Event {
                job: self.job.to_string(),
                event: stats,
            });
        }
    }
}

/// Serves requests from `input` until it closes. `exec` holds the plugins,
/// device and output folder; its cache is kept across jobs. With
/// `exit_when_input_closes` (a worker process) the process exits as soon as
/// its input closes, mid-job too: the parent is gone (killed, even with
/// SIGKILL), so nobody wants the result and an orphan must not keep running.
pub fn serve<R, W>(exec: Executor, input: R, output: W, exit_when_input_closes: bool)
where
    R: BufRead + Send + 'static,
    W: Write,
{
    serve_with(exec, input, output, exit_when_input_closes, None)
}

/// [`serve`], sending a [`Reply::Preview`] after each loop iteration for
/// which `previewer` makes one.
pub fn serve_with<R, W>(
    mut exec: Executor,
    input: R,
    output: W,
    exit_when_input_closes: bool,
    previewer: Option<Previewer>,
) where
    R: BufRead + Send + 'static,
    W: Write,
{
    let replies = Replies {
        out: Mutex::new(output),
    };
    replies.send(&Reply::Ready {
        node_types: exec.registry.types().count(),
        device: crate::device::stats_json(exec.device()),
    });
    let interrupt = exec.interrupt_flag();
    let jobs: Arc<Mutex<Jobs>> = Arc::default();
    let reader_jobs = jobs.clone();
    let (jobs_tx, jobs_rx) = mpsc::channel::<Work>();
    // Requests are read on their own thread so that an interrupt reaches a
    // running job.
    std::thread::spawn(move || {
        for line in input.lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Request>(&line) {
                Ok(Request::Run { job, graph }) => {
                    if jobs_tx.send(Work::Run(job, graph)).is_err() {
                        break;
                    }
                }
                Ok(Request::Reload { path }) => {
                    if jobs_tx.send(Work::Reload(path)).is_err() {
                        break;
                    }
                }
                Ok(Request::Interrupt { job }) => {
                    let mut j = lock(&reader_jobs);
                    if j.running.as_deref() == Some(job.as_str()) {
                        interrupt.store(true, Ordering::Relaxed);
                    }
                    j.asked = Some(job);
                }
                Err(e) => eprintln!("worker: ignoring a request that is not one ({e}): {line}"),
            }
        }
        if exit_when_input_closes {
            std::process::exit(0);
        }
    });
    let mut reloader: Option<Reloader> = None;
    for work in jobs_rx {
        let (job, graph) = match work {
            Work::Run(job, graph) => (job, graph),
            Work::Reload(path) => {
                let result = reload(&mut exec, &mut reloader, &path);
                replies.send(&Reply::Reloaded { path, result });
                continue;
            }
        };
        let asked_first = {
            let mut j = lock(&jobs);
            if j.asked.as_deref() != Some(job.as_str()) {
                j.asked = None; // for an earlier job: stale
            }
            j.running = Some(job.clone());
            j.asked.is_some()
        };
        let reply = if asked_first {
            Reply::Failed {
                job: job.clone(),
                node: None,
                error: "interrupted before it started".into(),
                interrupted: true,
            }
        } else {
            run_job(&mut exec, &job, &graph, &replies, &jobs, previewer.as_ref())
        };
        *lock(&jobs) = Jobs::default();
        replies.send(&reply);
    }
}

/// What the job loop does next, in the order it was asked.
enum Work {
    Run(String, String),
    Reload(String),
}

/// Hot reload between jobs: the executor's registry is replaced whole (its
/// cache keys carry each plugin's generation, so results of the plugins
/// that did not change stay valid and cached).
fn reload(
    exec: &mut Executor,
    reloader: &mut Option<Reloader>,
    path: &str,
) -> Result<(String, u64), String> {
    if reloader.is_none() {
        *reloader = Some(Reloader::new().map_err(|e| format!("no staging folder: {e}"))?);
    }
    let r = reloader.as_mut().expect("just made");
    let (registry, library) = r.load(&exec.registry, std::path::Path::new(path))?;
    exec.registry = registry;
    Ok((library.name.clone(), library.generation))
}

fn run_job<W: Write>(
    exec: &mut Executor,
    job: &str,
    graph: &str,
    replies: &Replies<W>,
    jobs: &Mutex<Jobs>,
    previewer: Option<&Previewer>,
) -> Reply {
    let checked = match crate::parse_graph(graph, &[], &exec.registry, true) {
        Ok(c) => c,
        Err(e) => {
            return Reply::Failed {
                job: job.into(),
                node: e.0.iter().find_map(|g| g.node.clone()),
                error: e.to_string(),
                interrupted: false,
            }
        }
    };
    let flag = exec.interrupt_flag();
    let observer = JobObserver {
        job,
        replies,
        jobs,
        flag: &flag,
        previewer,
        device: exec.device(),
    };
    match exec.run(&checked, None, &observer) {
        Ok(outcome) => {
            let files = outcome
                .outputs
                .iter()
                .map(|(id, outs)| {
                    let single = crate::RunOutcome {
                        outputs: vec![(id.clone(), outs.clone())],
                        ..Default::default()
                    };
                    (id.clone(), report::output_files(&single).into())
                })
                .collect::<serde_json::Map<_, _>>();
            Reply::Done {
                job: job.into(),
                outcome: report::outcome_json(&outcome),
                files: files.into(),
            }
        }
        Err(e) => Reply::Failed {
            job: job.into(),
            node: e.node().map(str::to_string),
            error: e.to_string(),
            interrupted: matches!(e, RunError::Interrupted { .. }),
        },
    }
}
