//! The run loop: executes a plan's steps in order, serving keyed steps from
//! the cache, and iterates loops over their bodies.
use super::cache::{NodeResult, SharedCache};
use super::events::{Event, Observer};
use super::outcome::{clean_node_message, RunError, RunOutcome};
use super::plan::{LoopPlan, Plan, Src, Step, StepKind};
use crate::plugin::ffi::{CallEnv, CallFailure};
use crate::value::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};
use xxhash_rust::xxh3::Xxh3;

pub struct Env<'a> {
    pub device: i64,
    /// The cache has a byte budget: size plugin objects (see `result_bytes`).
    pub budgeted: bool,
    pub output_dir: &'a str,
    pub interrupt: &'a AtomicBool,
    pub observer: &'a dyn Observer,
}

static NONE: Value = Value::None;

struct Run<'a> {
    plan: &'a Plan,
    cache: &'a SharedCache,
    env: &'a Env<'a>,
    results: Vec<Option<Arc<NodeResult>>>,
    /// Per loop node: its current variables (carried..., item, index).
    loop_vars: Vec<Vec<Value>>,
    /// Whether executed nodes are being recorded (off after a loop's first iteration).
    recording: bool,
    outcome: RunOutcome,
}

pub fn run(plan: &Plan, cache: &SharedCache, env: &Env) -> Result<RunOutcome, RunError> {
    let start = Instant::now();
    let n = plan.steps.len();
    let mut r = Run {
        plan,
        cache,
        env,
        results: vec![None; n],
        loop_vars: vec![Vec::new(); n],
        recording: true,
        outcome: RunOutcome::default(),
    };
    env.observer.event(&Event::RunStart {
        steps: plan.order.len(),
    });
    for &i in &plan.order {
        r.exec(i)?;
    }
    for &t in &plan.targets {
        let result = r.results[t].as_ref().expect("targets run");
        let named = plan.steps[t]
            .output_names
            .iter()
            .cloned()
            .zip(result.values.iter().cloned())
            .collect();
        r.outcome
            .outputs
            .push((plan.steps[t].id.to_string(), named));
    }
    r.outcome.seconds = start.elapsed().as_secs_f64();
    env.observer.event(&Event::RunDone {
        seconds: r.outcome.seconds,
    });
    Ok(r.outcome)
}

