//! Running graphs in a supervised worker process, so that a node that
//! aborts, segfaults, overflows its stack or calls `exit()` fails one job
//! instead of taking its host down (`diffgraph serve`; `run --isolate` later).
//!
//! The worker is a child process (the `diffgraph` binary's hidden `worker`
//! subcommand calls [`child::serve`]) holding libtorch, the plugins and one
//! [`crate::Executor`] whose cache lives as long as the process, so models
//! stay loaded across jobs. The parent drives it with a [`Supervisor`]:
//! one JSON object per line each way over the child's stdin and stdout
//! ([`protocol`]). The worker names each node before running it, so when the
//! process dies the supervisor knows which node killed it and how (the
//! signal, or the exit status); it restarts the worker for the next job.
//! Rust panics are still caught inside the worker, as in-process.
pub mod child;
pub mod protocol;
mod supervisor;

pub use child::{Preview, Previewer};
pub use protocol::{Reply, Request};
pub use supervisor::{describe_exit, Interrupter, JobEnd, Supervisor, WorkerCommand};
