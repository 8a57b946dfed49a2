//! The `report:` section of a pipeline file: which comparison plots the report draws
//! across a sweep. Checked with the rest of the file; drawn by `report::compare`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sweep::Sweep;
use crate::metrics;

/// The `report:` section of a pipeline file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// Comparison plots; when empty, one per metric, chosen from the sweep's axes.
    #[serde(default)]
    pub plots: Vec<ComparePlot>,
}

/// One comparison plot.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComparePlot {
    /// A metric of the evaluate stages, e.g. `sliced_wasserstein` or `mmd2`.
    pub metric: String,
    /// The sweep axis along x: a numeric axis draws lines, any other grouped bars. Or
    /// another metric of the same rows, e.g. `nfe`.
    pub x: String,
    /// Axes that split the values into lines (or bars); default: every other axis
    /// that takes more than one value (against a metric: every non-numeric one). Axes
    /// left out are averaged over (against a metric: their points join the line).
    #[serde(default)]
    pub series: Option<Vec<String>>,
    /// Logarithmic x; default: when the values span a factor of 20 or more.
    #[serde(default)]
    pub log_x: Option<bool>,
    #[serde(default)]
    pub log_y: bool,
    /// Only the points where these axes take these values, e.g. `{ train: ddpm }`.
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, String>,
}

impl ReportSpec {
    /// Plots must name sweep axes (metrics are only known once evaluated).
    pub fn validate(&self, sweep: &Sweep) -> Result<(), String> {
        let names: Vec<&str> = sweep.axes.iter().map(|a| a.name.as_str()).collect();
        for plot in &self.plots {
            if sweep.is_empty() {
                return Err("`report.plots` compare the points of a sweep, but the pipeline has no `sweep:`".into());
            }
            if !names.contains(&plot.x.as_str()) && !metrics::is_column(&plot.x) {
                return Err(format!(
                    "report plot of `{}`: x `{}` is neither a sweep axis ({}) nor a metric ({}, ...)",
                    plot.metric,
                    plot.x,
                    names.join(", "),
                    metrics::columns().join(", ")
                ));
            }
            if !metrics::is_column(&plot.metric) {
                return Err(format!(
                    "report plot of `{}`: not a metric; metrics are: {}",
                    plot.metric,
                    metrics::choices()
                ));
            }
            for axis in plot.series.iter().flatten().chain(plot.filter.keys()) {
                if !names.contains(&axis.as_str()) {
                    return Err(format!(
                        "report plot of `{}`: `{axis}` is not a sweep axis; axes are: {}",
                        plot.metric,
                        names.join(", ")
                    ));
                }
            }
            // A `where` value no point has would draw an empty plot without a word.
            for (name, value) in &plot.filter {
                let axis = sweep.axis_index(name).map(|a| &sweep.axes[a]);
                if let Some(axis) = axis.filter(|a| !a.shown.contains(value)) {
                    return Err(format!(
                        "report plot of `{}`: axis `{name}` never takes `{value}`; its values are: {}",
                        plot.metric,
                        axis.shown.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}
