//! Content digests of the files a pipeline reads from the user (an image folder, IDX
//! files). They enter stage keys, so editing a file recomputes what read it. Each file's
//! digest is remembered by (path, size, modification time), so unchanged files are not
//! re-read on every plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::{hex, sha256_file};

/// What a remembered digest is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    size: u64,
    modified_ns: u128,
    sha256: String,
}

/// The process's memo, and the file it is kept in (none until `remember_in`).
static MEMO: Mutex<Option<(Option<PathBuf>, BTreeMap<String, Remembered>)>> = Mutex::new(None);

/// Keeps the memo in `file` (read now, rewritten when it grows), e.g.
/// `results/.cache/file-digests.json`.
pub fn remember_in(file: &Path) {
    let map = std::fs::read(file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    *MEMO.lock().expect("digest memo") = Some((Some(file.to_path_buf()), map));
}

/// One digest over the contents of `files`, named relative to `root` (so moving the
/// whole folder keeps the key).
pub fn digest_files(root: &Path, files: &[PathBuf]) -> Result<String, String> {
    let mut guard = MEMO.lock().expect("digest memo");
    let (store, memo) = guard.get_or_insert_with(|| (None, BTreeMap::new()));
    let mut changed = false;
    let mut hasher = Sha256::new();
    for file in files {
        let meta =
            std::fs::metadata(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = std::fs::canonicalize(file)
            .unwrap_or_else(|_| file.clone())
            .to_string_lossy()
            .into_owned();
        let sha256 = match memo.get(&name) {
            Some(r) if r.size == meta.len() && r.modified_ns == modified_ns => r.sha256.clone(),
            _ => {
                let sha256 = sha256_file(file).map_err(|e| e.to_string())?;
                memo.insert(
                    name,
                    Remembered {
                        size: meta.len(),
                        modified_ns,
                        sha256: sha256.clone(),
                    },
                );
                changed = true;
                sha256
            }
        };
        let relative = file.strip_prefix(root).unwrap_or(file);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(sha256.as_bytes());
        hasher.update([b'\n']);
    }
    if changed && let Some(path) = store {
        save(path, memo);
    }
    Ok(hex(&hasher.finalize()))
}

/// Writes the memo atomically; a failure only costs re-reading files next time.
fn save(path: &Path, memo: &BTreeMap<String, Remembered>) {
    // Only into a cache that exists: planning a pipeline never run creates nothing.
    let Some(dir) = path.parent().filter(|d| d.is_dir()) else {
        return;
    };
    let Ok(tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    if std::fs::write(tmp.path(), serde_json::to_vec(memo).unwrap_or_default()).is_ok() {
        let _ = tmp.persist(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_follows_contents_and_relative_names() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for dir in [a.path(), b.path()] {
            std::fs::write(dir.join("x.png"), b"one").unwrap();
        }
        let files = |d: &Path| vec![d.join("x.png")];
        let da = digest_files(a.path(), &files(a.path())).unwrap();
        assert_eq!(da, digest_files(b.path(), &files(b.path())).unwrap());
        // Same size, new contents and a new time: the digest changes.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(a.path().join("x.png"), b"two").unwrap();
        assert_ne!(da, digest_files(a.path(), &files(a.path())).unwrap());
    }

    #[test]
    fn memo_is_kept_in_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let memo = dir.path().join("memo.json");
        std::fs::write(dir.path().join("f"), b"data").unwrap();
        remember_in(&memo);
        digest_files(dir.path(), &[dir.path().join("f")]).unwrap();
        let text = std::fs::read_to_string(&memo).unwrap();
        assert!(text.contains(&hex(&Sha256::digest(b"data"))), "{text}");
        *MEMO.lock().unwrap() = None;
    }
}
