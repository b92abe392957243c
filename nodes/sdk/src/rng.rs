//! Seeded draws from libtorch's global CPU generator, the only generator tch
//! exposes (no `torch.Generator` objects). Seeding it and drawing are two
//! calls, so two runs in one process (a server's jobs, parallel tests, every
//! plugin library) must not interleave them: the host lends one
//! process-wide lock through the ABI ([`crate::abi::AbiCall::global_rng`]).
//! Every draw that must be reproducible goes through [`seeded`].

use std::sync::{Mutex, MutexGuard};

/// Stands in for the host's lock when no node call is running on this
/// thread (a plugin's code used as a library, its unit tests): then no host
/// lends a lock, and this library's callers share this one.
static LIBRARY_LOCK: Mutex<()> = Mutex::new(());

/// Held while seeding and drawing; gives the lock back when dropped (also
/// when the draw unwinds).
struct Held {
    /// None while the host's lock is held.
    library: Option<MutexGuard<'static, ()>>,
}

impl Held {
    fn acquire() -> Held {
        if crate::export::current_call_global_rng(true) {
            Held { library: None }
        } else {
            let guard = LIBRARY_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            Held {
                library: Some(guard),
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.library.is_none() {
            crate::export::current_call_global_rng(false);
        }
    }
}

/// Seeds the global CPU generator with `seed` and runs `draw` while no other
/// seeded draw in the process can touch the generator: what `draw` takes is
/// what `torch.Generator("cpu").manual_seed(seed)` would give it, draw after
/// draw.
pub fn seeded<T>(seed: i64, draw: impl FnOnce() -> T) -> T {
    let _held = Held::acquire();
    tch::manual_seed(seed);
    draw()
}
