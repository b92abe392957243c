//! Ctrl-C: the first asks the run to stop at the next node or iteration
//! (outputs already written stay whole: they are written atomically); a
//! second exits at once (code 130), for a node that does not check the flag.
use std::sync::atomic::{AtomicU32, Ordering};

/// The Ctrl-C handler: `first` on the first press, exit on the second.
pub fn handler(first: impl Fn() + Send + 'static) -> impl FnMut() + Send + 'static {
    let presses = AtomicU32::new(0);
    move || {
        if presses.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("diffgraph: stopping after the current node (Ctrl-C again to exit now)");
            first();
        } else {
            eprintln!("diffgraph: interrupted twice, exiting now");
            std::process::exit(crate::args::EXIT_INTERRUPTED);
        }
    }
}
