//! What a running stage gets: where to write, its committed inputs, progress and the
//! device; the same whichever executor runs it.

use std::path::PathBuf;

use candle_core::Device;
use serde::de::DeserializeOwned;

use crate::error::{StageError, StageResult};
use crate::progress::StageProgress;

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
            crate::artifacts::read_json(&self.dir.join("manifest.json"))?;
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
