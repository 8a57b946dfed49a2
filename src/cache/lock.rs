//! A per-key lock, so two processes never compute the same stage at once. Only
//! efficiency depends on it: correctness comes from the atomic rename of a complete
//! directory.

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
        let file = open(path)?;
        file.lock().map_err(CacheError::io(path))?;
        Ok(KeyLock { _file: file })
    }

    /// The lock if nobody holds it, else None (for `gc`, which must not wait on, or
    /// delete under, a stage being computed).
    pub fn try_acquire(path: &Path) -> Result<Option<KeyLock>, CacheError> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(KeyLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(CacheError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }
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
