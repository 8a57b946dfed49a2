//! One stage of a planned pipeline, computed by a process of its own: what `runner
//! worker` does, so that an executor can run a stage on any machine that sees the
//! cache. The driver plans, the worker plans the same file (same profile, overrides
//! and sweeps) and finds the stage by its key; both agree because keys are content
//! hashes. The worker takes the stage's lock, computes, commits and exits with a
//! code the driver reads ([`exit_code`]).

use candle_core::Device;

use super::compute::{compute, input_entries};
use super::executor::Status;
use crate::cache::Cache;
use crate::error::RunnerError;
use crate::pipeline::Plan;
use crate::progress::Progress;

/// Exit codes of `runner worker`, as a driver reads them.
pub mod exit_code {
    /// The stage is in the cache: computed now, or already there.
    pub const DONE: u8 = 0;
    /// The stage failed; stderr says why.
    pub const FAILED: u8 = 1;
    /// The command line or the pipeline file is invalid.
    pub const INVALID: u8 = 2;
    /// No stage of the plan has the key, or an input is not in the cache.
    pub const NOT_RUNNABLE: u8 = 3;
}

/// Computes the stage of `plan` whose key is `key` (its inputs must be committed).
/// Returns `Computed`, or `Cached` when the entry existed or another process
/// committed it first.
pub fn work(
    plan: &Plan,
    cache: &Cache,
    key: &str,
    force: bool,
    progress: &Progress,
    device: &Device,
) -> Result<Status, RunnerError> {
    let node = plan.nodes().find(|n| n.key == key).ok_or_else(|| {
        RunnerError::NotRunnable(format!(
            "no stage of pipeline `{}` has key {key}; `runner plan` with the same file, profile, --set and --sweep lists the keys",
            plan.name
        ))
    })?;
    // Already there: nothing to compute, whatever became of its inputs since.
    if !force && cache.is_cached(&node.key) {
        return Ok(Status::Cached);
    }
    let missing: Vec<String> = node
        .needs
        .iter()
        .flat_map(|(_, inputs)| inputs)
        .map(|&ix| &plan.graph[ix])
        .filter(|input| !cache.is_cached(&input.key))
        .map(|input| format!("{} ({})", input.name(), &input.key[..12]))
        .collect();
    if !missing.is_empty() {
        return Err(RunnerError::NotRunnable(format!(
            "stage {} cannot run yet: its inputs {} are not in the cache",
            node.name(),
            missing.join(", ")
        )));
    }
    let inputs = input_entries(plan, cache, node);
    compute(node, inputs, cache, force, progress, device).map_err(|e| RunnerError::StageFailed {
        stage: node.name(),
        message: e.to_string(),
    })
}
