//! One module per stage kind: its parameters, its checks and its `run`.

pub mod artifacts;
pub mod checkpoint;
pub mod classifier;
pub mod dataset;
pub mod evaluate;
pub mod model;
pub mod sample;
pub mod schedule;
pub mod train;

use std::path::PathBuf;

use candle_core::Device;
use serde::de::DeserializeOwned;

use crate::error::{StageError, StageResult};
use crate::exec::progress::StageProgress;
use crate::pipeline::spec::{StageKind, StageSpec};

/// A committed input entry, as a stage sees it.
#[derive(Debug, Clone)]
pub struct InputEntry {
    pub id: String,
    /// The input's cache key (recorded in this stage's manifest).
    pub key: String,
    pub dir: PathBuf,
}

impl InputEntry {
    /// The resolved parameters the input was computed with (from its manifest).
    pub fn params<T: DeserializeOwned>(&self) -> StageResult<T> {
        let manifest: crate::cache::Manifest =
            artifacts::read_json(&self.dir.join("manifest.json"))?;
        serde_json::from_value(manifest.params).map_err(|e| StageError::BadInput {
            path: self.dir.join("manifest.json"),
            message: format!(
                "parameters of `{}` do not match this runner version: {e}",
                self.id
            ),
        })
    }
}

/// What a running stage gets: where to write, its inputs, progress, device.
pub struct StageContext<'a> {
    pub id: &'a str,
    pub out: &'a std::path::Path,
    pub inputs: Vec<(String, Vec<InputEntry>)>,
    pub progress: &'a StageProgress,
    pub device: &'a Device,
    /// A directory that survives an interrupted run of this key (and is removed once
    /// the stage is committed): long stages keep checkpoints there to resume from.
    pub checkpoints: PathBuf,
}

impl StageContext<'_> {
    /// All inputs of a role.
    pub fn inputs(&self, role: &str) -> &[InputEntry] {
        self.inputs
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    /// The single input of a role (roles are checked when the graph is built).
    pub fn input(&self, role: &str) -> StageResult<&InputEntry> {
        self.inputs(role)
            .first()
            .ok_or_else(|| StageError::Failed(format!("missing input `{role}`")))
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.out.join(file)
    }
}

/// Implementation version of each kind: bump it when a stage's output changes for the
/// same parameters, so old cache entries are no longer used.
pub fn version(kind: StageKind) -> u32 {
    match kind {
        StageKind::Dataset => dataset::VERSION,
        StageKind::Schedule => schedule::VERSION,
        StageKind::Model => model::VERSION,
        StageKind::Train => train::VERSION,
        StageKind::Sample => sample::VERSION,
        StageKind::Classifier => classifier::VERSION,
        StageKind::Evaluate => evaluate::VERSION,
    }
}

/// Checks a stage's parameters against themselves and its inputs (`inputs(role)`
/// gives the specs of the stages a role names, `lookup` any stage by id).
pub fn validate<'s>(
    spec: &StageSpec,
    inputs: &dyn Fn(&str) -> Vec<&'s StageSpec>,
    lookup: &dyn Fn(&str) -> Option<&'s StageSpec>,
) -> Result<(), String> {
    match spec {
        StageSpec::Dataset { params } => params.validate(),
        StageSpec::Schedule { params } => params.validate(),
        StageSpec::Model { params } => params.validate(),
        StageSpec::Train { params, .. } => params.validate(
            inputs("schedule").first().copied(),
            inputs("model").first().copied(),
        ),
        StageSpec::Sample { params, needs } => params.validate(lookup(&needs.train), lookup),
        StageSpec::Classifier { params, .. } => params.validate(),
        StageSpec::Evaluate { params, .. } => params.validate(
            inputs("reference").first().copied(),
            &inputs("samples"),
            &inputs("models"),
            inputs("classifier").first().copied(),
        ),
    }
}

/// Runs a stage, writing its outputs into `ctx.out`.
pub fn run(spec: &StageSpec, ctx: &StageContext) -> StageResult<()> {
    match spec {
        StageSpec::Dataset { params } => dataset::run(params, ctx),
        StageSpec::Schedule { params } => schedule::run(params, ctx),
        StageSpec::Model { params } => model::run(params, ctx),
        StageSpec::Train { params, .. } => train::run(params, ctx),
        StageSpec::Sample { params, .. } => sample::run(params, ctx),
        StageSpec::Classifier { params, .. } => classifier::run(params, ctx),
        StageSpec::Evaluate { params, .. } => evaluate::run(params, ctx),
    }
}
