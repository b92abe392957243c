//! Execution: planning a validated graph, running its steps in order with a
//! content-keyed cache, and running loops.
pub mod cache;
pub mod events;
pub mod plan;
mod run;

pub use cache::{Cache, NodeResult};
pub use events::{Event, Observer, Silent};
pub use plan::Plan;

use crate::graph::CheckedGraph;
use crate::plugin::Registry;
use crate::value::Value;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tch::Device;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("node `{node}` ({type_name}) failed: {message}")]
    Node {
        node: String,
        type_name: String,
        message: String,
    },
    #[error("node `{node}` ({type_name}) panicked; the host caught it: {message}")]
    Panic {
        node: String,
        type_name: String,
        message: String,
    },
    #[error("interrupted before node `{node}`")]
    Interrupted { node: String },
    #[error("cannot plan the graph: {0}")]
    Plan(String),
}

impl RunError {
    /// The id of the node the error is about, if any.
    pub fn node(&self) -> Option<&str> {
        match self {
            RunError::Node { node, .. }
            | RunError::Panic { node, .. }
            | RunError::Interrupted { node } => Some(node),
            RunError::Plan(_) => None,
        }
    }
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// For each target (output node, or requested id): its outputs by name.
    pub outputs: Vec<(String, Vec<(String, Value)>)>,
    /// Nodes that ran (loop bodies: counted once per loop run).
    pub executed: Vec<String>,
    /// Nodes served from the cache.
    pub cached: Vec<String>,
    pub seconds: f64,
}

impl RunOutcome {
    /// Output `name` of target `node`.
    pub fn output(&self, node: &str, name: &str) -> Option<&Value> {
        self.outputs
            .iter()
            .find(|(id, _)| id == node)?
            .1
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// Runs graphs against a registry of node types, keeping a cache across runs.
pub struct Executor {
    pub registry: Registry,
    pub cache: Cache,
    device: Device,
    output_dir: String,
    interrupt: Arc<AtomicBool>,
}

impl Executor {
    pub fn new(registry: Registry) -> Executor {
        Executor {
            registry,
            cache: Cache::default(),
            device: Device::Cpu,
            output_dir: "output".into(),
            interrupt: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn set_device(&mut self, device: Device) {
        self.device = device;
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn set_output_dir(&mut self, dir: impl Into<String>) {
        self.output_dir = dir.into();
    }

    /// Set it to stop the current run before its next node or iteration.
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }

    /// Runs `targets` (top-level node ids), or every output node when None.
    pub fn run(
        &mut self,
        graph: &CheckedGraph,
        targets: Option<&[&str]>,
        observer: &dyn Observer,
    ) -> Result<RunOutcome, RunError> {
        let plan = Plan::new(graph, targets).map_err(RunError::Plan)?;
        self.run_plan(&plan, observer)
    }

    pub fn run_plan(
        &mut self,
        plan: &Plan,
        observer: &dyn Observer,
    ) -> Result<RunOutcome, RunError> {
        self.interrupt
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let device = match self.device {
            Device::Cuda(n) => n as i64,
            _ => -1,
        };
        let env = run::Env {
            device,
            output_dir: &self.output_dir,
            interrupt: &self.interrupt,
            observer,
        };
        let outcome = run::run(plan, &mut self.cache, &env);
        self.cache.end_run();
        outcome
    }
}
