//! Distances between sample sets, each validated against a closed form in its tests.

pub mod features;
pub mod mmd;
pub mod modes;
pub mod shell;
pub mod sliced_wasserstein;

use crate::choices::named_choices;

/// What a metric judges, which decides the inputs an evaluate stage must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judges {
    /// Sample sets against the held-out data, in data space.
    Samples,
    /// Sample sets in a classifier's feature space (needs `needs.classifier`).
    Features,
    /// Models, through their scores (needs `needs.models`).
    Models,
}

/// A metric's row of the table.
#[derive(Debug)]
pub struct About {
    pub judges: Judges,
    /// The `metric` values it writes to `metrics.csv`; a name ending in `*` stands for
    /// a family of them (`mode_weight_<k>`, `score_mse_t<t>`).
    pub columns: &'static [&'static str],
}

named_choices! {
    /// Metrics an evaluate stage can compute.
    pub enum Metric: About {
        /// Sliced 2-Wasserstein distance over random directions.
        SlicedWasserstein = "sliced_wasserstein" => About { judges: Judges::Samples, columns: &["sliced_wasserstein"] },
        /// Unbiased squared MMD with an RBF kernel, bandwidth by the median heuristic.
        Mmd = "mmd" => About { judges: Judges::Samples, columns: &["mmd2"] },
        /// Fraction of samples per mixture component (needs a mixture reference).
        ModeWeights = "mode_weights" => About { judges: Judges::Samples, columns: &["mode_weight_tv", "mode_weight_*"] },
        /// Fraction of samples farther than 3 widths from the shell (needs a circle or
        /// sphere reference): the thesis's particles that deviate from the ring.
        ShellOutliers = "shell_outliers" => About { judges: Judges::Samples, columns: &["outlier_fraction"] },
        /// Of a model: mean squared error of its score against the reference mixture's
        /// exact score, per noise level.
        /// `score_mse_t<t>` is named by the time asked for (`score_times`), and
        /// `score_sigma_t<t>` is the noise std of the level measured there.
        ScoreError = "score_error" => About { judges: Judges::Models, columns: &["eps_mse", "score_mse_t*", "score_sigma_t*"] },
        /// Of a model: negative log-likelihood of held-out data through the
        /// probability-flow ODE, in nats and bits per dimension.
        Nll = "nll" => About { judges: Judges::Models, columns: &["nll", "bits_per_dim", "nll_nfe"] },
        /// Frechet distance in the classifier's feature space (needs a classifier).
        Fid = "fid" => About { judges: Judges::Features, columns: &["fid"] },
        /// Kernel distance (cubic polynomial kernel) in the classifier's feature space.
        Kid = "kid" => About { judges: Judges::Features, columns: &["kid", "kid_std"] },
        /// exp(E KL(p(y|x) || p(y))) with the classifier's class probabilities.
        InceptionScore = "inception_score" => About { judges: Judges::Features, columns: &["inception_score"] },
        /// k-NN manifold precision and recall in the classifier's feature space.
        PrecisionRecall = "precision_recall" => About { judges: Judges::Features, columns: &["precision", "recall"] },
        /// The classifier's mean top-class probability over the samples (1: every sample
        /// is confidently some class; 1/classes: noise).
        Confidence = "confidence" => About { judges: Judges::Features, columns: &["confidence"] },
        /// Fraction of the samples classified as each class (`class_fraction_<k>`), and
        /// the smallest and largest of them: a dropped or favoured class.
        ClassFractions = "class_fractions" => About { judges: Judges::Features, columns: &["class_fraction_min", "class_fraction_max", "class_fraction_*"] },
        /// FID between as many training and held-out images in the same features, on
        /// the reference's row: the value a perfect model's samples would get.
        FidFloor = "fid_floor" => About { judges: Judges::Features, columns: &["fid_floor"] },
        /// The fraction of the reverse process at which the classifier's mean top-class
        /// probability of a sample stage's snapshots first exceeds 1/2 (NaN if never),
        /// with the whole curve drawn in `recognizability.png`.
        RecognizableAt = "recognizable_at" => About { judges: Judges::Features, columns: &["recognizable_at"] },
    }
}

/// What an evaluate stage writes beside its metrics: each sample stage's cost, and the
/// accuracy of the classifier whose feature space it used.
pub const RECORDED: [&str; 3] = ["nfe", "sample_seconds", "classifier_accuracy"];

/// The valid metric names for an error message: every column, then the families.
pub fn choices() -> String {
    format!(
        "{} (and mode_weight_<k>, score_mse_t<t>, score_sigma_t<t>, class_fraction_<k>)",
        columns().join(", ")
    )
}

/// The families measured per noise level (`score_mse_t0.100`): (family, time), for
/// the report's table of them, whose rows are times and columns the families.
pub fn per_noise_level(name: &str) -> Option<(&'static str, &str)> {
    ["score_mse", "score_sigma"].into_iter().find_map(|family| {
        let t = name.strip_prefix(family)?.strip_prefix("_t")?;
        t.parse::<f64>().is_ok().then_some((family, t))
    })
}

/// Every `metric` value of `metrics.csv` but the families (`mode_weight_<k>`, ...), in
/// the table's order: the valid choices of a report plot's metric.
pub fn columns() -> Vec<&'static str> {
    Metric::ALL
        .iter()
        .flat_map(|m| m.about().columns)
        .filter(|c| !c.ends_with('*'))
        .chain(RECORDED.iter())
        .copied()
        .collect()
}

/// Whether `name` is a `metric` value an evaluate stage writes.
pub fn is_column(name: &str) -> bool {
    RECORDED.contains(&name)
        || Metric::ALL
            .iter()
            .flat_map(|m| m.about().columns)
            .any(|c| match c.strip_suffix('*') {
                Some(family) => name.starts_with(family) && name.len() > family.len(),
                None => *c == name,
            })
}

impl Metric {
    /// Whether the metric works in a classifier's feature space.
    pub fn needs_classifier(self) -> bool {
        self.about().judges == Judges::Features
    }

    /// Whether the metric judges a model (its score) rather than a sample set.
    pub fn of_models(self) -> bool {
        self.about().judges == Judges::Models
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

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn the_table_declares_every_value_metrics_csv_holds() {
        let mut all = columns();
        all.sort();
        let mut expected = vec![
            "sliced_wasserstein",
            "mmd2",
            "mode_weight_tv",
            "outlier_fraction",
            "nfe",
            "sample_seconds",
            "eps_mse",
            "nll",
            "bits_per_dim",
            "nll_nfe",
            "fid",
            "kid",
            "kid_std",
            "inception_score",
            "precision",
            "recall",
            "confidence",
            "class_fraction_min",
            "class_fraction_max",
            "fid_floor",
            "classifier_accuracy",
            "recognizable_at",
        ];
        expected.sort();
        assert_eq!(all, expected);
        for name in ["mode_weight_3", "score_mse_t0.010", "fid", "nfe"] {
            assert!(is_column(name), "{name}");
        }
        for name in ["mode_weight_", "score_mse_t", "mmd", "bogus"] {
            assert!(!is_column(name), "{name}");
        }
        assert!(Metric::Fid.needs_classifier() && !Metric::Fid.of_models());
        assert!(Metric::Nll.of_models() && !Metric::Mmd.of_models());
    }
}
