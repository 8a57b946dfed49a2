//! Atomic cache entries: a stage writes into a temporary directory beside the cache and
//! the finished directory, manifest included, is renamed into place. No manifest, no
//! entry; a killed stage leaves only a temporary directory that is never read.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::lock::KeyLock;
use crate::error::CacheError;

/// Bumped when the layout of entries changes; part of every key.
pub const CACHE_FORMAT: u32 = 1;

const MANIFEST: &str = "manifest.json";

/// What an entry holds and how it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub key: String,
    pub kind: String,
    /// The stage id that computed it (entries are shared by equal stages).
    pub stage: String,
    pub params: serde_json::Value,
    /// Role -> keys of the input entries.
    pub inputs: BTreeMap<String, Vec<String>>,
    pub outputs: Vec<OutputFile>,
    pub seconds: f64,
    pub device: String,
    pub runner_version: String,
    pub stage_version: u32,
    pub cache_format: u32,
    pub created_unix: u64,
    /// When computing started and ended (milliseconds since the Unix epoch), so runs
    /// can be laid out on a timeline.
    #[serde(default)]
    pub started_unix_ms: u64,
    #[serde(default)]
    pub finished_unix_ms: u64,
}

/// One file of an entry, so `verify` can detect corruption.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Handle on `results/.cache`.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    /// Entries whose files this process has checked against their manifests, so an
    /// input read by a hundred stages of a sweep is hashed once.
    checked: Arc<Mutex<HashSet<String>>>,
}

/// What occupies an entry's place in the cache.
#[derive(Debug)]
pub enum Slot {
    Empty,
    /// A complete entry: a directory with a manifest that parses, names its key and
    /// lists its outputs.
    Entry(Box<Manifest>),
    /// Something that is not an entry (a stray file, a dangling symlink, a directory
    /// without a usable manifest): never read, replaced by the next commit, reported by
    /// `verify`.
    Broken(String),
}

impl Cache {
    /// Opens (creating if needed) the cache inside a results directory.
    pub fn open(results: &Path) -> Result<Cache, CacheError> {
        let root = results.join(".cache");
        fs::create_dir_all(root.join(".tmp")).map_err(CacheError::io(&root))?;
        fs::create_dir_all(root.join(".locks")).map_err(CacheError::io(&root))?;
        Ok(Cache::reading(results))
    }

