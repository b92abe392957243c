//! How many libtorch threads to use, and keeping libtorch's OpenMP threads
//! from spinning on a busy machine. One home for the CLI (`run`, `watch`)
//! and servers.
//!
//! Why: libtorch's CPU kernels run on GNU OpenMP (`libgomp`, shipped with
//! libtorch). Its default wait policy spins at every barrier (up to
//! `GOMP_SPINCOUNT` = 300,000 iterations) before sleeping. When another
//! process holds one of the cores, the thread that is running spins while the
//! one it waits for is descheduled: on the 2-core development machine the
//! demo took 22-51 s instead of ~1 s next to a CPU hog, and 3.6-4.5 s with
//! `OMP_WAIT_POLICY=passive` (BENCHMARKS.md, "Threads on a busy machine").
//!
//! libgomp reads its environment once, in a constructor that runs when the
//! library is loaded, i.e. before `main`; setting the variable later has no
//! effect. So the `diffgraph` command is a launcher without libtorch
//! (`src/bin/launcher.rs`) that sets `OMP_WAIT_POLICY=passive` (with the
//! rest of `crate::engine_env`) and execs `diffgraph-engine`, and
//! [`reexec_with_engine_env`] re-executes the engine when it is started
//! directly without them (a set value, e.g. `active` on a dedicated machine,
//! is kept either way). The one hook
//! that runs before libgomp's constructor, the executable's `.preinit_array`,
//! cannot set it: glibc's own initialiser runs after that hook and resets the
//! environment to the one the process started with (tried; `OMP_DISPLAY_ENV`
//! showed libgomp still spinning). `KMP_BLOCKTIME` is the Intel OpenMP
//! equivalent; this libtorch does not use Intel OpenMP, so it is not set. Small tensors: libtorch runs an elementwise op on one thread below its
//! grain size (32,768 elements, `at::internal::GRAIN_SIZE`), but opens a
//! parallel region for every convolution, GEMM and norm; the sd plugin runs
//! those on one thread below a size (`diffgraph_nodes_sd::op_threads`), where
//! waking a passive worker would cost more than the op.
use std::ffi::OsString;

pub use crate::engine_env::WAIT_POLICY_VAR;

/// The cores this process may use: its CPU affinity mask
/// (`sched_getaffinity`) and its cgroup's CPU quota (cgroup v2 `cpu.max`,
/// v1 `cpu.cfs_quota_us`), whichever is smaller, at least 1. std's
/// `available_parallelism` reads both on Linux.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// libtorch's intra-op thread count when none is asked for: the available
/// cores. (libtorch's own default counts the affinity mask but not a cgroup
/// quota, so a container limited to 2 CPUs on a 64-core host would run 64
/// threads.)
pub fn default_threads() -> usize {
    available_cores()
}

/// What [`configure`] chose, and a line saying so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadChoice {
    /// libtorch intra-op threads.
    pub threads: usize,
    /// The cores available to this process.
    pub cores: usize,
    /// `OMP_WAIT_POLICY` as the OpenMP runtime saw it at start-up (`None`:
    /// unset, libgomp spins).
    pub wait_policy: Option<String>,
}

impl std::fmt::Display for ThreadChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "threads: {} ({} core(s) available; OpenMP wait policy {})",
            self.threads,
            self.cores,
            self.wait_policy.as_deref().unwrap_or("unset (spinning)")
        )
    }
}

/// Sets libtorch's intra-op threads to `requested`, or to
/// [`default_threads`] when `None`. Inter-op threads are left alone: they
/// only serve TorchScript's `fork` and asynchronous ops, which the executor
/// does not use. Call once, before the first tensor op (libtorch refuses to
/// change the inter-op pool later, and the intra-op one is cheapest to set
/// before it starts).
pub fn configure(requested: Option<usize>) -> ThreadChoice {
    let cores = available_cores();
    let threads = requested.unwrap_or_else(default_threads).max(1);
    tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
    ThreadChoice {
        threads,
        cores,
        wait_policy: std::env::var(WAIT_POLICY_VAR).ok(),
    }
}

/// Re-executes this program with the environment it is meant to run in
/// (`crate::engine_env`: `OMP_WAIT_POLICY=passive`, so libtorch's OpenMP
/// threads sleep instead of spinning while they wait, and glibc malloc's
/// tunables) when something is missing; neither can be set in-process (see
/// the module doc). Call first thing in `main`, before any thread is
/// started. Returns only when no re-execution happened: nothing was missing
/// (the user set it, or the launcher or a re-execution did), this process
/// is already a re-execution, or `exec` failed (the error; the caller goes on
/// with the defaults). Costs one more process start (libtorch's static
/// initialisation, ~0.2 s of CPU), once per process; the `diffgraph`
/// launcher sets the variables first, so commands started through it never
/// pay it.
pub fn reexec_with_engine_env() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    /// Set on the re-execution, so it cannot loop should the C library drop
    /// a variable from its environment.
    const REEXECUTED: &str = "DIFFGRAPH_REEXECUTED";
    let missing = crate::engine_env::missing_here();
    if missing.is_empty() || std::env::var_os(REEXECUTED).is_some() {
        return None;
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("diffgraph"));
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let err = std::process::Command::new(exe)
        .arg0(argv0)
        .args(args)
        .envs(missing)
        .env(REEXECUTED, "1")
        .exec();
    Some(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cores in this process's affinity mask, from /proc/self/status.
    fn affinity_count() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        list.split(',')
            .map(|r| match r.split_once('-') {
                Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
                None => 1,
            })
            .sum()
    }

    #[test]
    fn available_cores_respects_the_affinity_mask() {
        let n = available_cores();
        assert!(
            n >= 1 && n <= affinity_count(),
            "{n} vs {}",
            affinity_count()
        );
    }

    #[test]
    fn configure_sets_libtorch_threads() {
        let c = configure(Some(1));
        assert_eq!((c.threads, tch::get_num_threads()), (1, 1));
        let c = configure(None);
        assert_eq!(c.threads, default_threads());
        assert_eq!(tch::get_num_threads() as usize, default_threads());
        assert!(c
            .to_string()
            .starts_with(&format!("threads: {}", c.threads)));
    }
}
