//! From a pipeline file to a validated, keyed DAG of stages.

pub mod graph;
pub mod history;
pub mod key;
pub mod spec;

pub use graph::{Plan, StageNode};

use std::path::Path;

use crate::error::SpecError;

/// Reads, parses, overrides and validates a pipeline file.
pub fn load(path: &Path, overrides: &[String]) -> Result<Plan, SpecError> {
    let (spec, source) = spec::load(path, overrides)?;
    graph::build(path, &source, spec)
}
