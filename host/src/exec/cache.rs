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
}

/// Keeps every result used by the last `keep_runs` runs; older ones are
/// evicted when a run ends. A loaded model thus survives as long as the
/// graphs being run keep using it.
pub struct Cache {
    map: HashMap<u128, Entry>,
    run: u64,
    keep_runs: u64,
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
        }
    }

    pub fn get(&mut self, key: u128) -> Option<Arc<NodeResult>> {
        let run = self.run;
        self.map.get_mut(&key).map(|e| {
            e.last_used = run;
            e.result.clone()
        })
    }

    pub fn insert(&mut self, key: u128, result: Arc<NodeResult>) {
        self.map.insert(
            key,
            Entry {
                result,
                last_used: self.run,
            },
        );
    }

    /// Marks the end of a run and evicts what recent runs did not use.
    pub fn end_run(&mut self) {
        let oldest_kept = (self.run + 1).saturating_sub(self.keep_runs);
        self.map.retain(|_, e| e.last_used >= oldest_kept);
        self.run += 1;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&mut self) {
        self.map.clear();
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
