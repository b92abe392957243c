//! Results cached by content key across runs of one process. A key hashes a
//! node's type, plugin generation, constants, device and its inputs' keys, so
//! identical work is found whatever the node ids (ComfyUI's design); see
//! `plan::static_key` and `Executor::key_of`.
use crate::value::Value;
use std::collections::HashMap;
use std::sync::Arc;

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
