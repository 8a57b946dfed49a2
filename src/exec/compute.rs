//! Computing one stage into the cache, the same for every executor: take its lock,
//! write into a staging directory, record the manifest and commit by rename.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use candle_core::Device;

use super::executor::Status;
use crate::cache::store::unix_ms;
use crate::cache::{Cache, Manifest};
use crate::error::{StageError, StageResult};
use crate::pipeline::graph::too_big;
use crate::pipeline::{Plan, StageNode};
use crate::progress::Progress;
use crate::stages::{InputEntry, StageContext};

/// The committed entries of a node's inputs, by role.
pub fn input_entries(
    plan: &Plan,
    cache: &Cache,
    node: &StageNode,
) -> Vec<(String, Vec<InputEntry>)> {
    node.needs
        .iter()
        .map(|(role, inputs)| {
            let entries = inputs
                .iter()
                .map(|&ix| {
                    let input = &plan.graph[ix];
                    InputEntry {
                        id: input.id.clone(),
                        dir: cache.entry_dir(&input.key),
                        key: input.key.clone(),
                    }
                })
                .collect();
            (role.clone(), entries)
        })
        .collect()
}

/// Computes one stage unless it is cached (or another process computes it first).
pub fn compute(
    node: &StageNode,
    inputs: Vec<(String, Vec<InputEntry>)>,
    cache: &Cache,
    force: bool,
    progress: &Progress,
    device: &Device,
) -> StageResult<Status> {
    if !force && cache.is_cached(&node.key) {
        return Ok(Status::Cached);
    }
    let _lock = cache.lock(&node.key)?;
    if !force && cache.is_cached(&node.key) {
        return Ok(Status::Cached);
    }
    check_inputs(&inputs, cache)?;
    // Planning checked the machine's memory; what is free now may be less (other
    // stages, other programs), and an allocation that fails ends the whole process.
    if let Some(message) = too_big(
        &node.cost,
        crate::machine::memory_available(),
        "the free memory is",
    ) {
        return Err(StageError::Failed(message));
    }
    let staging = cache.staging_for(&node.key)?;
    let bar = progress.stage(&node.name());
    let started = Instant::now();
    let started_at = SystemTime::now();
    let input_keys = inputs
        .iter()
        .map(|(role, entries)| {
            (
                role.clone(),
                entries.iter().map(|e| e.key.clone()).collect(),
            )
        })
        .collect();
    let ctx = StageContext {
        id: &node.id,
        out: staging.path(),
        inputs,
        progress: &bar,
        device,
        checkpoints: cache.checkpoints_for(&node.key),
    };
    let result = node.spec.params.run(&ctx);
    bar.finish();
    result?;
    let manifest = Manifest {
        key: node.key.clone(),
        kind: node.kind().name().into(),
        stage: node.id.clone(),
        params: node.params.clone(),
        inputs: input_keys,
        outputs: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
        device: super::device::name(device),
        runner_version: env!("CARGO_PKG_VERSION").into(),
        stage_version: node.kind().version(),
        cache_format: crate::cache::store::CACHE_FORMAT,
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        started_unix_ms: unix_ms(started_at),
        finished_unix_ms: unix_ms(SystemTime::now()),
    };
    cache
        .commit(staging, manifest, force)
        .map_err(StageError::from)?;
    // Committed: an interrupted run's checkpoints are no longer needed.
    let _ = std::fs::remove_dir_all(cache.checkpoints_for(&node.key));
    Ok(Status::Computed)
}

/// Fails the stage when an input's files do not match their manifest: results computed
/// from damaged bytes would be cached as if sound (and `verify` could not tell them).
fn check_inputs(inputs: &[(String, Vec<InputEntry>)], cache: &Cache) -> StageResult<()> {
    let mut damaged = Vec::new();
    for entry in inputs.iter().flat_map(|(_, entries)| entries) {
        let problems = cache.problems_once(&entry.key)?;
        if !problems.is_empty() {
            damaged.push(format!(
                "input `{}` (cache entry {}) is damaged: {}",
                entry.id,
                &entry.key[..entry.key.len().min(16)],
                problems.join("; ")
            ));
        }
    }
    if damaged.is_empty() {
        return Ok(());
    }
    Err(StageError::Failed(format!(
        "{}; `runner verify --remove` deletes the damage and what was built from it, so the next run recomputes them",
        damaged.join("; ")
    )))
}
