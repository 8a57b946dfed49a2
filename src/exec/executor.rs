//! The seam between the DAG loop and where stages compute: the loop hands an executor
//! each stage whose inputs are committed and waits for outcomes; the executor decides
//! where and when the stage runs (threads of this process, jobs of a cluster).

use petgraph::graph::NodeIndex;

use crate::pipeline::StageNode;
use crate::stages::InputEntry;

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
    /// Not finished because the user interrupted the run (what it got to, if it ran).
    Cancelled(String),
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
            Status::Cancelled(_) => "cancelled",
        }
    }
}

/// A stage ready to compute: every input is committed to the cache.
pub struct Job<'p> {
    pub ix: NodeIndex,
    pub node: &'p StageNode,
    /// The committed entries of its inputs, by role.
    pub inputs: Vec<(String, Vec<InputEntry>)>,
    /// Recompute even when cached (`--force`).
    pub force: bool,
}

/// A stage the executor is done with.
#[derive(Debug)]
pub struct Finished {
    pub ix: NodeIndex,
    /// `Cached` when the entry existed (or another process committed it first).
    pub status: Status,
    /// Time spent computing it (0 when cached).
    pub seconds: f64,
    /// The cluster job that ran it, when one did.
    pub job: Option<JobRef>,
}

/// A cluster job that ran a stage: the user looks it up by id in the scheduler's
/// tools and reads its log (the report links it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobRef {
    /// The scheduler's id (`123`, or `123_4` for a task of an array).
    pub id: String,
    /// The worker's output.
    pub log: std::path::PathBuf,
}

/// Where stages compute. The DAG loop calls `submit` for each ready stage and `wait`
/// while any is running; correctness never depends on the executor, only on the
/// cache's atomic commit.
pub trait Executor<'p> {
    /// Starts a ready stage, or hands it back when the executor cannot take it now
    /// (the loop offers it again after the next completion). With nothing running,
    /// an executor must take the stage.
    fn submit(&mut self, job: Job<'p>) -> Result<(), Job<'p>>;

    /// Blocks until a submitted stage finishes.
    fn wait(&mut self) -> Finished;
}