impl Run<'_> {
    fn value<'b>(&'b self, src: &'b Src) -> &'b Value {
        match src {
            Src::Const(v) => v,
            Src::Out { node, output } => {
                &self.results[*node]
                    .as_ref()
                    .expect("inputs run first")
                    .values[*output]
            }
            Src::LoopVar { node, var } => &self.loop_vars[*node][*var],
            Src::Absent => &NONE,
        }
    }

    /// The full cache key: the static part, the device, the keys of the
    /// inputs' producers, file stamps, and (loops) the keys of what the body reads.
    fn key_of(&self, step: &Step) -> u128 {
        let mut h = Xxh3::new();
        h.update(&step.static_key.to_le_bytes());
        h.update(&self.env.device.to_le_bytes());
        let producer = |node: usize, h: &mut Xxh3| {
            let key = self.results[node].as_ref().and_then(|r| r.key).unwrap_or(0);
            h.update(&key.to_le_bytes());
        };
        for src in &step.inputs {
            if let Src::Out { node, .. } = src {
                producer(*node, &mut h);
            }
        }
        if let StepKind::Loop(l) = &step.kind {
            for &f in &l.free_refs {
                producer(f, &mut h);
            }
        }
        for &k in &step.file_inputs {
            if let Value::Str(path) = self.value(&step.inputs[k]) {
                h.update(&file_stamp(path));
            }
        }
        h.digest128()
    }

    fn exec(&mut self, i: usize) -> Result<(), RunError> {
        let plan = self.plan;
        let step = &plan.steps[i];
        if self.env.interrupt.load(Ordering::Relaxed) {
            return Err(RunError::Interrupted {
                node: step.id.to_string(),
            });
        }
        let key = step.keyed.then(|| self.key_of(step));
        if let (Some(k), false) = (key, step.output_node) {
            if let Some(hit) = self.cache.get(k) {
                self.results[i] = Some(hit);
                self.env.observer.event(&Event::NodeCached { id: &step.id });
                if self.recording {
                    self.outcome.cached.push(step.id.to_string());
                }
                return Ok(());
            }
        }
        self.env.observer.event(&Event::NodeStart {
            id: &step.id,
            type_name: &step.type_name,
        });
        let started = Instant::now();
        // With a memory budget, what a node's objects cost is measured as
        // the growth of the process's allocated memory while it ran.
        let measure = key.is_some() && self.env.budgeted;
        let before = if measure { allocated_bytes() } else { 0 };
        let values = match &step.kind {
            StepKind::Plugin(_) => self.call_plugin(step)?,
            StepKind::Loop(l) => self.run_loop(i, l)?,
        };
        let result = Arc::new(NodeResult { values, key });
        if let (Some(k), false) = (key, step.output_node) {
            if measure {
                let bytes = result_bytes(&result.values, before);
                self.cache.insert_sized(k, result.clone(), bytes);
            } else {
                self.cache.insert(k, result.clone());
            }
        }
        self.results[i] = Some(result);
        if self.recording {
            self.outcome.executed.push(step.id.to_string());
        }
        self.env.observer.event(&Event::NodeDone {
            id: &step.id,
            seconds: started.elapsed().as_secs_f64(),
        });
        if step.output_node {
            let values = &self.results[i].as_ref().expect("just stored").values;
            self.env.observer.event(&Event::OutputDone {
                id: &step.id,
                values,
            });
        }
        Ok(())
    }

    fn call_plugin(&self, step: &Step) -> Result<Vec<Value>, RunError> {
        let StepKind::Plugin(t) = &step.kind else {
            unreachable!("plugin step")
        };
        let inputs: Vec<&Value> = step.inputs.iter().map(|s| self.value(s)).collect();
        let observer = self.env.observer;
        let progress = |done, total| {
            observer.event(&Event::NodeProgress {
                id: &step.id,
                done,
                total,
            })
        };
        let env = CallEnv {
            device: self.env.device,
            output_dir: self.env.output_dir,
            progress: &progress,
            interrupt: self.env.interrupt,
        };
        let fail = |message: String| RunError::Node {
            node: step.id.to_string(),
            type_name: step.type_name.to_string(),
            message,
        };
        let values = t
            .library
            .opened
            .call(t.index, &inputs, &env)
            .map_err(|f| match f {
                // A node that gave up because the run was interrupted
                // (`diffgraph_sdk::interrupt`).
                CallFailure::Error(_) if self.env.interrupt.load(Ordering::Relaxed) => {
                    RunError::Interrupted {
                        node: step.id.to_string(),
                    }
                }
                CallFailure::Error(message) => fail(clean_node_message(&message)),
                CallFailure::Panic(message) => RunError::Panic {
                    node: step.id.to_string(),
                    type_name: step.type_name.to_string(),
                    message: clean_node_message(&message),
                },
            })?;
        let outs = &t.schema.outputs;
        if values.len() != outs.len() {
            return Err(fail(format!(
                "returned {} outputs, its schema declares {}",
                values.len(),
                outs.len()
            )));
        }
        for (v, spec) in values.iter().zip(outs) {
            if !v.fits(&spec.ty) {
                return Err(fail(format!(
                    "returned {} for output `{}`, declared {}",
                    v.kind_name(),
                    spec.name,
                    spec.ty
                )));
            }
        }
        Ok(values)
    }

    fn run_loop(&mut self, i: usize, l: &LoopPlan) -> Result<Vec<Value>, RunError> {
        let step = &self.plan.steps[i];
        // Iterated lazily: a count is never materialised (`over` = 10^12 runs
        // until interrupted instead of allocating 10^12 values).
        let items: Items = match self.value(&step.inputs[0]) {
            Value::List(items) => Items::List(items.clone()),
            Value::Int(n) if *n < 0 => {
                return Err(RunError::Node {
                    node: step.id.to_string(),
                    type_name: step.type_name.to_string(),
                    message: format!(
                        "`over` is a count of iterations and cannot be negative, got {n}"
                    ),
                })
            }
            Value::Int(n) => Items::Count(*n as usize),
            other => {
                return Err(RunError::Node {
                    node: step.id.to_string(),
                    type_name: step.type_name.to_string(),
                    message: format!("`over` must be a list or an int, got {}", other.kind_name()),
                })
            }
        };
        let mut carried: Vec<Value> = step.inputs[1..=l.carried]
            .iter()
            .map(|s| self.value(s).clone())
            .collect();
        for &b in &l.invariant {
            self.exec(b)?;
        }
        let total = items.len();
        let was_recording = self.recording;
        for k in 0..total {
            // Body nodes check the flag before they run; a loop with no
            // per-iteration node checks it here.
            if l.variant.is_empty() && self.env.interrupt.load(Ordering::Relaxed) {
                return Err(RunError::Interrupted {
                    node: step.id.to_string(),
                });
            }
            let item = items.get(k);
            let vars = &mut self.loop_vars[i];
            vars.clear();
            vars.append(&mut carried);
            vars.push(item);
            vars.push(Value::Int(k as i64));
            for &b in &l.variant {
                self.exec(b)?;
            }
            carried = l.next.iter().map(|s| self.value(s).clone()).collect();
            self.recording = false;
            self.env.observer.event(&Event::LoopCarried {
                id: &step.id,
                done: k + 1,
                total,
                values: &carried,
            });
            self.env.observer.event(&Event::LoopStep {
                id: &step.id,
                done: k + 1,
                total,
            });
        }
        self.recording = was_recording;
        self.loop_vars[i].clear();
        carried.extend([Value::None, Value::None]); // item and index: body-only
        Ok(carried)
    }
}

