//! What the executor reports while it runs, for progress bars and logs.
use crate::value::Value;

/// One progress event. Node ids are the graph's.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// The run starts with this many steps at the top level.
    RunStart {
        steps: usize,
    },
    NodeStart {
        id: &'a str,
        type_name: &'a str,
    },
    /// Served from the cache without running.
    NodeCached {
        id: &'a str,
    },
    NodeDone {
        id: &'a str,
        seconds: f64,
    },
    /// A loop finished iteration `done` of `total`.
    LoopStep {
        id: &'a str,
        done: usize,
        total: usize,
    },
    /// Progress reported by a node while it runs.
    NodeProgress {
        id: &'a str,
        done: u64,
        total: u64,
    },
    /// An output node finished (right after its `NodeDone`): its outputs,
    /// so that a server can announce the files it wrote at once rather
    /// than at the end of the job (ComfyUI's `executed`).
    OutputDone {
        id: &'a str,
        values: &'a [Value],
    },
    /// A loop finished iteration `done` of `total` (just before its
    /// `LoopStep`): the values it carries into the next iteration, for live
    /// previews of a sampler's latent. Borrowed: cheap unless looked at.
    LoopCarried {
        id: &'a str,
        done: usize,
        total: usize,
        values: &'a [Value],
    },
    RunDone {
        seconds: f64,
    },
}

/// Receives events; implementations must be cheap (called per node and per
/// loop iteration).
pub trait Observer {
    fn event(&self, event: &Event);
}

/// Ignores everything (`--quiet`, benchmarks, tests).
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _: &Event) {}
}
