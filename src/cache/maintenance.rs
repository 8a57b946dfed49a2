//! Keeping the cache honest and small: `runner verify` re-hashes every entry against
//! its manifest, `runner gc` deletes what no pipeline and no live run reaches.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::time::{Duration, SystemTime};

use rayon::prelude::*;

use super::live;
use super::lock::KeyLock;
use super::store::{Cache, Slot, disk_size, is_key};
use crate::error::CacheError;

/// What is wrong with one entry.
#[derive(Debug, Clone)]
pub struct Damage {
    pub key: String,
    /// The stage that made it, when the manifest says.
    pub stage: Option<String>,
    pub problems: Vec<String>,
}

/// Checks every entry's files (existence, size, sha256) against its manifest, and
/// flags every entry built, directly or not, from a damaged one (its results came from
/// bad bytes too). Returns the damaged entries, damaged ones first, and how many
/// entries were checked.
pub fn verify(cache: &Cache) -> Result<(Vec<Damage>, usize), CacheError> {
    let keys = cache.keys()?;
    let checked = keys.len();
    let found = keys
        .par_iter()
        .map(|key| Ok((key.clone(), cache.check(key)?)))
        .collect::<Result<Vec<_>, CacheError>>()?;
    let mut damaged: Vec<Damage> = Vec::new();
    let mut bad: HashSet<String> = HashSet::new();
    let mut sound: BTreeMap<String, (Option<String>, Vec<String>)> = BTreeMap::new();
    for (key, (manifest, problems)) in found {
        let stage = manifest.as_ref().map(|m| m.stage.clone());
        if problems.is_empty() {
            let inputs = manifest
                .map(|m| m.inputs.into_values().flatten().collect())
                .unwrap_or_default();
            sound.insert(key, (stage, inputs));
        } else {
            bad.insert(key.clone());
            damaged.push(Damage {
                key,
                stage,
                problems,
            });
        }
    }
    // Dependents, to a fixed point: each pass moves the entries with a bad input.
    loop {
        let tainted: Vec<(String, String)> = sound
            .iter()
            .filter_map(|(key, (_, inputs))| {
                inputs
                    .iter()
                    .find(|i| bad.contains(*i))
                    .map(|i| (key.clone(), i.clone()))
            })
            .collect();
        if tainted.is_empty() {
            break;
        }
        for (key, input) in tainted {
            let (stage, _) = sound.remove(&key).expect("listed above");
            damaged.push(Damage {
                problems: vec![format!(
                    "built from damaged entry {}: its results cannot be trusted",
                    &input[..input.len().min(16)]
                )],
                key: key.clone(),
                stage,
            });
            bad.insert(key);
        }
    }
    Ok((damaged, checked))
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
    /// Entries kept only because a run in progress reaches them.
    pub live: usize,
    /// Lock files deleted (nobody held them; they are made again when needed).
    pub locks: usize,
}

/// Temporary directories not named after a key and older than this are abandoned.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Deletes every entry whose key is neither in `reachable` nor reached by a run in
/// progress, abandoned staging directories (a killed stage's, an interrupted
/// replacement's), the checkpoints of stages nothing reaches, and unheld lock files.
/// Entries being computed are left alone. Runs that start meanwhile wait for it.
pub fn gc(
    cache: &Cache,
    reachable: &HashSet<String>,
    dry_run: bool,
) -> Result<GcReport, CacheError> {
    let (_collection, live_keys) = live::collect(cache)?;
    let kept = |key: &str| reachable.contains(key) || live_keys.contains(key);
    let mut report = GcReport::default();
    for key in cache.keys()? {
        if kept(&key) {
            report.kept += 1;
            report.live += usize::from(!reachable.contains(&key));
            continue;
        }
        let Some(_lock) = cache.try_lock(&key)? else {
            report.busy.push(key);
            continue;
        };
        let what = match cache.slot(&key) {
            Slot::Entry(m) => format!("{} {}", m.kind, m.stage),
            Slot::Broken(why) => format!("not an entry: {why}"),
            Slot::Empty => continue,
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
        let checkpoints = key.is_some_and(|k| name == format!("{k}-checkpoints"));
        let _lock = match key {
            // A reachable stage's checkpoints are its progress: resumed next run.
            Some(key) if checkpoints && kept(key) => continue,
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
            what: if checkpoints {
                "checkpoints of a stage nothing reaches".into()
            } else {
                "abandoned staging directory".into()
            },
            bytes,
        });
    }
    if !dry_run {
        let locks = cache.root().join(".locks");
        for entry in fs::read_dir(&locks)
            .map_err(CacheError::io(&locks))?
            .flatten()
        {
            report.locks += usize::from(KeyLock::remove_if_free(&entry.path())?);
        }
    }
    Ok(report)
}
