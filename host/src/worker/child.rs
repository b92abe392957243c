//! The worker side: read requests, run jobs one at a time on one executor
//! (its cache outlives every job), write replies.
use super::protocol::{Reply, Request};
use crate::exec::{Event, Observer};
use crate::{report, Executor, RunError};
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

struct JobObserver<'a, W: Write> {
    job: &'a str,
    replies: &'a Replies<W>,
    jobs: &'a Mutex<Jobs>,
    flag: &'a AtomicBool,
}

impl<W: Write> Observer for JobObserver<'_, W> {
    fn event(&self, e: &Event) {
        // The executor clears its flag as a run starts: raise it again.
        if matches!(e, Event::RunStart { .. }) && lock(self.jobs).asked.as_deref() == Some(self.job)
        {
            self.flag.store(true, Ordering::Relaxed);
        }
        self.replies.send(&Reply::Event {
            job: self.job.to_string(),
            event: report::event_json(e),
        });
    }
}

/// Serves requests from `input` until it closes. `exec` holds the plugins,
/// device and output folder; its cache is kept across jobs. With
/// `exit_when_input_closes` (a worker process) the process exits as soon as
/// its input closes, mid-job too: the parent is gone (killed, even with
/// SIGKILL), so nobody wants the result and an orphan must not keep running.
pub fn serve<R, W>(mut exec: Executor, input: R, output: W, exit_when_input_closes: bool)
where
    R: BufRead + Send + 'static,
    W: Write,
{
    let replies = Replies {
        out: Mutex::new(output),
    };
    replies.send(&Reply::Ready {
        node_types: exec.registry.types().count(),
    });
    let interrupt = exec.interrupt_flag();
    let jobs: Arc<Mutex<Jobs>> = Arc::default();
    let reader_jobs = jobs.clone();
    let (jobs_tx, jobs_rx) = mpsc::channel::<(String, String)>();
    // Requests are read on their own thread so that an interrupt reaches a
    // running job.
    std::thread::spawn(move || {
        for line in input.lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Request>(&line) {
                Ok(Request::Run { job, graph }) => {
                    if jobs_tx.send((job, graph)).is_err() {
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
    for (job, graph) in jobs_rx {
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
            run_job(&mut exec, &job, &graph, &replies, &jobs)
        };
        *lock(&jobs) = Jobs::default();
        replies.send(&reply);
    }
}

fn run_job<W: Write>(
    exec: &mut Executor,
    job: &str,
    graph: &str,
    replies: &Replies<W>,
    jobs: &Mutex<Jobs>,
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
