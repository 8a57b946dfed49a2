//! The parameters of an evaluate stage: which metrics and figures (by default chosen
//! from what the stage is given), and how much work to spend on them.

use serde::{Deserialize, Serialize};

use crate::diffusion::likelihood::Divergence;
use crate::diffusion::samplers::SamplerParams;
use crate::diffusion::samplers::ddim::Ddim;
use crate::choices::named_choices;
use crate::metrics::Metric;
use crate::stages::dataset::{DatasetParams, Source};

/// Which metrics and figures, and how much work to spend on them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// Sample metrics apply to every `samples` input, model metrics to every `models`
    /// input; the default is the sample metrics, plus the model metrics when models
    /// are given.
    #[serde(default)]
    pub metrics: Option<Vec<Metric>>,
    /// Figures; default: a scatter per sample set, and a score field per model of 2D
    /// data.
    #[serde(default)]
    pub plots: Option<Vec<Plot>>,
    /// Random directions for the sliced Wasserstein distance.
    #[serde(default = "projections")]
    pub projections: usize,
    /// Points per set for MMD (its cost is quadratic).
    #[serde(default = "mmd_points")]
    pub mmd_points: usize,
    /// Times t in (0, 1] at which the score error is measured (snapped to the nearest
    /// level of a discrete process).
    #[serde(default = "score_times")]
    pub score_times: Vec<f64>,
    /// Held-out points noised to each time for the score error.
    #[serde(default = "score_points")]
    pub score_points: usize,
    /// Times of the score-field panels.
    #[serde(default = "field_times")]
    pub field_times: Vec<f64>,
    /// Held-out points whose likelihood is computed (each costs an ODE solve).
    #[serde(default = "nll_points")]
    pub nll_points: usize,
    /// `auto` (exact up to 16 dimensions), `exact` or `hutchinson`.
    #[serde(default = "divergence")]
    pub divergence: Divergence,
    /// Tolerances of the likelihood's RK45 solve (score_sde: 1e-5).
    #[serde(default = "tolerance")]
    pub nll_rtol: f64,
    #[serde(default = "tolerance")]
    pub nll_atol: f64,
    /// Images per set embedded for the feature-space metrics (FID, KID, IS, P/R).
    #[serde(default = "feature_points")]
    pub feature_points: usize,
    /// Images per KID subset (10 subsets are averaged).
    #[serde(default = "kid_subset")]
    pub kid_subset: usize,
    /// The deterministic sampler (`ddim` with eta 0, or `ode`) that decodes the
    /// spherical interpolations.
    #[serde(default = "interpolation_sampler")]
    pub interpolation_sampler: SamplerParams,
    /// Times to which the two images of `mix` are noised, one row each (0: the plain
    /// mix; Ho et al. show 0 to 1000 of 1000 steps).
    #[serde(default = "mix_times")]
    pub mix_times: Vec<f64>,
    /// Ancestral steps of the `mix` decoding from t = 1 (default: every level of a
    /// discrete process, 1000 for an SDE); a row starts at its own time.
    #[serde(default)]
    pub mix_steps: Option<usize>,
    #[serde(default)]
    pub seed: u64,
}

/// What data a figure is drawn for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draws {
    /// 2D points (toy data).
    Points,
    /// Images.
    Images,
    /// Either: points or images, as the data is.
    Either,
}

/// A plot's row of the table.
#[derive(Debug)]
pub struct PlotAbout {
    pub draws: Draws,
    /// Drawn from `needs.models` (else from `needs.samples`).
    pub of_models: bool,
}

named_choices! {
    /// Figures an evaluate stage can draw.
    pub enum Plot: PlotAbout {
        /// Samples over the held-out data, one figure per sample stage.
        Scatter = "scatter" => PlotAbout { draws: Draws::Points, of_models: false },
        /// The sample stage's snapshots from prior to data, one panel each.
        Timeline = "timeline" => PlotAbout { draws: Draws::Either, of_models: false },
        /// A model's score as arrows at `field_times`, beside the exact score when the
        /// reference is a mixture (2D data).
        ScoreField = "score_field" => PlotAbout { draws: Draws::Points, of_models: true },
        /// Image samples, 8 by 8 (image data).
        Grid = "grid" => PlotAbout { draws: Draws::Images, of_models: false },
        /// Held-out data noised by a model's process from t = 0 to 1: images, points,
        /// or in 1D densities over the exact noised density of a mixture.
        ForwardNoising = "forward_noising" => PlotAbout { draws: Draws::Either, of_models: true },
        /// Spherical interpolations between prior draws, decoded by
        /// `interpolation_sampler` (image data, models).
        Interpolation = "interpolation" => PlotAbout { draws: Draws::Images, of_models: true },
        /// Ho et al.'s interpolation: two held-out images noised to each of `mix_times`,
        /// mixed linearly and decoded by ancestral sampling (image data, models).
        Mix = "mix" => PlotAbout { draws: Draws::Images, of_models: true },
    }
}

