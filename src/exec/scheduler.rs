//! Runs the stages of a plan in dependency order, independent ones concurrently on a
//! bounded rayon pool. A failing stage fails only itself and its dependents.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use candle_core::Device;
use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::progress::Progress;
use crate::cache::{Cache, Manifest};
use crate::error::{StageError, StageResult};
use crate::pipeline::graph::{Plan, StageNode};
use crate::stages::{InputEntry, StageContext, StageKind};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Concurrent stages at most.
    pub jobs: usize,
    /// Stage ids to recompute even when cached.
    pub force: Vec<String>,
    /// Where stages compute (see [`super::device`]).
    pub device: Device,
}

/// What happened to a stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Cached,
    Computed,
    Failed(String),
    /// Not run because an input failed or was skipped (names that input).
    Skipped(String),
    /// Not in the cache and not run (`runner report` builds from the cache only).
    Missing,
}

impl Status {
    pub fn ok(&self) -> bool {
        matches!(self, Status::Cached | Status::Computed)
    }

    pub fn label(&self) -> &'static str {
        match self {
            Status::Cached => "cached",
            Status::Computed => "computed",
            Status::Failed(_) => "failed",
            Status::Skipped(_) => "skipped",
            Status::Missing => "missing",
        }
    }
}

/// A stage's result in this run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub node: NodeIndex,
    /// The node's name: stage id, with its sweep label when forked.
    pub name: String,
    pub status: Status,
    /// Time this run spent on the stage (0 when cached).
    pub seconds: f64,
}

/// What the cache holds for every stage, without running anything (for `runner report`).
pub fn from_cache(plan: &Plan, cache: &Cache) -> Vec<Outcome> {
    plan.order
        .iter()
        .map(|&ix| {
            let node = &plan.graph[ix];
            let status = if cache.is_cached(&node.key) {
                Status::Cached
            } else {
                Status::Missing
            };
            Outcome {
                node: ix,
                name: node.name(),
                status,
                seconds: 0.0,
            }
        })
        .collect()
}