    /// The cache inside a results directory, for reading only: nothing is created
    /// (what `plan` uses, so that planning writes nothing).
    pub fn reading(results: &Path) -> Cache {
        Cache {
            root: results.join(".cache"),
            checked: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// What is at `key`'s place.
    pub fn slot(&self, key: &str) -> Slot {
        let dir = self.entry_dir(key);
        let meta = match fs::symlink_metadata(&dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Slot::Empty,
            Err(e) => return Slot::Broken(format!("cannot be read: {e}")),
        };
        if meta.file_type().is_symlink() {
            match fs::metadata(&dir) {
                Ok(target) if target.is_dir() => {}
                Ok(_) => return Slot::Broken("a symlink to something not a directory".into()),
                Err(e) => {
                    let target = fs::read_link(&dir).unwrap_or_default();
                    return Slot::Broken(format!(
                        "a symlink to {}, which cannot be read ({e})",
                        target.display()
                    ));
                }
            }
        } else if !meta.is_dir() {
            return Slot::Broken("a file, not a directory".into());
        }
        let path = dir.join(MANIFEST);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Slot::Broken("no manifest.json: an incomplete entry".into());
            }
            Err(e) => return Slot::Broken(format!("manifest.json cannot be read: {e}")),
        };
        let manifest: Manifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => {
                return Slot::Broken(format!(
                    "manifest.json is malformed or truncated ({} bytes): {e}",
                    bytes.len()
                ));
            }
        };
        if manifest.key != key {
            return Slot::Broken(format!("manifest.json names key {}", manifest.key));
        }
        if manifest.outputs.is_empty() {
            return Slot::Broken("manifest.json lists no outputs".into());
        }
        Slot::Entry(Box::new(manifest))
    }

    /// The manifest of a complete entry, or None if the key is not cached.
    pub fn manifest(&self, key: &str) -> Result<Option<Manifest>, CacheError> {
        Ok(match self.slot(key) {
            Slot::Entry(m) => Some(*m),
            Slot::Empty | Slot::Broken(_) => None,
        })
    }

    pub fn is_cached(&self, key: &str) -> bool {
        matches!(self.slot(key), Slot::Entry(_))
    }

    /// What is wrong with `key`'s entry: files missing, of the wrong size or not
    /// matching their sha256, or not an entry at all. Empty for a sound entry.
    pub fn problems(&self, key: &str) -> Result<Vec<String>, CacheError> {
        Ok(self.check(key)?.1)
    }

    /// [`Cache::problems`] with the entry's manifest (when it has one that parses), so
    /// `verify` reads each manifest once.
    pub fn check(&self, key: &str) -> Result<(Option<Manifest>, Vec<String>), CacheError> {
        let manifest = match self.slot(key) {
            Slot::Entry(m) => *m,
            Slot::Empty => return Ok((None, vec!["not in the cache".into()])),
            Slot::Broken(why) => return Ok((None, vec![why])),
        };
        let dir = self.entry_dir(key);
        let mut problems = Vec::new();
        for out in &manifest.outputs {
            let path = dir.join(&out.path);
            let Ok(meta) = fs::metadata(&path) else {
                problems.push(format!("{} is missing", out.path));
                continue;
            };
            if meta.len() != out.size {
                problems.push(format!(
                    "{} has {} bytes, the manifest says {}",
                    out.path,
                    meta.len(),
                    out.size
                ));
            } else if sha256_file(&path)? != out.sha256 {
                problems.push(format!("{} does not match its sha256", out.path));
            }
        }
        Ok((Some(manifest), problems))
    }

    /// [`Cache::problems`], checked once per process for a sound entry: what a stage
    /// calls on each input before reading it, so damage is never computed from.
    pub fn problems_once(&self, key: &str) -> Result<Vec<String>, CacheError> {
        if self.checked.lock().expect("checked entries").contains(key) {
            return Ok(Vec::new());
        }
        let problems = self.problems(key)?;
        if problems.is_empty() {
            self.checked
                .lock()
                .expect("checked entries")
                .insert(key.to_string());
        }
        Ok(problems)
    }

    /// Blocks until this process may compute `key`.
    pub fn lock(&self, key: &str) -> Result<KeyLock, CacheError> {
        KeyLock::acquire(&self.root.join(".locks").join(key))
    }

    /// Non-blocking: the lock of `key` if no process holds it.
    pub fn try_lock(&self, key: &str) -> Result<Option<KeyLock>, CacheError> {
        KeyLock::try_acquire(&self.root.join(".locks").join(key))
    }

    /// A staging directory named after the key it computes, so `gc` can tell an
    /// abandoned one (its key unlocked) from one in use.
    pub fn staging_for(&self, key: &str) -> Result<tempfile::TempDir, CacheError> {
        let tmp = self.root.join(".tmp");
        tempfile::Builder::new()
            .prefix(&format!("{key}-"))
            .tempdir_in(&tmp)
            .map_err(CacheError::io(&tmp))
    }

    /// Where the stage computing `key` keeps checkpoints across interrupted runs; the
    /// name starts with the key so `gc` treats an abandoned one like any staging
    /// directory.
    pub fn checkpoints_for(&self, key: &str) -> PathBuf {
        self.root.join(".tmp").join(format!("{key}-checkpoints"))
    }

    /// Keys of everything in the cache named like an entry (complete or not, a
    /// directory or not: `verify` reports what is not an entry).
    pub fn keys(&self) -> Result<Vec<String>, CacheError> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(CacheError::io(&self.root))? {
            let entry = entry.map_err(CacheError::io(&self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_key(&name) {
                keys.push(name);
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Deletes an entry (or whatever is in its place): it is renamed out of place
    /// first, so it never looks complete while half-deleted. The caller holds the key's
    /// lock, which also guards the trash directory (named after the key, see `gc`).
    pub fn remove(&self, key: &str) -> Result<(), CacheError> {
        let target = self.entry_dir(key);
        let trash = self.staging_for(key)?.keep();
        fs::rename(&target, trash.join("old")).map_err(CacheError::io(&target))?;
        fs::remove_dir_all(&trash).map_err(CacheError::io(&trash))
    }

    /// Writes the manifest (with digests of every output) and renames the staging
    /// directory into place. With `replace`, an existing entry is swapped out; what is
    /// in the place but is not an entry always is.
    pub fn commit(
        &self,
        staging: tempfile::TempDir,
        mut manifest: Manifest,
        replace: bool,
    ) -> Result<(), CacheError> {
        let dir = staging.path().to_path_buf();
        manifest.outputs = describe_outputs(&dir)?;
        let json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
        let manifest_path = dir.join(MANIFEST);
        fs::write(&manifest_path, json).map_err(CacheError::io(&manifest_path))?;
        // On disk before the rename makes them an entry: after a power cut an entry
        // is whole or absent, never a manifest over empty files.
        for out in &manifest.outputs {
            sync(&dir.join(&out.path))?;
        }
        sync(&manifest_path)?;
        sync(&dir)?;
        let target = self.entry_dir(&manifest.key);
        let staged = staging.keep();
        match self.slot(&manifest.key) {
            Slot::Empty => {}
            Slot::Entry(_) if !replace => {
                // Another process committed the same key first; its bytes are equal.
                let _ = fs::remove_dir_all(&staged);
                return Ok(());
            }
            Slot::Entry(_) | Slot::Broken(_) => {
                let trash = self.staging_for(&manifest.key)?.keep();
                let old = trash.join("old");
                fs::rename(&target, &old).map_err(CacheError::io(&target))?;
                fs::rename(&staged, &target).map_err(CacheError::io(&target))?;
                let _ = fs::remove_dir_all(&trash);
                return sync(&self.root);
            }
        }
        match fs::rename(&staged, &target) {
            Ok(()) => sync(&self.root),
            // Another process renamed the same key into place since the look above:
            // only possible where the key lock does not reach it (an NFS mount without
            // locking, see README "Cluster"). Its bytes are equal; keep them.
            Err(_) if matches!(self.slot(&manifest.key), Slot::Entry(_)) => {
                let _ = fs::remove_dir_all(&staged);
                Ok(())
            }
            Err(e) => Err(CacheError::io(&target)(e)),
        }
    }
}

/// Flushes a file (or a directory's entries) to the disk.
fn sync(path: &Path) -> Result<(), CacheError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(CacheError::io(path))
}

/// Every file under `dir` (recursively, sorted) with its size and sha256.
pub fn describe_outputs(dir: &Path) -> Result<Vec<OutputFile>, CacheError> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    files
        .into_iter()
        .filter(|rel| rel != MANIFEST)
        .map(|rel| {
            let path = dir.join(&rel);
            let size = fs::metadata(&path).map_err(CacheError::io(&path))?.len();
            Ok(OutputFile {
                sha256: sha256_file(&path)?,
                path: rel,
                size,
            })
        })
        .collect()
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), CacheError> {
    for entry in fs::read_dir(dir).map_err(CacheError::io(dir))? {
        let entry = entry.map_err(CacheError::io(dir))?;
        let path = entry.path();
        if path.is_dir() {
            collect_files(base, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(base)
                .expect("inside base")
                .to_string_lossy()
                .replace('\\', "/");
            out.push(rel);
        }
    }
    Ok(())
}

/// Streams a file through sha256.
pub fn sha256_file(path: &Path) -> Result<String, CacheError> {
    let mut file = fs::File::open(path).map_err(CacheError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(CacheError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// A cache key: 64 lower-case hex digits.
pub fn is_key(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Total size of the files under `path`.
pub fn disk_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| disk_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, as manifests and run records keep times (0 for
/// a clock set before 1970).
pub fn unix_ms(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(key: &str) -> Manifest {
        Manifest {
            key: key.into(),
            kind: "dataset".into(),
            stage: "data".into(),
            params: serde_json::json!({}),
            inputs: BTreeMap::new(),
            outputs: vec![],
            seconds: 0.0,
            device: "cpu".into(),
            runner_version: "test".into(),
            stage_version: 1,
            cache_format: CACHE_FORMAT,
            created_unix: 0,
            started_unix_ms: 0,
            finished_unix_ms: 0,
        }
    }

    #[test]
    fn commit_is_atomic_and_lists_outputs() {
        let results = tempfile::tempdir().unwrap();
        let cache = Cache::open(results.path()).unwrap();
        let staging = cache.staging_for("k").unwrap();
        fs::write(staging.path().join("a.txt"), b"abc").unwrap();
        assert!(!cache.is_cached("k1"));
        cache.commit(staging, manifest("k1"), false).unwrap();
        let m = cache.manifest("k1").unwrap().unwrap();
        assert_eq!(m.outputs.len(), 1);
        assert_eq!(m.outputs[0].size, 3);
        assert_eq!(
            m.outputs[0].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Nothing is left in the staging area.
        assert_eq!(fs::read_dir(cache.root().join(".tmp")).unwrap().count(), 0);
    }

    /// Two processes whose key lock does not reach each other (nodes of a cluster on an
    /// NFS mount without locking) commit the same key at once: one entry results and
    /// neither fails, whichever renames first.
    #[test]
    fn concurrent_commits_of_one_key_without_its_lock_both_succeed() {
        let results = tempfile::tempdir().unwrap();
        let cache = Cache::open(results.path()).unwrap();
        for round in 0..100 {
            let key = format!("race{round}");
            let barrier = std::sync::Barrier::new(2);
            let outcomes: Vec<Result<(), CacheError>> = std::thread::scope(|scope| {
                let commit = || {
                    let staging = cache.staging_for(&key).unwrap();
                    fs::write(staging.path().join("a.txt"), b"abc").unwrap();
                    barrier.wait();
                    cache.commit(staging, manifest(&key), false)
                };
                let a = scope.spawn(commit);
                let b = scope.spawn(commit);
                vec![a.join().unwrap(), b.join().unwrap()]
            });
            for outcome in outcomes {
                outcome.unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
            assert!(cache.is_cached(&key));
        }
        assert_eq!(fs::read_dir(cache.root().join(".tmp")).unwrap().count(), 0);
    }

    #[test]
    fn an_uncommitted_directory_is_not_an_entry() {
        let results = tempfile::tempdir().unwrap();
        let cache = Cache::open(results.path()).unwrap();
        fs::create_dir_all(cache.entry_dir("k2")).unwrap();
        fs::write(cache.entry_dir("k2").join("half.bin"), b"x").unwrap();
        assert!(!cache.is_cached("k2"));
        assert!(cache.manifest("k2").unwrap().is_none());
    }

    #[test]
    fn replace_swaps_an_existing_entry() {
        let results = tempfile::tempdir().unwrap();
        let cache = Cache::open(results.path()).unwrap();
        for content in [&b"one"[..], b"two"] {
            let staging = cache.staging_for("k").unwrap();
            fs::write(staging.path().join("f"), content).unwrap();
            cache.commit(staging, manifest("k3"), true).unwrap();
        }
        assert_eq!(fs::read(cache.entry_dir("k3").join("f")).unwrap(), b"two");
    }
}
