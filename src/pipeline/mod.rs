//! From a pipeline file to a validated, keyed DAG of stages.

pub mod cluster;
pub mod expect;
pub mod graph;
pub mod history;
pub mod key;
pub mod locate;
pub mod report_spec;
pub mod spec;
pub mod sweep;

pub use graph::{Plan, StageNode};

use std::path::Path;

use crate::error::SpecError;

/// Reads, parses, overrides, expands and validates a pipeline file: `overrides` are
/// `--set PATH=VALUE`, `sweeps` are `--sweep PATH=V1,V2`.
pub fn load(
    path: &Path,
    profile: Option<&str>,
    overrides: &[String],
    sweeps: &[String],
) -> Result<Plan, SpecError> {
    graph::build(path, spec::load(path, profile, overrides, sweeps)?)
}