/// Runs every stage of the plan that is not cached; returns outcomes in plan order.
///
/// Each stage runs on its own thread, at most `jobs` at once, while the tensor code
/// inside stages shares rayon's global pool. (Stages are not rayon tasks: a worker
/// waiting inside a parallel matmul may pick up queued tasks, and a stage picked up
/// that way while another holds a cache lock can deadlock two processes.) Stages that
/// use every core ([`crate::pipeline::spec::StageKind::uses_all_cores`]) run one at a
/// time; lighter ones fill the other slots.
pub fn execute(
    plan: &Plan,
    cache: &Cache,
    options: &RunOptions,
    progress: &Progress,
) -> Vec<Outcome> {
    let jobs = options.jobs.max(1);
    let graph = &plan.graph;
    let position: HashMap<NodeIndex, usize> = plan
        .order
        .iter()
        .enumerate()
        .map(|(i, &ix)| (ix, i))
        .collect();
    let mut waiting: HashMap<NodeIndex, usize> = plan
        .order
        .iter()
        .map(|&ix| {
            (
                ix,
                graph.neighbors_directed(ix, Direction::Incoming).count(),
            )
        })
        .collect();
    let mut results: HashMap<NodeIndex, Outcome> = HashMap::new();
    let (tx, rx) = mpsc::channel::<(NodeIndex, Outcome)>();

    std::thread::scope(|scope| {
        // Ready stages in plan order.
        let mut ready: Vec<NodeIndex> = plan
            .order
            .iter()
            .copied()
            .filter(|ix| waiting[ix] == 0)
            .collect();
        let mut running = 0usize;
        let mut heavy_running: Option<NodeIndex> = None;
        // Whether a ready stage needs the whole machine, decided once (held stages are
        // looked at again after every completion; the cache check is a file lookup).
        let mut heavy_of: HashMap<NodeIndex, bool> = HashMap::new();
        loop {
            let mut held = Vec::new();
            for ix in std::mem::take(&mut ready) {
                let node = &graph[ix];
                // An input that did not succeed means this stage cannot run.
                let blocked = graph
                    .neighbors_directed(ix, Direction::Incoming)
                    .find(|i| !results[i].status.ok())
                    .map(|i| graph[i].name());
                if let Some(input) = blocked {
                    progress.println(&format!(
                        "- {:<20} skipped: input `{input}` did not complete",
                        node.name()
                    ));
                    let outcome = Outcome {
                        node: ix,
                        name: node.name(),
                        status: Status::Skipped(input),
                        seconds: 0.0,
                    };
                    results.insert(ix, outcome);
                    release(plan, ix, &mut waiting, &mut held);
                    continue;
                }
                let force = options.force.contains(&node.id);
                let heavy = *heavy_of.entry(ix).or_insert_with(|| {
                    jobs > 1
                        && uses_all_cores(node.kind())
                        && (force || !cache.is_cached(&node.key))
                });
                if running >= jobs || (heavy && heavy_running.is_some()) {
                    held.push(ix);
                    continue;
                }
                if heavy {
                    heavy_running = Some(ix);
                }
                let inputs = input_entries(plan, cache, node);
                let tx = tx.clone();
                running += 1;
                std::thread::Builder::new()
                    .name(format!("stage {}", node.id))
                    .spawn_scoped(scope, move || {
                        let started = Instant::now();
                        let status = match catch_unwind(AssertUnwindSafe(|| {
                            run_one(node, inputs, cache, force, progress, &options.device)
                        })) {
                            Ok(Ok(status)) => status,
                            Ok(Err(e)) => Status::Failed(e.to_string()),
                            Err(panic) => {
                                Status::Failed(format!("internal error: {}", panic_message(&panic)))
                            }
                        };
                        let seconds = if status == Status::Computed {
                            started.elapsed().as_secs_f64()
                        } else {
                            0.0
                        };
                        let _ = tx.send((
                            ix,
                            Outcome {
                                node: ix,
                                name: node.name(),
                                status,
                                seconds,
                            },
                        ));
                    })
                    .expect("the OS starts a thread");
            }
            held.sort_by_key(|ix| position[ix]);
            ready = held;
            if running == 0 {
                if ready.is_empty() {
                    break;
                }
                continue;
            }
            let (ix, outcome) = rx.recv().expect("a running stage always reports");
            running -= 1;
            if heavy_running == Some(ix) {
                heavy_running = None;
            }
            let node = &graph[ix];
            match &outcome.status {
                Status::Cached => progress.println(&format!(
                    "  {:<20} cached ({})",
                    outcome.name,
                    &node.key[..12]
                )),
                Status::Computed => progress.println(&format!(
                    "  {:<20} computed in {:.1}s ({})",
                    outcome.name,
                    outcome.seconds,
                    &node.key[..12]
                )),
                Status::Failed(message) => {
                    progress.println(&format!("x {:<20} FAILED: {message}", outcome.name))
                }
                Status::Skipped(_) | Status::Missing => {}
            }
            results.insert(ix, outcome);
            release(plan, ix, &mut waiting, &mut ready);
            ready.sort_by_key(|ix| position[ix]);
        }
    });
    plan.order
        .iter()
        .map(|ix| results.remove(ix).expect("every stage has an outcome"))
        .collect()
}

/// Marks `ix` done for its dependents and queues the ones with no inputs left.
fn release(
    plan: &Plan,
    ix: NodeIndex,
    waiting: &mut HashMap<NodeIndex, usize>,
    ready: &mut Vec<NodeIndex>,
) {
    for next in plan.graph.neighbors_directed(ix, Direction::Outgoing) {
        let left = waiting.get_mut(&next).expect("every node is counted");
        *left -= 1;
        if *left == 0 {
            ready.push(next);
        }
    }
}

fn input_entries(plan: &Plan, cache: &Cache, node: &StageNode) -> Vec<(String, Vec<InputEntry>)> {
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
fn run_one(
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

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a stage panicked".into())
}

/// Stages that keep every core busy on their own (training, sampling): the
/// scheduler runs one of them at a time so they do not oversubscribe the machine.
/// On a GPU too: three U-Net trainings sharing an H100 ran at 156 img/s each,
/// one alone at 740 img/s (candle's CUDA path is bound by kernel launches).
fn uses_all_cores(kind: StageKind) -> bool {
    matches!(kind, StageKind::Train | StageKind::Sample)
}
