//! Runs in progress, as `gc` sees them: each run (and each worker) registers the keys
//! its plan reaches in `.runs/` before it looks at the cache, and holds a lock on that
//! file while it lives, so `gc` keeps what a live run needs. Registration and `gc` take
//! one more lock, `.runs.lock` (shared and exclusive), so a run never registers in the
//! middle of a collection, after `gc` has read the registrations.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::store::Cache;
use crate::error::CacheError;

/// A registered run; unregistered when dropped (or when the process dies: the lock
/// goes with it and the next `gc` deletes the file).
pub struct LiveRun {
    file: File,
    path: PathBuf,
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Held by `gc` for the whole collection: runs wait for it before registering.
pub struct Collection {
    _file: File,
}

fn runs_dir(cache: &Cache) -> PathBuf {
    cache.root().join(".runs")
}

/// `.runs.lock`, held shared by a registering run and exclusively by a collection;
/// released when the file is dropped.
fn gate(cache: &Cache, shared: bool) -> Result<File, CacheError> {
    let path = cache.root().join(".runs.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(CacheError::io(&path))?;
    let locked = if shared {
        file.lock_shared()
    } else {
        file.lock()
    };
    locked.map_err(CacheError::io(&path))?;
    Ok(file)
}

/// Registers a run that reaches `keys`. Call it before the run reads the cache.
pub fn register<'k>(
    cache: &Cache,
    keys: impl IntoIterator<Item = &'k str>,
) -> Result<LiveRun, CacheError> {
    let dir = runs_dir(cache);
    fs::create_dir_all(&dir).map_err(CacheError::io(&dir))?;
    // Waits while a gc collects; runs register side by side.
    let gate = gate(cache, true)?;
    let millis = super::store::unix_ms(SystemTime::now());
    let path = dir.join(format!("{millis}-{}", std::process::id()));
    let mut file = File::create(&path).map_err(CacheError::io(&path))?;
    let mut text = String::new();
    for key in keys {
        text.push_str(key);
        text.push('\n');
    }
    let written = file
        .lock()
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.flush());
    if let Err(e) = written {
        // A full disk: no half registration stays behind.
        let _ = fs::remove_file(&path);
        return Err(CacheError::io(&path)(e));
    }
    // The registration is complete before any gc can read it.
    drop(gate);
    Ok(LiveRun { file, path })
}

/// Starts a collection: waits until no run is registering, then returns the keys every
/// live run reaches, deleting the registrations of runs that died.
pub fn collect(cache: &Cache) -> Result<(Collection, HashSet<String>), CacheError> {
    let gate_file = gate(cache, false)?;
    let mut keys = HashSet::new();
    let dir = runs_dir(cache);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Collection { _file: gate_file }, keys));
        }
        Err(e) => return Err(CacheError::io(&dir)(e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if live(&path)? {
            let text = fs::read_to_string(&path).map_err(CacheError::io(&path))?;
            keys.extend(text.lines().map(String::from));
        } else {
            let _ = fs::remove_file(&path);
        }
    }
    Ok((Collection { _file: gate_file }, keys))
}

/// Whether the run that wrote a registration still holds it.
fn live(path: &Path) -> Result<bool, CacheError> {
    let file = match File::open(path) {
        Ok(file) => file,
        // Unregistered since the directory was read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(CacheError::io(path)(e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(CacheError::io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_run_is_collected_and_a_dead_one_is_forgotten() {
        let results = tempfile::tempdir().unwrap();
        let cache = Cache::open(results.path()).unwrap();
        let run = register(&cache, ["a", "b"]).unwrap();
        let (collection, keys) = collect(&cache).unwrap();
        assert_eq!(keys, HashSet::from(["a".to_string(), "b".to_string()]));
        drop(collection);
        // A run that died without unregistering: its file stays, its lock is gone.
        let path = run.path.clone();
        let text = fs::read(&path).unwrap();
        drop(run);
        fs::write(&path, text).unwrap();
        let (_collection, keys) = collect(&cache).unwrap();
        assert!(keys.is_empty(), "{keys:?}");
        assert!(!path.exists(), "a dead run's registration is deleted");
    }

    #[test]
    fn a_run_waits_to_register_while_gc_collects() {
        let results = tempfile::tempdir().unwrap();
        let cache = Cache::open(results.path()).unwrap();
        let (collection, _) = collect(&cache).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = cache.clone();
        let runner = std::thread::spawn(move || {
            let run = register(&waiting, ["k"]).unwrap();
            tx.send(()).unwrap();
            run
        });
        let early = rx.recv_timeout(std::time::Duration::from_millis(200));
        assert!(early.is_err(), "registered during a collection");
        drop(collection);
        rx.recv().unwrap();
        let _run = runner.join().unwrap();
        assert_eq!(collect(&cache).unwrap().1.len(), 1);
    }
}
