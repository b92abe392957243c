//! Stopping a long node part-way when the user interrupts the run (Ctrl-C,
//! a server's interrupt). A node with a loop of its own checks
//! [`crate::Context::interrupted`] and returns an error; deep computations
//! that return plain tensors between their steps (a U-Net's blocks, a VAE's,
//! a loader's tensors) call [`check`] between steps instead: it unwinds out
//! of the node, without a panic message, and the call glue reports the node
//! as interrupted. No ABI change: the host sees an error while its interrupt
//! flag is set, which it reports as an interruption.

/// The unwind payload of [`check`].
pub struct Interrupted;

/// The error text a node stopped by [`check`] reports.
pub const MESSAGE: &str = "interrupted";

/// Whether the run calling the node on this thread was asked to stop
/// (false outside a node call).
pub fn requested() -> bool {
    crate::export::current_call_interrupted()
}

/// Ends the running node now if its run was asked to stop; a no-op otherwise
/// (one atomic load through the host). Call it between steps that take long
/// (milliseconds or more), never while holding state that must stay
/// consistent: it unwinds, so values on the stack are dropped.
pub fn check() {
    if requested() {
        // resume_unwind: no panic hook, so no "panicked at" message.
        std::panic::resume_unwind(Box::new(Interrupted));
    }
}

/// Runs `f`; an interruption ([`check`]) inside it ends it here with the
/// interrupted error instead of unwinding further. Wrap calls made while
/// holding a `MutexGuard` (a model behind a lock), so that an interruption
/// does not poison the lock for the next run. Other panics go on unwinding.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, crate::NodeError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) if payload.is::<Interrupted>() => Err(crate::NodeError::new(MESSAGE)),
        Err(payload) => std::panic::resume_unwind(payload),
    }
}
