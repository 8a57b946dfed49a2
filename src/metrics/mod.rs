//! Distances between sample sets, each validated against a closed form in its tests.

pub mod features;
pub mod mmd;
pub mod modes;
pub mod sliced_wasserstein;

use crate::choices::named_choices;

named_choices! {
    /// Metrics an evaluate stage can compute.
    pub enum Metric {
        /// Sliced 2-Wasserstein distance over random directions.
        SlicedWasserstein = "sliced_wasserstein",
        /// Unbiased squared MMD with an RBF kernel, bandwidth by the median heuristic.
        Mmd = "mmd",
        /// Fraction of samples per mixture component (needs a mixture reference).
        ModeWeights = "mode_weights",
        /// Of a model: mean squared error of its score against the reference mixture's
        /// exact score, per noise level.
        ScoreError = "score_error",
        /// Of a model: negative log-likelihood of held-out data through the
        /// probability-flow ODE, in nats and bits per dimension.
        Nll = "nll",
        /// Frechet distance in the classifier's feature space (needs a classifier).
        Fid = "fid",
        /// Kernel distance (cubic polynomial kernel) in the classifier's feature space.
        Kid = "kid",
        /// exp(E KL(p(y|x) || p(y))) with the classifier's class probabilities.
        InceptionScore = "inception_score",
        /// k-NN manifold precision and recall in the classifier's feature space.
        PrecisionRecall = "precision_recall",
    }
}

impl Metric {
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
