//! Results cached by content key across runs. A key hashes a node's type,
//! plugin generation, constants, device and its inputs' keys, so identical
//! work is found whatever the node ids (ComfyUI's design); see
//! `plan::static_key` and `Run::key_of` (exec/run.rs).
//!
//! One [`SharedCache`] may serve several executors (a server's workers), so a
//! model one job loaded is found by the next job on any worker.
use crate::value::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One node's outputs, and the key they were computed under (None for nodes
/// that depend on loop variables, which are never cached).
pub struct NodeResult {
    pub values: Vec<Value>,
    pub key: Option<u128>,
}

struct Entry {
    result: Arc<NodeResult>,
    last_used: u64,
    /// What the result holds in memory (see [`value_bytes`]).
    bytes: u64,
}

/// Keeps every result used by the last `keep_runs` runs; older ones are
/// evicted when a run ends. A loaded model thus survives as long as the
/// graphs being run keep using it.
///
/// With a byte budget (`with_budget`, `diffgraph serve --cache-mb`) the run
/// rule is off: results stay, however many runs ago they were used, until
/// the total exceeds the budget; then idle results (not used by the run in
/// progress) go, least recently used first and, among those last used in the
/// same run, the largest first. So two (or more) workflows alternating keep
/// their models loaded as long as they fit, and memory stays bounded when
/// they do not. A single result larger than the budget is evicted as soon
/// as its run ends.
pub struct Cache {
    map: HashMap<u128, Entry>,
    run: u64,
    keep_runs: u64,
    budget: Option<u64>,
    bytes: u64,
    evictions: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(2)
    }
}

impl Cache {
    pub fn new(keep_runs: u64) -> Cache {
        Cache {
            map: HashMap::new(),
            run: 0,
            keep_runs: keep_runs.max(1),
            budget: None,
            bytes: 0,
            evictions: 0,
        }
    }

    /// A cache bounded by `bytes` instead of by runs (see [`Cache`]).
    pub fn with_budget(bytes: u64) -> Cache {
        Cache {
            budget: Some(bytes),
            ..Cache::new(1)
        }
    }

    /// The byte budget, if any (the executor then measures what plugin
    /// objects cost, see `exec::run`).
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Bytes held by the cached results, as sized at insertion.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Results evicted to stay within the budget so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn get(&mut self, key: u128) -> Option<Arc<NodeResult>> {
        let run = self.run;
        self.map.get_mut(&key).map(|e| {
            e.last_used = run;
            e.result.clone()
        })
    }

    /// Stores a result sized by its tensors and strings ([`value_bytes`]).
    pub fn insert(&mut self, key: u128, result: Arc<NodeResult>) {
        let bytes = result.values.iter().map(value_bytes).sum();
        self.insert_sized(key, result, bytes);
    }

    /// Stores a result that holds `bytes` (measured by the caller: plugin
    /// objects carry no size of their own).
    pub fn insert_sized(&mut self, key: u128, result: Arc<NodeResult>, bytes: u64) {
        let entry = Entry {
            result,
            last_used: self.run,
            bytes,
        };
        self.bytes += bytes;
        if let Some(old) = self.map.insert(key, entry) {
            self.bytes -= old.bytes;
        }
        self.enforce_budget();
    }

    /// Marks the end of a run and evicts what recent runs did not use (or,
    /// with a budget, what does not fit).
    pub fn end_run(&mut self) {
        if self.budget.is_none() {
            let oldest_kept = (self.run + 1).saturating_sub(self.keep_runs);
            let mut freed = 0;
            self.map.retain(|_, e| {
                let keep = e.last_used >= oldest_kept;
                freed += if keep { 0 } else { e.bytes };
                keep
            });
            self.bytes -= freed;
        }
        self.run += 1;
        self.enforce_budget();
    }

