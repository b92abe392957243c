//! The environment the engine runs in: settings that the C libraries under
//! libtorch read once, when the process starts, so they are set before the
//! engine starts. One home for the `diffgraph` launcher (which includes this
//! file: it links neither libtorch nor the library) and for the engine's
//! re-execution when it is started directly (`diffgraph::threads`). Only
//! `std` is used here, for that reason.
//!
//! - **libgomp's wait policy** (`OMP_WAIT_POLICY=passive`): libtorch's
//!   OpenMP threads sleep instead of spinning while they wait, which keeps a
//!   busy machine usable (`diffgraph::threads` says why and what it costs).
//! - **glibc malloc's tunables** (`GLIBC_TUNABLES`): libtorch's CPU tensors
//!   come from malloc. By default glibc serves blocks over its mmap threshold
//!   (which adapts up to 32 MiB) with a fresh `mmap` each time and gives the
//!   heap's free top back over 128 KiB, so the large activations of a U-Net
//!   (a 64x64 SD1.5 GEGLU output is 80 MiB at batch 2) are new pages at every
//!   call: the kernel faults and zeroes each one. An SD1.5-size step took
//!   ~3M page faults and 8-9 s of system time per process run of the
//!   `unet_step` bench. With `mmap_max=0` (every block from the heap),
//!   `trim_threshold` at its largest (the heap is not shrunk while a graph
//!   runs) and `hugetlb=1` (the heap in transparent huge pages where the
//!   system allows `madvise`), freed blocks are reused in place: 10k
//!   faults, and the step 0.86-1.00x the default's time at the same peak;
//!   loading a checkpoint and a step in one process peaks ~6% higher, as
//!   freed blocks stay in the heap (BENCHMARKS.md, "Memory that stays
//!   mapped"). The executor gives the free memory back at the end of every
//!   run (`plugin::ffi::release_free_memory`), so a server or `watch`
//!   between runs does not keep its peak.
//!
//! A user's setting is kept: `OMP_WAIT_POLICY`, and the malloc tunables as a
//! whole: when any of the three is named in `GLIBC_TUNABLES` or set by its
//! older `MALLOC_*_` variable, none is added (they only work together: a
//! trim threshold alone also freezes the mmap threshold at 128 KiB, which
//! tripled the page faults). Otherwise they are appended to the user's
//! `GLIBC_TUNABLES`.
use std::ffi::{OsStr, OsString};

/// The OpenMP variable libgomp reads at start-up.
pub const WAIT_POLICY_VAR: &str = "OMP_WAIT_POLICY";
/// The wait policy diffgraph runs with.
pub const WAIT_POLICY: &str = "passive";
/// glibc's tunables variable: `name=value` pairs separated by `:`.
pub const TUNABLES_VAR: &str = "GLIBC_TUNABLES";

/// The malloc tunables diffgraph runs with: name, value, and the older
/// variable glibc also reads for it (a user who sets that one keeps it).
pub const MALLOC_TUNABLES: [(&str, &str, Option<&str>); 3] = [
    ("glibc.malloc.mmap_max", "0", Some("MALLOC_MMAP_MAX_")),
    (
        "glibc.malloc.trim_threshold",
        // The largest value glibc takes (SIZE_MAX on 64 bits): never trim
        // while running; the executor trims after each run.
        "18446744073709551615",
        Some("MALLOC_TRIM_THRESHOLD_"),
    ),
    ("glibc.malloc.hugetlb", "1", None),
];

/// The variables to set, with their values, for the engine to run with
/// diffgraph's settings, given the current environment (`lookup`). Empty
/// when nothing is missing, so applying the result makes it empty.
pub fn missing(lookup: impl Fn(&str) -> Option<OsString>) -> Vec<(&'static str, OsString)> {
    let mut set = Vec::new();
    if lookup(WAIT_POLICY_VAR).is_none() {
        set.push((WAIT_POLICY_VAR, OsString::from(WAIT_POLICY)));
    }
    let user = lookup(TUNABLES_VAR).unwrap_or_default();
    let named: Vec<&[u8]> = user
        .as_encoded_bytes()
        .split(|&b| b == b':')
        .filter_map(|pair| pair.split(|&b| b == b'=').next())
        .collect();
    let user_manages_malloc = MALLOC_TUNABLES.iter().any(|(name, _, alias)| {
        named.contains(&name.as_bytes()) || alias.is_some_and(|a| lookup(a).is_some())
    });
    if !user_manages_malloc {
        let ours: Vec<String> = MALLOC_TUNABLES
            .iter()
            .map(|(name, value, _)| format!("{name}={value}"))
            .collect();
        let mut tunables = user.clone();
        if !tunables.is_empty() {
            tunables.push(":");
        }
        tunables.push(ours.join(":"));
        set.push((TUNABLES_VAR, tunables));
    }
    set
}

/// [`missing`] in this process's environment.
pub fn missing_here() -> Vec<(&'static str, OsString)> {
    missing(|name| std::env::var_os(OsStr::new(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn missing_in(vars: &[(&str, &str)]) -> HashMap<&'static str, String> {
        let env: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        missing(|k| env.get(k).cloned())
            .into_iter()
            .map(|(k, v)| (k, v.into_string().unwrap()))
            .collect()
    }

    const ALL: &str = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615:glibc.malloc.hugetlb=1";

    #[test]
    fn an_empty_environment_gets_every_setting() {
        let set = missing_in(&[]);
        assert_eq!(set[WAIT_POLICY_VAR], "passive");
        assert_eq!(set[TUNABLES_VAR], ALL);
    }

    #[test]
    fn applying_the_settings_leaves_nothing_missing() {
        assert!(missing_in(&[(WAIT_POLICY_VAR, "passive"), (TUNABLES_VAR, ALL)]).is_empty());
    }

    #[test]
    fn other_tunables_are_kept_and_ours_appended() {
        let user = "glibc.cpu.x86_rep_movsb_threshold=4096";
        let set = missing_in(&[(WAIT_POLICY_VAR, "active"), (TUNABLES_VAR, user)]);
        assert!(!set.contains_key(WAIT_POLICY_VAR));
        assert_eq!(set[TUNABLES_VAR], format!("{user}:{ALL}"));
    }

    #[test]
    fn a_user_who_sets_any_malloc_tunable_keeps_glibcs_defaults_for_the_rest() {
        for vars in [
            [(TUNABLES_VAR, "glibc.cpu.x=1:glibc.malloc.hugetlb=0")],
            [(TUNABLES_VAR, "glibc.malloc.mmap_max")],
            [("MALLOC_TRIM_THRESHOLD_", "131072")],
        ] {
            let set = missing_in(&vars);
            assert!(!set.contains_key(TUNABLES_VAR), "{vars:?}: {set:?}");
            assert_eq!(set[WAIT_POLICY_VAR], "passive");
        }
    }
}
