//! What every evaluation of a stage shares: the held-out reference and the rows of
//! `metrics.csv` it fills.

use crate::stages::context::InputEntry;
use crate::data::toy::Mixture;
use crate::diffusion::process::Process;
use crate::error::{StageError, StageResult};
use crate::metrics::Points;
use crate::plot::density::{DensityPanel, histogram};
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
    /// The first `feature_points` training rows when the FID floor is asked for
    /// (empty otherwise), read with `test` so the data is read once.
    pub train_sample: Vec<f32>,
}

impl Reference<'_> {
    pub fn points(&self) -> Points<'_> {
        Points::new(&self.test, self.meta.dim)
    }

    /// The x range of 1D figures: the held-out data's, widened by a quarter each side.
    pub fn line_range(&self) -> (f64, f64) {
        let (lo, hi) = self.test.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v as f64), hi.max(*v as f64))
        });
        if !(hi > lo) {
            return (-1.0, 1.0);
        }
        let pad = (hi - lo) * 0.25;
        (lo - pad, hi + pad)
    }

    /// A 1D panel of `points` over the data's density: the exact one for a mixture,
    /// otherwise the held-out data's histogram as a line.
    pub fn density_panel<'p>(&self, caption: &str, points: &'p [f32]) -> DensityPanel<'p> {
        let range = self.line_range();
        let curve = match &self.meta.mixture {
            Some(m) => density_curve(m, range),
            None => {
                let bins = histogram(&self.test, range, 60);
                let half = (range.1 - range.0) / 120.0;
                bins.into_iter().map(|(x, d)| (x + half, d)).collect()
            }
        };
        DensityPanel {
            caption: caption.to_string(),
            points,
            curve: Some(curve),
        }
    }

    /// (radius, width) of a circle or sphere reference.
    pub fn shell(&self, metric: &str) -> StageResult<(f64, f64)> {
        self.meta.source.shell().ok_or_else(|| StageError::BadInput {
            path: self.entry.dir.join("meta.json"),
            message: format!("{metric} needs a circle or sphere reference"),
        })
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


/// A mixture's density at 200 points of `range`.
pub fn density_curve(mixture: &Mixture, range: (f64, f64)) -> Vec<(f64, f64)> {
    (0..=200)
        .map(|i| {
            let x = range.0 + (range.1 - range.0) * i as f64 / 200.0;
            (x, mixture.density(&[x]))
        })
        .collect()
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