impl Plot {
    /// Whether the figure can be drawn for data that is (or is not) images.
    pub fn fits(self, images: bool) -> bool {
        match self.about().draws {
            Draws::Points => !images,
            Draws::Images => images,
            Draws::Either => true,
        }
    }

    /// Whether the figure is drawn from `needs.models`.
    pub fn of_models(self) -> bool {
        self.about().of_models
    }
}

fn projections() -> usize {
    256
}
fn mmd_points() -> usize {
    2000
}
fn score_times() -> Vec<f64> {
    vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
}
fn score_points() -> usize {
    2000
}
fn field_times() -> Vec<f64> {
    vec![0.02, 0.2, 0.5]
}
fn nll_points() -> usize {
    500
}
fn divergence() -> Divergence {
    Divergence::Auto
}
fn tolerance() -> f64 {
    1e-5
}
fn feature_points() -> usize {
    2000
}
fn kid_subset() -> usize {
    500
}
fn interpolation_sampler() -> SamplerParams {
    SamplerParams::Ddim(Ddim::default())
}
fn mix_times() -> Vec<f64> {
    vec![0.0, 0.25, 0.5, 0.75, 1.0]
}

/// What an evaluate stage is given, which decides its default metrics and figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given {
    pub models: bool,
    pub classifier: bool,
    pub images: bool,
}

impl Default for EvaluateParams {
    fn default() -> Self {
        EvaluateParams {
            metrics: None,
            plots: None,
            projections: projections(),
            mmd_points: mmd_points(),
            score_times: score_times(),
            score_points: score_points(),
            field_times: field_times(),
            nll_points: nll_points(),
            divergence: divergence(),
            nll_rtol: tolerance(),
            nll_atol: tolerance(),
            feature_points: feature_points(),
            kid_subset: kid_subset(),
            interpolation_sampler: interpolation_sampler(),
            mix_times: mix_times(),
            mix_steps: None,
            seed: 0,
        }
    }
}

impl EvaluateParams {
    /// The metrics to compute, given the inputs.
    pub fn metrics(&self, given: Given) -> Vec<Metric> {
        if let Some(m) = &self.metrics {
            return m.clone();
        }
        let mut out = if given.images {
            if given.classifier {
                vec![
                    Metric::Fid,
                    Metric::Kid,
                    Metric::InceptionScore,
                    Metric::PrecisionRecall,
                    Metric::Confidence,
                    Metric::ClassFractions,
                    Metric::FidFloor,
                    Metric::RecognizableAt,
                ]
            } else {
                vec![]
            }
        } else {
            vec![Metric::SlicedWasserstein, Metric::Mmd]
        };
        if given.models {
            if !given.images {
                out.push(Metric::ScoreError);
            }
            out.push(Metric::Nll);
        }
        out
    }

    /// The figures to draw, given the inputs and the data's dimension.
    pub fn plots(&self, given: Given, dim: usize) -> Vec<Plot> {
        match &self.plots {
            Some(p) => p.clone(),
            None if given.images && given.models => vec![
                Plot::Grid,
                Plot::Timeline,
                Plot::ForwardNoising,
                Plot::Interpolation,
                Plot::Mix,
            ],
            None if given.images => vec![Plot::Grid, Plot::Timeline],
            None if dim == 2 => vec![Plot::Scatter, Plot::ScoreField],
            None if dim == 1 => vec![Plot::Scatter, Plot::Timeline],
            None => vec![Plot::Scatter],
        }
    }

