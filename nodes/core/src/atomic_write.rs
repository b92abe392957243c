//! Crash-safe output files, for every saver of the plugin.
//!
//! A file is written to a hidden temporary `.diffgraph-<pid>-<n>.tmp` in the
//! target folder, created exclusively (`create_new`: O_CREAT|O_EXCL, never
//! an existing file or a planted link), flushed to disk (`fsync`), then
//! published under its name and the folder flushed too, so that after a
//! crash or power loss a reader finds either nothing or the whole file.
//!
//! Publishing never replaces an existing file: the name is taken with a hard
//! link, which fails if the name exists (a race-free "rename without
//! replace" in safe Rust). A taken name gets ComfyUI's counter suffix
//! instead: `out.png`, then `out_00001_.png`, `out_00002_.png`, ...
//! (ComfyUI's `folder_paths.get_save_image_path` numbering; the first file
//! keeps the plain name the graph asked for).
//!
//! Temporaries left by a killed run are ours to clean: once per folder and
//! process, `.diffgraph-*.tmp` files whose writer process is gone (or, for
//! names without a pid, older than an hour) are removed.
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const TEMP_PREFIX: &str = ".diffgraph-";
const TEMP_SUFFIX: &str = ".tmp";
/// How many counter names are tried before giving up.
const MAX_COUNTER: u32 = 99_999;

/// Writes a new file at `path` (or the next free counter name) through
/// `write`, which gets the open temporary file and its path (for writers
/// that take a path). Returns the path written. Errors name the file.
pub fn write_new(
    path: &Path,
    write: impl FnOnce(&mut File, &Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    clean_stale_once(dir);
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let (mut file, tmp) = create_temp(dir).map_err(|e| fail(&e))?;
    let result = (|| {
        write(&mut file, &tmp)?;
        // The writer may have written through the path: flush what is on
        // disk under that name, not only this handle's writes.
        drop(file);
        let synced = OpenOptions::new().write(true).open(&tmp);
        synced.and_then(|f| f.sync_all()).map_err(|e| fail(&e))?;
        let published = publish(&tmp, path).map_err(|e| fail(&e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(&e))?;
        Ok(published)
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// `.diffgraph-<pid>-<sequence>-<nanos>.tmp`, created exclusively, mode 0644.
fn create_temp(dir: &Path) -> std::io::Result<(File, PathBuf)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{TEMP_PREFIX}{}-{seq}-{nanos}{TEMP_SUFFIX}",
            std::process::id()
        );
        let tmp = dir.join(name);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp);
        match opened {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Gives `tmp` the name `path`, or the first free counter name, never
/// replacing a file. Returns the name used.
fn publish(tmp: &Path, path: &Path) -> std::io::Result<PathBuf> {
    for k in 0..=MAX_COUNTER {
        let name = if k == 0 {
            path.to_path_buf()
        } else {
            with_counter(path, k)
        };
        match fs::hard_link(tmp, &name) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            // A file system without hard links: check, then rename (a
            // narrow race with another writer, where links are missing).
            Err(_) if !name.exists() => {
                fs::rename(tmp, &name)?;
                return Ok(name);
            }
            Err(_) => continue,
        }
    }
    Err(std::io::Error::other(format!(
        "{} and its {MAX_COUNTER} counter names are all taken",
        path.display()
    )))
}

/// `dir/stem_00007_.ext`: ComfyUI's counter name.
fn with_counter(path: &Path, k: u32) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}_{k:05}_.{}", ext.to_string_lossy()),
        None => format!("{stem}_{k:05}_"),
    };
    path.with_file_name(name)
}

/// Cleans `dir`'s stale temporaries the first time this process writes there.
fn clean_stale_once(dir: &Path) {
    static CLEANED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut cleaned = CLEANED.lock().unwrap_or_else(|p| p.into_inner());
    if cleaned
        .get_or_insert_with(HashSet::new)
        .insert(dir.to_path_buf())
    {
        clean_stale(dir);
    }
}

/// Removes our temporaries whose writer is gone: the pid in the name has no
/// process, or (older names without a pid) the file is over an hour old.
pub fn clean_stale(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(middle) = name
            .strip_prefix(TEMP_PREFIX)
            .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
        else {
            continue;
        };
        let pid: Option<u32> = middle.split('-').next().and_then(|p| p.parse().ok());
        let stale = match pid {
            Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600)),
        };
        if stale
            && entry.file_type().is_ok_and(|t| t.is_file())
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn put(path: &Path, text: &str) -> PathBuf {
        write_new(path, |f, _| {
            f.write_all(text.as_bytes()).map_err(|e| e.to_string())
        })
        .unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn never_overwrites_and_counts_like_comfyui() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        assert_eq!(put(&path, "one"), path);
        assert_eq!(put(&path, "two"), dir.path().join("out_00001_.png"));
        assert_eq!(put(&path, "three"), dir.path().join("out_00002_.png"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "one");
        assert_eq!(
            names(dir.path()),
            ["out.png", "out_00001_.png", "out_00002_.png"]
        );
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_new(&dir.path().join("x.bin"), |f, _| {
            f.write_all(b"partial").unwrap();
            Err("encoder failed".into())
        })
        .unwrap_err();
        assert_eq!(err, "encoder failed");
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn stale_temporaries_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0x7fffffff does not exist; ours does; the third is not ours.
        let dead = format!(".diffgraph-{}-0-1.tmp", i32::MAX);
        let live = format!(".diffgraph-{}-0-1.tmp", std::process::id());
        for n in [dead.as_str(), live.as_str(), ".other-1.tmp", "keep.png"] {
            fs::write(dir.path().join(n), "x").unwrap();
        }
        assert_eq!(clean_stale(dir.path()), 1);
        assert_eq!(
            names(dir.path()),
            [live.as_str(), ".other-1.tmp", "keep.png"]
        );
    }
}
