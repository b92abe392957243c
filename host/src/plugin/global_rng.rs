//! The process-wide lock that plugins take around seeding and drawing from
//! libtorch's global CPU generator (`diffgraph_sdk::rng::seeded`, through
//! `AbiCall::global_rng`). It is a flag and a condition variable rather
//! than a `MutexGuard` because the plugin takes and gives it back in two
//! separate calls across the ABI.

use std::sync::{Condvar, Mutex};

static HELD: Mutex<bool> = Mutex::new(false);
static RELEASED: Condvar = Condvar::new();

/// Blocks until no one holds the lock, then holds it.
pub fn acquire() {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    while *held {
        held = RELEASED.wait(held).unwrap_or_else(|e| e.into_inner());
    }
    *held = true;
}

/// Gives the lock back and wakes one waiter.
pub fn release() {
    *HELD.lock().unwrap_or_else(|e| e.into_inner()) = false;
    RELEASED.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn holders_never_overlap() {
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let inside = inside.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        acquire();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        release();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
