//! Keeping the cache honest and small: `runner verify` re-hashes every entry against
//! its manifest, `runner gc` deletes what no pipeline reaches any more.

use std::collections::HashSet;
use std::fs;
use std::time::{Duration, SystemTime};

use rayon::prelude::*;

use super::store::{Cache, disk_size, is_key, sha256_file};
use crate::error::CacheError;

/// What is wrong with one entry.
#[derive(Debug, Clone)]
pub struct Damage {
    pub key: String,
    /// The stage that made it, when the manifest says.
    pub stage: Option<String>,
    pub problems: Vec<String>,
}

/// Checks every entry's files (existence, size, sha256) against its manifest; returns
/// the damaged entries and how many entries were checked.
pub fn verify(cache: &Cache) -> Result<(Vec<Damage>, usize), CacheError> {
    let keys = cache.keys()?;
    let checked = keys.len();
    let damaged = keys
        .par_iter()
        .map(|key| check_entry(cache, key))
        .filter_map(|d| match d {
            Ok(d) if d.problems.is_empty() => None,
            other => Some(other),
        })
        .collect::<Result<Vec<Damage>, CacheError>>()?;
    Ok((damaged, checked))
}

fn check_entry(cache: &Cache, key: &str) -> Result<Damage, CacheError> {
    let mut damage = Damage {
        key: key.to_string(),
        stage: None,
        problems: Vec::new(),
    };
    let manifest = match cache.manifest(key) {
        Ok(Some(m)) => m,
        Ok(None) => {
            damage
                .problems
                .push("no manifest.json: an incomplete entry that is never read".into());
            return Ok(damage);
        }
        Err(e) => {
            damage.problems.push(e.to_string());
            return Ok(damage);
        }
    };
    damage.stage = Some(manifest.stage.clone());
    if manifest.key != key {
        damage
            .problems
            .push(format!("manifest names key {}", manifest.key));
    }
    let dir = cache.entry_dir(key);
    for out in &manifest.outputs {
        let path = dir.join(&out.path);
        let Ok(meta) = fs::metadata(&path) else {
            damage.problems.push(format!("{} is missing", out.path));
            continue;
        };
        if meta.len() != out.size {
            damage.problems.push(format!(
                "{} has {} bytes, the manifest says {}",
                out.path,
                meta.len(),
                out.size
            ));
            continue;
        }
        if sha256_file(&path)? != out.sha256 {
            damage
                .problems
                .push(format!("{} does not match its sha256", out.path));
        }
    }
    Ok(damage)
}

/// One thing `gc` deleted (or would delete).
#[derive(Debug, Clone)]
pub struct Freed {
    pub name: String,
    /// "kind stage" from the manifest, or what the directory is.
    pub what: String,
    pub bytes: u64,
}

/// What `gc` did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub freed: Vec<Freed>,
    pub kept: usize,
    /// Unreachable entries skipped because a process is computing them.
    pub busy: Vec<String>,
}

/// Temporary directories whose key nobody holds, or older than this, are abandoned.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Deletes every entry whose key is not in `reachable`, and abandoned staging
/// directories (a killed stage's). Entries being computed are left alone.
pub fn gc(
    cache: &Cache,
    reachable: &HashSet<String>,
    dry_run: bool,
) -> Result<GcReport, CacheError> {
    let mut report = GcReport::default();
    for key in cache.keys()? {
        if reachable.contains(&key) {
            report.kept += 1;
            continue;
        }
        let Some(_lock) = cache.try_lock(&key)? else {
            report.busy.push(key);
            continue;
        };
        let what = match cache.manifest(&key) {
            Ok(Some(m)) => format!("{} {}", m.kind, m.stage),
            _ => "incomplete entry".into(),
        };
        let bytes = disk_size(&cache.entry_dir(&key));
        if !dry_run {
            cache.remove(&key)?;
        }
        report.freed.push(Freed {
            name: key,
            what,
            bytes,
        });
    }
    let tmp = cache.root().join(".tmp");
    for entry in fs::read_dir(&tmp).map_err(CacheError::io(&tmp))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let key = name.get(..64).filter(|k| is_key(k));
        let _lock = match key {
            Some(key) => match cache.try_lock(key)? {
                Some(lock) => lock,
                None => continue,
            },
            None => {
                let age = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_none_or(|a| a < STALE_TMP) {
                    continue;
                }
                match cache.try_lock("gc-trash")? {
                    Some(lock) => lock,
                    None => continue,
                }
            }
        };
        let bytes = disk_size(&entry.path());
        if !dry_run {
            fs::remove_dir_all(entry.path()).map_err(CacheError::io(entry.path()))?;
        }
        report.freed.push(Freed {
            name: format!(".tmp/{name}"),
            what: "abandoned staging directory".into(),
            bytes,
        });
    }
    Ok(report)
}
