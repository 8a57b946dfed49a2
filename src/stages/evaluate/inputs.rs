//! What every evaluation of a stage shares: the held-out reference and the rows of
//! `metrics.csv` it fills.

use crate::stages::context::InputEntry;
use crate::data::toy::Mixture;
use crate::diffusion::process::Process;
use crate::error::{StageError, StageResult};
use crate::metrics::Points;
use crate::stages::dataset::DatasetMeta;

/// The long-format rows of `metrics.csv`: (evaluated stage, metric, value).
#[derive(Default)]
pub struct Rows {
    pub stages: Vec<String>,
    pub metrics: Vec<String>,
    pub values: Vec<f64>,
}

impl Rows {
    pub fn push(&mut self, stage: &str, metric: impl Into<String>, value: f64) {
        self.stages.push(stage.to_string());
        self.metrics.push(metric.into());
        self.values.push(value);
    }
}

/// The held-out split, as every evaluation sees it.
pub struct Reference<'a> {
    pub entry: &'a InputEntry,
    pub meta: DatasetMeta,
    pub test: Vec<f32>,
}

impl Reference<'_> {
    pub fn points(&self) -> Points<'_> {
        Points::new(&self.test, self.meta.dim)
    }

    pub fn mixture(&self, metric: &str) -> StageResult<&Mixture> {
        self.meta
            .mixture
            .as_ref()
            .ok_or_else(|| StageError::BadInput {
                path: self.entry.dir.join("meta.json"),
                message: format!("{metric} needs a Gaussian-mixture reference"),
            })
    }
}


/// The nearest level's time for a discrete process (its network only saw those).
pub fn snap(process: &Process, t: f64) -> f64 {
    match process.levels() {
        Some(n) => (1..=n)
            .map(|i| process.level_time(i))
            .min_by(|a, b| (a - t).abs().total_cmp(&(b - t).abs()))
            .unwrap_or(t),
        None => t.max(process.t_min()),
    }
}
