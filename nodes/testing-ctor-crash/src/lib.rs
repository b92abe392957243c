//! Fixture library whose constructor aborts the process that loads it: the
//! dynamic loader runs `.init_array` entries inside `dlopen`, before any
//! plugin symbol could be looked up (C's `__attribute__((constructor))`,
//! the `ctor` crate). diffgraph must refuse it with a clear message, not
//! die (plugin discovery probes libraries in a child process first:
//! `diffgraph::plugin::probe`; host/tests/isolate.rs).
//!
//! No SDK, no `unsafe` block; only the `link_section` attribute, which
//! `unsafe_code` would flag: this file exists to be a faulty library.

/// Called by the dynamic loader while the library is being opened.
extern "C" fn crash_while_loading() {
    std::process::abort()
}

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static CRASH_ON_LOAD: extern "C" fn() = crash_while_loading;