/// What a loop iterates: a list's items, or the indices of a count.
enum Items {
    List(std::sync::Arc<[Value]>),
    Count(usize),
}

impl Items {
    fn len(&self) -> usize {
        match self {
            Items::List(l) => l.len(),
            Items::Count(n) => *n,
        }
    }
    fn get(&self, k: usize) -> Value {
        match self {
            Items::List(l) => l[k].clone(),
            Items::Count(_) => Value::Int(k as i64),
        }
    }
}

/// Size and modification time of a file (or a marker when it is missing), so
/// that editing an input file changes the key of the node that reads it.
fn file_stamp(path: &str) -> [u8; 24] {
    let mut out = [0u8; 24];
    if let Ok(meta) = std::fs::metadata(path) {
        out[..8].copy_from_slice(&meta.len().to_le_bytes());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        out[8..16].copy_from_slice(&mtime.as_secs().to_le_bytes());
        out[16..20].copy_from_slice(&mtime.subsec_nanos().to_le_bytes());
    } else {
        out[20] = 1;
    }
    out
}

/// The bytes a result holds: its tensors and strings exactly
/// (`cache::value_bytes`); if it holds plugin objects, which carry no size
/// in the ABI, at least the growth of the memory the process has allocated
/// while it was made (`allocated_bytes`, measured before as `before`). An
/// estimate: device (GPU) memory an object holds is not seen, and whatever
/// else the node allocated and kept is counted with it.
fn result_bytes(values: &[Value], before: u64) -> u64 {
    let exact: u64 = values.iter().map(super::cache::value_bytes).sum();
    fn has_object(v: &Value) -> bool {
        match v {
            Value::Object(_) => true,
            Value::List(items) => items.iter().any(has_object),
            _ => false,
        }
    }
    if values.iter().any(has_object) {
        exact.max(allocated_bytes().saturating_sub(before))
    } else {
        exact
    }
}

/// Memory the process has allocated and not freed: the C allocator's
/// in-use bytes (`plugin::ffi::malloc_in_use`), else resident memory
/// (`VmRSS`, which misses freed memory that is reused).
fn allocated_bytes() -> u64 {
    if let Some(b) = crate::plugin::ffi::malloc_in_use() {
        return b;
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
