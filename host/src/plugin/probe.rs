//! Opening plugin libraries in a child process first. Loading a library runs
//! its constructors (`.init_array`, C's `__attribute__((constructor))`, the
//! `ctor` crate) inside `dlopen`, and then the plugin's entry function: code
//! that can abort or segfault before any node runs. A library is opened in
//! the host only after a child process opened it and survived; one that
//! killed its child is refused, naming the signal.
//!
//! Cheap at start-up: the libraries that survived are remembered by content
//! hash (xxh3-128; a hot-reload copy of the same file hits too) in
//! `plugin-probes` under the cache folder (`$DIFFGRAPH_CACHE`, else
//! `$XDG_CACHE_HOME/diffgraph`, else `~/.cache/diffgraph`), and in memory;
//! only new or changed libraries start a child, all of them in one. Probing
//! is on once a program calls [`enable`] with the command of a child that
//! runs [`child_main`] (the `diffgraph` binary's hidden `probe-plugins`);
//! library users who never call it load in process as before.
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The child's line after each library it opened (and survived).
const SURVIVED: &str = "survived";

static PROBER: OnceLock<(PathBuf, Vec<OsString>)> = OnceLock::new();
/// Content hash -> the verdict (`Err`: why it is refused), this process.
static VERDICTS: OnceLock<Mutex<HashMap<u128, Result<(), String>>>> = OnceLock::new();

/// Turns probing on: `program args.. FILE..` must open each FILE in order,
/// printing a line after each (what [`child_main`] does).
pub fn enable(program: PathBuf, args: Vec<OsString>) {
    let _ = PROBER.set((program, args));
}

fn verdicts() -> std::sync::MutexGuard<'static, HashMap<u128, Result<(), String>>> {
    VERDICTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The cache folder (see the module doc).
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("DIFFGRAPH_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("diffgraph")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/diffgraph")))
}

fn cache_file() -> Option<PathBuf> {
    cache_dir().map(|d| d.join("plugin-probes"))
}

fn content_hash(path: &Path) -> Option<u128> {
    std::fs::read(path)
        .ok()
        .map(|b| xxhash_rust::xxh3::xxh3_128(&b))
}

/// Hashes of libraries that survived a probe in an earlier process.
fn cached() -> Vec<u128> {
    let Some(text) = cache_file().and_then(|f| std::fs::read_to_string(f).ok()) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| u128::from_str_radix(l.trim(), 16).ok())
        .collect()
}

fn remember(hashes: &[u128]) {
    let Some(file) = cache_file() else { return };
    if hashes.is_empty()
        || file
            .parent()
            .is_some_and(|d| std::fs::create_dir_all(d).is_err())
    {
        return;
    }
    // Appends of whole short lines: concurrent writers cannot tear them.
    let lines: String = hashes.iter().map(|h| format!("{h:032x}\n")).collect();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        let _ = f.write_all(lines.as_bytes());
    }
}

/// Whether each of `files` may be opened in this process: Ok, or why not
/// (its child died opening it). Always Ok while probing is off. A file that
/// cannot be read is Ok here: opening it reports the error.
pub fn check(files: &[PathBuf]) -> Vec<Result<(), String>> {
    let Some((program, args)) = PROBER.get() else {
        return files.iter().map(|_| Ok(())).collect();
    };
    let hashes: Vec<Option<u128>> = files.iter().map(|f| content_hash(f)).collect();
    let mut unknown: Vec<(PathBuf, u128)> = Vec::new();
    {
        let mut known = verdicts();
        if !hashes.iter().flatten().all(|h| known.contains_key(h)) {
            for h in cached() {
                known.insert(h, Ok(()));
            }
        }
        for (f, h) in files.iter().zip(&hashes) {
            if let Some(h) = h {
                if !known.contains_key(h) && !unknown.iter().any(|u| u.1 == *h) {
                    unknown.push((f.clone(), *h));
                }
            }
        }
    }
    let mut survived = Vec::new();
    let mut rest = unknown.as_slice();
    while !rest.is_empty() {
        let Some((opened, died)) = run_child(program, args, rest) else {
            // No child process (none may be started here): open in process,
            // as without probing, and remember nothing.
            break;
        };
        let mut known = verdicts();
        for (_, h) in &rest[..opened] {
            known.insert(*h, Ok(()));
            survived.push(*h);
        }
        match died {
            // The library being opened when the child died is refused; the
            // ones after it get a child of their own.
            Some(how) if opened < rest.len() => {
                known.insert(rest[opened].1, Err(how));
                rest = &rest[opened + 1..];
            }
            _ => rest = &rest[opened.min(rest.len())..],
        }
    }
    remember(&survived);
    let known = verdicts();
    hashes
        .iter()
        .map(|h| h.and_then(|h| known.get(&h).cloned()).unwrap_or(Ok(())))
        .collect()
}

/// Opens `files` in one child; returns how many it survived and, if it
/// died, how. None: no child could be started.
fn run_child(
    program: &Path,
    args: &[OsString],
    files: &[(PathBuf, u128)],
) -> Option<(usize, Option<String>)> {
    let child = Command::new(program)
        .args(args)
        .args(files.iter().map(|f| &f.0))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return None;
    };
    let stdout = child.stdout.take().expect("piped");
    let opened = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l == SURVIVED)
        .count();
    let status = child.wait();
    Some(match status {
        Ok(s) if s.success() && opened >= files.len() => (opened, None),
        Ok(s) => (
            opened,
            Some(format!(
                "opening it killed a separate process ({}): a library constructor or the \
                 plugin's entry crashed; refused, so that it cannot take diffgraph down",
                crate::worker::describe_exit(s)
            )),
        ),
        Err(e) => (opened, Some(format!("its probe process vanished: {e}"))),
    })
}

/// The child's side: opens each library (constructors and the plugin
/// handshake run), printing a line after each. A library refused by the
/// handshake also counts as survived: the host will refuse it with the
/// handshake's own message. Returns the exit code.
pub fn child_main(files: &[PathBuf]) -> i32 {
    let mut out = std::io::stdout();
    for f in files {
        let _ = super::ffi::open_library(f);
        if writeln!(out, "{SURVIVED}")
            .and_then(|_| out.flush())
            .is_err()
        {
            return 1;
        }
    }
    0
}