    pub fn validate(
        &self,
        reference: Option<&DatasetParams>,
        samples: usize,
        models: usize,
        classifier: bool,
    ) -> Result<(), String> {
        let images = matches!(reference, Some(params) if matches!(params.source, Source::Images(_)));
        let given = Given {
            models: models > 0,
            classifier,
            images,
        };
        if self.feature_points < 2 || self.kid_subset < 2 {
            return Err("`feature_points` and `kid_subset` must be at least 2".into());
        }
        if self.projections == 0
            || self.mmd_points < 2
            || self.score_points == 0
            || self.nll_points == 0
        {
            return Err(
                "need projections >= 1, mmd_points >= 2, score_points >= 1 and nll_points >= 1"
                    .into(),
            );
        }
        if samples == 0 && models == 0 {
            return Err("nothing to evaluate: give `needs.samples` (sample stages) and/or `needs.models` (train stages)".into());
        }
        let bad_time = |t: &f64| !(*t > 0.0 && *t <= 1.0);
        if self
            .score_times
            .iter()
            .chain(&self.field_times)
            .any(bad_time)
            || self.score_times.is_empty()
        {
            return Err("`score_times` and `field_times` must be times in (0, 1]; `score_times` must not be empty".into());
        }
        if !(self.nll_rtol > 0.0 && self.nll_atol > 0.0) {
            return Err("`nll_rtol` and `nll_atol` must be positive".into());
        }
        match &self.interpolation_sampler {
            SamplerParams::Ddim(ddim) if ddim.eta == 0.0 => {}
            SamplerParams::Ode(_) => {}
            other => {
                return Err(format!(
                    "`interpolation_sampler` must be deterministic (`ddim` with eta 0, or `ode`), not `{}`",
                    other.name()
                ));
            }
        }
        if self.mix_times.iter().any(|t| !(0.0..=1.0).contains(t)) || self.mix_steps == Some(0) {
            return Err("`mix_times` must be times in [0, 1] and `mix_steps` at least 1".into());
        }
        let metrics = self.metrics(given);
        if let Some(m) = metrics.iter().find(|m| m.needs_classifier())
            && !classifier
        {
            return Err(format!(
                "metric `{}` works in a classifier's feature space: add a `kind: classifier` stage and name it in `needs.classifier`",
                m.name()
            ));
        }
        let is_mixture = |data: Option<&DatasetParams>| data.is_some_and(|d| d.mixture().is_some());
        for metric in &metrics {
            if metric.of_models() && models == 0 {
                return Err(format!(
                    "metric `{}` judges models: list train stages under `needs.models`",
                    metric.name()
                ));
            }
            if !metric.of_models() && samples == 0 && self.metrics.is_some() {
                return Err(format!(
                    "metric `{}` judges samples: list sample stages under `needs.samples`",
                    metric.name()
                ));
            }
            if *metric == Metric::ShellOutliers
                && reference.is_some_and(|d| d.source.shell().is_none())
            {
                return Err(format!(
                    "metric `{}` needs a thin-shell reference (circle or sphere)",
                    metric.name()
                ));
            }
            if matches!(metric, Metric::ModeWeights | Metric::ScoreError)
                && reference.is_some()
                && !is_mixture(reference)
            {
                return Err(format!(
                    "metric `{}` needs a Gaussian-mixture reference (gmm or two_gaussians)",
                    metric.name()
                ));
            }
        }
        let plots = self.plots.clone().unwrap_or_default();
        for plot in &plots {
            if !plot.fits(images) {
                return Err(if images {
                    format!(
                        "plot `{}` draws points; for images use `grid`, `timeline`, `forward_noising`, `interpolation` or `mix`",
                        plot.name()
                    )
                } else {
                    format!(
                        "plot `{}` draws images; the reference is not an image dataset",
                        plot.name()
                    )
                });
            }
        }
        if let Some(plot) = plots.iter().find(|p| p.of_models())
            && models == 0
        {
            return Err(format!(
                "plot `{}` is drawn from a model: list train stages under `needs.models`",
                plot.name()
            ));
        }
        if plots
            .iter()
            .any(|p| matches!(p, Plot::Scatter | Plot::Timeline | Plot::Grid))
            && samples == 0
        {
            return Err("plots `scatter`, `grid` and `timeline` draw samples: list sample stages under `needs.samples`".into());
        }
        if models > 0
            && !metrics.iter().any(|m| m.of_models())
            && !plots.iter().any(|p| p.of_models())
            && self.plots.is_some()
        {
            return Err("`needs.models` lists train stages but no metric or plot uses them; add `score_error`, `nll` or a plot drawn from models (`score_field`, `forward_noising`, `interpolation`, `mix`)".into());
        }
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn check(plots: &str, data: &str) -> Result<(), String> {
        let params: EvaluateParams =
            serde_norway::from_str(&format!("{{ plots: {plots}, metrics: [] }}")).unwrap();
        let data: DatasetParams = serde_norway::from_str(data).unwrap();
        params.validate(Some(&data), 1, 0, false)
    }

    /// Each plot is drawn for the data its table row says: points, images, or either.
    #[test]
    fn plots_fit_the_data_their_row_says() {
        let (points, images) = ("name: gmm", "name: mnist");
        assert!(check("[scatter, timeline]", points).is_ok());
        assert!(check("[grid, timeline]", images).is_ok());
        let err = check("[scatter]", images).unwrap_err();
        assert!(err.contains("plot `scatter` draws points"), "{err}");
        let err = check("[grid]", points).unwrap_err();
        assert!(err.contains("plot `grid` draws images"), "{err}");
        assert!(Plot::Mix.of_models() && !Plot::Grid.of_models());
    }
}
