//! Execution: planning a validated graph, running its steps in order with a
//! content-keyed cache, and running loops.
pub mod cache;
pub mod events;
pub mod outcome;
pub mod plan;
mod run;

pub use cache::{Cache, NodeResult, SharedCache};
pub use events::{Event, Observer, Silent};
pub use outcome::{RunError, RunOutcome};
pub use plan::Plan;

use crate::graph::CheckedGraph;
use crate::plugin::Registry;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tch::Device;

/// Runs graphs against a registry of node types, keeping a cache across runs.
///
/// An executor runs one graph at a time (`run` takes `&mut self`); for
/// parallel jobs give each worker thread its own executor (`worker`), all
/// sharing one [`SharedCache`] so a model loaded by one job serves the next.
/// Executors are `Send + Sync` (checked at compile time in lib.rs).
pub struct Executor {
    pub registry: Registry,
    pub cache: SharedCache,
    device: Device,
    output_dir: String,
    interrupt: Arc<AtomicBool>,
}

impl Executor {
    pub fn new(registry: Registry) -> Executor {
        Executor::with_cache(registry, SharedCache::default())
    }

    /// An executor whose results go to (and come from) `cache`.
    pub fn with_cache(registry: Registry, cache: SharedCache) -> Executor {
        Executor {
            registry,
            cache,
            device: Device::Cpu,
            output_dir: "output".into(),
            interrupt: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Another executor for another thread: the same node types, device,
    /// output folder and cache, its own interrupt flag.
    pub fn worker(&self) -> Executor {
        Executor {
            registry: self.registry.clone(),
            cache: self.cache.clone(),
            device: self.device,
            output_dir: self.output_dir.clone(),
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
            budgeted: self.cache.budget().is_some(),
            output_dir: &self.output_dir,
            interrupt: &self.interrupt,
            observer,
        };
        let outcome = run::run(plan, &self.cache, &env);
        self.cache.end_run();
        // The engine's malloc keeps freed memory while a graph runs
        // (crate::engine_env); between runs, what was freed (intermediates,
        // what a memory budget evicted) leaves the process.
        crate::plugin::ffi::release_free_memory();
        outcome
    }
}