    /// Over budget: drops idle results, least recently used first, the
    /// largest first among equals. Results used by the run in progress stay
    /// (the run holds them anyway; dropping them would free nothing).
    fn enforce_budget(&mut self) {
        let Some(budget) = self.budget else { return };
        if self.bytes <= budget {
            return;
        }
        let mut idle: Vec<(u64, std::cmp::Reverse<u64>, u128)> = self
            .map
            .iter()
            .filter(|(_, e)| e.last_used < self.run)
            .map(|(k, e)| (e.last_used, std::cmp::Reverse(e.bytes), *k))
            .collect();
        idle.sort_unstable();
        for (_, _, key) in idle {
            if self.bytes <= budget {
                break;
            }
            if let Some(e) = self.map.remove(&key) {
                self.bytes -= e.bytes;
                self.evictions += 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

/// Memory a value holds: a tensor's elements (on whatever device), a
/// string's bytes, a list's items; 0 for plugin objects, which carry no size
/// in the ABI (the executor measures those, see `exec::run`).
pub fn value_bytes(v: &Value) -> u64 {
    match v {
        Value::Tensor(t) => {
            let t = t.tensor();
            (t.numel() * t.kind().elt_size_in_bytes()) as u64
        }
        Value::Str(s) => s.len() as u64,
        Value::List(items) => items.iter().map(value_bytes).sum(),
        _ => 0,
    }
}

/// A [`Cache`] several executors (and threads) share; cloning shares it.
///
/// The lock is held only to look up or store a result, never while a node
/// runs, so executors on different threads run concurrently. Two of them
/// asking for the same key at the same time both compute it (the second
/// insert wins); runs are counted across all of them for eviction, so give a
/// cache shared by N workers `keep_runs` of about N times what one would need.
#[derive(Clone, Default)]
pub struct SharedCache(Arc<Mutex<Cache>>);

impl SharedCache {
    pub fn new(keep_runs: u64) -> SharedCache {
        SharedCache(Arc::new(Mutex::new(Cache::new(keep_runs))))
    }

    /// The cache itself, locked. A panic while it was locked cannot leave it
    /// half-updated (each operation is one map call), so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Cache> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, key: u128) -> Option<Arc<NodeResult>> {
        self.lock().get(key)
    }

    pub fn insert(&self, key: u128, result: Arc<NodeResult>) {
        self.lock().insert(key, result)
    }

    pub fn insert_sized(&self, key: u128, result: Arc<NodeResult>, bytes: u64) {
        self.lock().insert_sized(key, result, bytes)
    }

    /// A shared cache bounded by `bytes` (see [`Cache`]).
    pub fn with_budget(bytes: u64) -> SharedCache {
        SharedCache(Arc::new(Mutex::new(Cache::with_budget(bytes))))
    }

    pub fn budget(&self) -> Option<u64> {
        self.lock().budget()
    }

    pub fn end_run(&self) {
        self.lock().end_run()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn clear(&self) {
        self.lock().clear()
    }

    /// Whether `other` is a handle to the same cache.
    pub fn same_as(&self, other: &SharedCache) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> Arc<NodeResult> {
        Arc::new(NodeResult {
            values: vec![Value::Int(0)],
            key: None,
        })
    }

    /// Least recently used idle results go first; among those last used in
    /// the same run the largest; results of the run in progress never.
    #[test]
    fn a_budget_evicts_idle_results_least_recently_used_first() {
        let mut c = Cache::with_budget(100);
        c.insert_sized(1, result(), 30);
        c.insert_sized(2, result(), 50);
        c.insert_sized(3, result(), 10);
        c.end_run();
        assert_eq!((c.len(), c.bytes(), c.evictions()), (3, 90, 0));
        assert!(c.get(1).is_some()); // used again: not idle in this run
        c.insert_sized(4, result(), 40); // 130: one idle result must go
        assert!(c.get(2).is_none(), "the largest of the least recent");
        assert!(c.get(3).is_some() && c.get(1).is_some() && c.get(4).is_some());
        assert_eq!((c.bytes(), c.evictions()), (80, 1));
        // Alternating runs keep everything that fits, however old.
        for _ in 0..5 {
            c.end_run();
        }
        assert_eq!(c.len(), 3);
        // A result larger than the budget lives only through its run.
        c.insert_sized(5, result(), 500);
        assert!(c.get(5).is_some());
        c.end_run();
        assert!(c.get(5).is_none());
        assert!(c.bytes() <= 100, "{}", c.bytes());
    }

    #[test]
    fn without_a_budget_the_run_rule_holds_and_bytes_add_up() {
        let mut c = Cache::new(2);
        let t = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        c.insert(
            1,
            Arc::new(NodeResult {
                values: vec![Value::Tensor(crate::value::SharedTensor::new(t))],
                key: None,
            }),
        );
        assert_eq!(c.bytes(), 24);
        c.end_run();
        c.end_run();
        assert_eq!((c.len(), c.bytes()), (1, 24));
        c.end_run();
        assert_eq!((c.len(), c.bytes(), c.evictions()), (0, 0, 0));
    }
}
