//! A per-key lock, so two processes never compute the same stage at once. Only
//! efficiency depends on it: correctness comes from the atomic rename of a complete
//! directory. `gc` deletes lock files nobody holds, so a locker checks, once it holds
//! the lock, that its file is still the one at the path.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::CacheError;

/// Held while a stage is computed; released when dropped (or when the process dies,
/// since it is an OS file lock).
pub struct KeyLock {
    _file: File,
}

impl KeyLock {
    /// Blocks until no other process holds the lock for this key.
    pub fn acquire(path: &Path) -> Result<KeyLock, CacheError> {
        loop {
            let file = open(path)?;
            file.lock().map_err(CacheError::io(path))?;
            if still_at(&file, path) {
                return Ok(KeyLock { _file: file });
            }
        }
    }

    /// The lock if nobody holds it, else None (for `gc`, which must not wait on, or
    /// delete under, a stage being computed).
    pub fn try_acquire(path: &Path) -> Result<Option<KeyLock>, CacheError> {
        loop {
            let file = open(path)?;
            match file.try_lock() {
                Ok(()) if still_at(&file, path) => return Ok(Some(KeyLock { _file: file })),
                Ok(()) => continue,
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(CacheError::Io {
                        path: path.to_path_buf(),
                        source: e,
                    });
                }
            }
        }
    }

    /// Deletes the lock file at `path` if nobody holds it (what `gc` does to lock
    /// files). The file is unlinked while locked: a process that opened it before sees,
    /// once it gets the lock, that the path is gone and opens a new file.
    pub fn remove_if_free(path: &Path) -> Result<bool, CacheError> {
        match KeyLock::try_acquire(path)? {
            Some(_held) => {
                std::fs::remove_file(path).map_err(CacheError::io(path))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Whether the locked file is still the one at `path` (not unlinked by `gc` while this
/// process waited for it).
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(now)) => held.ino() == now.ino() && held.dev() == now.dev(),
        _ => false,
    }
}

/// Elsewhere an open file cannot be deleted, so the file is always the one at the path.
#[cfg(not(unix))]
fn still_at(_: &File, _: &Path) -> bool {
    true
}

/// The lock file, created on first use and never truncated.
fn open(path: &Path) -> Result<File, CacheError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(CacheError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock file gc deleted while another process waited on it is not the lock:
    /// the waiter opens the new file, and a third process sees the waiter's lock.
    #[test]
    fn a_lock_on_a_deleted_file_is_retaken_on_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let stale = open(&path).unwrap();
        assert!(KeyLock::remove_if_free(&path).unwrap());
        assert!(!path.exists());
        // `stale` is what a process that opened the file before gc holds.
        stale.lock().unwrap();
        assert!(!still_at(&stale, &path));
        drop(stale);
        let held = KeyLock::acquire(&path).unwrap();
        assert!(KeyLock::try_acquire(&path).unwrap().is_none());
        assert!(!KeyLock::remove_if_free(&path).unwrap());
        drop(held);
        assert!(KeyLock::try_acquire(&path).unwrap().is_some());
    }
}
