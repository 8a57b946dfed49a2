//! Distances between sample sets, each validated against a closed form in its tests.

pub mod features;
pub mod mmd;
pub mod modes;
pub mod sliced_wasserstein;

use serde::{Deserialize, Serialize};

/// Metrics an evaluate stage can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Sliced 2-Wasserstein distance over random directions.
    SlicedWasserstein,
    /// Unbiased squared MMD with an RBF kernel, bandwidth by the median heuristic.
    Mmd,
    /// Fraction of samples per mixture component (needs a mixture reference).
    ModeWeights,
    /// Of a model: mean squared error of its score against the reference mixture's
    /// exact score, per noise level.
    ScoreError,
    /// Of a model: negative log-likelihood of held-out data through the
    /// probability-flow ODE, in nats and bits per dimension.
    Nll,
    /// Frechet distance in the classifier's feature space (needs a classifier).
    Fid,
    /// Kernel distance (cubic polynomial kernel) in the classifier's feature space.
    Kid,
    /// exp(E KL(p(y|x) || p(y))) with the classifier's class probabilities.
    InceptionScore,
    /// k-NN manifold precision and recall in the classifier's feature space.
    PrecisionRecall,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::SlicedWasserstein,
        Metric::Mmd,
        Metric::ModeWeights,
        Metric::ScoreError,
        Metric::Nll,
        Metric::Fid,
        Metric::Kid,
        Metric::InceptionScore,
        Metric::PrecisionRecall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::SlicedWasserstein => "sliced_wasserstein",
            Metric::Mmd => "mmd",
            Metric::ModeWeights => "mode_weights",
            Metric::ScoreError => "score_error",
            Metric::Nll => "nll",
            Metric::Fid => "fid",
            Metric::Kid => "kid",
            Metric::InceptionScore => "inception_score",
            Metric::PrecisionRecall => "precision_recall",
        }
    }

    /// Whether the metric works in a classifier's feature space.
    pub fn needs_classifier(self) -> bool {
        matches!(
            self,
            Metric::Fid | Metric::Kid | Metric::InceptionScore | Metric::PrecisionRecall
        )
    }

    /// Whether the metric judges a model (its score) rather than a sample set.
    pub fn of_models(self) -> bool {
        matches!(self, Metric::ScoreError | Metric::Nll)
    }
}

/// A point set: row-major coordinates with `dim` columns.
#[derive(Debug, Clone, Copy)]
pub struct Points<'a> {
    pub data: &'a [f32],
    pub dim: usize,
}

impl<'a> Points<'a> {
    pub fn new(data: &'a [f32], dim: usize) -> Points<'a> {
        Points { data, dim }
    }
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}
