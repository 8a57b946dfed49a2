//! Comparison plots across a sweep: a metric against a numeric axis (one line per
//! series, e.g. sliced Wasserstein against steps, one line per sampler), grouped bars
//! over a categorical axis, or a metric against another metric (e.g. against the NFE
//! each point cost: one line per sampler through its step counts).

use std::collections::BTreeMap;
use std::path::Path;

use super::table::{MetricRow, MetricsTable};
use crate::error::StageResult;
use crate::pipeline::Plan;
use crate::pipeline::report_spec::ComparePlot;
use crate::pipeline::sweep::Sweep;
use crate::plot::{self, LineChart};

/// Counters, timings and per-mode or per-time parts are not worth a comparison plot
/// of their own by default.
fn plotted_by_default(metric: &str) -> bool {
    let per_mode = metric
        .strip_prefix("mode_weight_")
        .is_some_and(|k| k.chars().all(|c| c.is_ascii_digit()));
    !per_mode
        && crate::metrics::per_noise_level(metric).is_none()
        && !matches!(metric, "nfe" | "sample_seconds" | "nll_nfe")
}

/// The pipeline's own plots, or one per metric against the first axis that varies
/// (numeric axes first; never a seed axis, which is a repetition, not a variable:
/// plots show the mean and spread over it).
pub fn chosen(plan: &Plan, table: &MetricsTable) -> Vec<ComparePlot> {
    if !plan.report.plots.is_empty() {
        return plan.report.plots.clone();
    }
    let varying: Vec<_> = plan
        .sweep
        .axes
        .iter()
        .filter(|a| a.values.len() > 1 && !a.is_seed())
        .collect();
    let Some(x) = varying
        .iter()
        .find(|a| a.is_numeric())
        .or_else(|| varying.first())
    else {
        return Vec::new();
    };
    table
        .metrics()
        .into_iter()
        .filter(|m| plotted_by_default(m))
        .map(|metric| ComparePlot {
            metric,
            x: x.name.clone(),
            series: None,
            log_x: None,
            log_y: false,
            filter: BTreeMap::new(),
        })
        .collect()
}

/// Draws one comparison plot into `path`; returns its caption, or None when the table
/// has no value of its metric.
pub fn draw(
    plan: &Plan,
    table: &MetricsTable,
    plot: &ComparePlot,
    path: &Path,
) -> StageResult<Option<String>> {
    let sweep = &plan.sweep;
    let kept = |r: &MetricRow| {
        plot.filter.iter().all(|(name, value)| {
            sweep
                .axis_index(name)
                .is_some_and(|a| &sweep.axes[a].shown[r.coords[a]] == value)
        })
    };
    let rows: Vec<&MetricRow> = table
        .rows
        .iter()
        .filter(|r| r.metric == plot.metric && kept(r))
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let scope = || {
        let parts: Vec<String> = plot
            .filter
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let Some(x) = sweep.axes.iter().position(|a| a.name == plot.x) else {
        return against_metric(plan, table, plot, &rows, &scope(), path);
    };
    let series_axes = series_axes(sweep, plot, |a| a != x && !sweep.axes[a].is_seed());
    let series_name = series_namer(sweep, &rows, &series_axes, &plot.metric);
    // Mean over whatever is neither x nor a series (an axis the plot leaves out).
    let mut cells: BTreeMap<String, BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
    for r in &rows {
        cells
            .entry(series_name(r))
            .or_default()
            .entry(r.coords[x])
            .or_default()
            .push(r.value);
    }
    let averaged: Vec<usize> = (0..sweep.axes.len())
        .filter(|&a| {
            a != x
                && !series_axes.contains(&a)
                && sweep.axes[a].values.len() > 1
                && !plot.filter.contains_key(&sweep.axes[a].name)
        })
        .collect();
    // Over seeds alone the spread is the run-to-run noise, drawn as error bars; over
    // other axes it would mix in what they change, so only the mean is drawn.
    let over_seeds = !averaged.is_empty() && averaged.iter().all(|&a| sweep.axes[a].is_seed());
    let names: Vec<&str> = averaged
        .iter()
        .map(|&a| sweep.axes[a].name.as_str())
        .collect();
    let mut title = format!("{} by {}{}", plot.metric, plot.x, scope());
    if over_seeds {
        let n = cells
            .values()
            .flat_map(|c| c.values())
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        title.push_str(&format!(
            " (mean ± std over {}, {n} values)",
            names.join(", ")
        ));
    } else if !averaged.is_empty() {
        title.push_str(&format!(" (mean over {})", names.join(", ")));
    }
    let spread = |values: &[f64]| if over_seeds { std_dev(values) } else { 0.0 };
    let axis = &sweep.axes[x];
    if axis.is_numeric() {
        let series: Vec<(String, Vec<(f64, f64, f64)>)> = cells
            .into_iter()
            .map(|(name, cells)| {
                let mut points: Vec<(f64, f64, f64)> = cells
                    .into_iter()
                    .map(|(v, values)| {
                        let x = axis.number(v).unwrap_or(f64::NAN);
                        (x, mean(&values), spread(&values))
                    })
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                (name, points)
            })
            .collect();
        let numbers: Vec<f64> = (0..axis.values.len())
            .filter_map(|v| axis.number(v))
            .collect();
        let (lo, hi) = numbers
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let log_x = plot.log_x.unwrap_or_else(|| spans_decades(lo, hi));
        let named: Vec<(&str, Vec<(f64, f64)>)> = series
            .iter()
            .map(|(n, p)| (n.as_str(), p.iter().map(|&(x, y, _)| (x, y)).collect()))
            .collect();
        let errors: Vec<Vec<f64>> = series
            .iter()
            .map(|(_, p)| p.iter().map(|&(_, _, e)| e).collect())
            .collect();
        let note = plot::line_chart(
            path,
            &LineChart {
                title: &title,
                x_label: &plot.x,
                y_label: &plot.metric,
                series: &named,
                errors: &errors,
                log_x,
                log_y: plot.log_y,
            },
        )?;
        if let Some(note) = note {
            title.push_str(&format!("; {note}"));
        }
    } else {
        let series: Vec<(String, Vec<Option<f64>>)> = cells
            .iter()
            .map(|(name, cells)| {
                let values = (0..axis.values.len())
                    .map(|v| cells.get(&v).map(|values| mean(values)))
                    .collect();
                (name.clone(), values)
            })
            .collect();
        let errors: Vec<Vec<f64>> = cells
            .values()
            .map(|cells| {
                (0..axis.values.len())
                    .map(|v| cells.get(&v).map_or(0.0, |values| spread(values)))
                    .collect()
            })
            .collect();
        plot::bars(path, &title, &plot.metric, &axis.shown, &series, &errors)?;
    }
    Ok(Some(title))
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The sample standard deviation (0 for fewer than two values).
fn std_dev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    let square: f64 = values.iter().map(|v| (v - m).powi(2)).sum();
    (square / (values.len() - 1) as f64).sqrt()
}

/// The default for `log_x`: positive values spanning a factor of 20 or more.
fn spans_decades(lo: f64, hi: f64) -> bool {
    lo > 0.0 && hi / lo >= 20.0
}

/// The plot's `series` axes, or by default every axis that varies, is not filtered
/// to one value by `where`, and passes `eligible`.
fn series_axes(sweep: &Sweep, plot: &ComparePlot, eligible: impl Fn(usize) -> bool) -> Vec<usize> {
    match &plot.series {
        Some(names) => names.iter().filter_map(|n| sweep.axis_index(n)).collect(),
        None => (0..sweep.axes.len())
            .filter(|&a| {
                sweep.axes[a].values.len() > 1
                    && !plot.filter.contains_key(&sweep.axes[a].name)
                    && eligible(a)
            })
            .collect(),
    }
}

/// Names a row's series from the series axes' values (unset ones left out), plus the
/// evaluate and evaluated stage when the rows have several.
fn series_namer<'a>(
    sweep: &'a Sweep,
    rows: &[&MetricRow],
    series_axes: &'a [usize],
    fallback: &'a str,
) -> impl Fn(&MetricRow) -> String + 'a {
    let several = |f: &dyn Fn(&MetricRow) -> &str| {
        let mut seen: Vec<&str> = rows.iter().map(|r| f(r)).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len() > 1
    };
    let (by_evaluate, by_stage) = (several(&|r| &r.evaluate), several(&|r| &r.stage));
    move |r: &MetricRow| {
        let mut parts: Vec<String> = series_axes
            .iter()
            .filter(|&&a| !sweep.axes[a].values[r.coords[a]].is_null())
            .map(|&a| {
                format!(
                    "{}={}",
                    sweep.axes[a].name, sweep.axes[a].shown[r.coords[a]]
                )
            })
            .collect();
        match (by_evaluate, by_stage) {
            (true, _) => parts.push(format!("{}/{}", r.evaluate, r.stage)),
            (false, true) => parts.push(r.stage.clone()),
            _ => {}
        }
        if parts.is_empty() {
            fallback.to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// `metric` against another metric `x` of the same (point, evaluate, stage): lines
/// per series through the points, ordered by x.
fn against_metric(
    plan: &Plan,
    table: &MetricsTable,
    plot: &ComparePlot,
    rows: &[&MetricRow],
    scope: &str,
    path: &Path,
) -> StageResult<Option<String>> {
    let sweep = &plan.sweep;
    let xs: BTreeMap<(usize, &str, &str), f64> = table
        .rows
        .iter()
        .filter(|r| r.metric == plot.x)
        .map(|r| ((r.point, r.evaluate.as_str(), r.stage.as_str()), r.value))
        .collect();
    if xs.is_empty() {
        return Ok(None);
    }
    let series_axes = series_axes(sweep, plot, |a| !sweep.axes[a].is_numeric());
    let series_name = series_namer(sweep, rows, &series_axes, &plot.metric);
    let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        if let Some(&x) = xs.get(&(r.point, r.evaluate.as_str(), r.stage.as_str())) {
            lines.entry(series_name(r)).or_default().push((x, r.value));
        }
    }
    let series: Vec<(&str, Vec<(f64, f64)>)> = lines
        .iter_mut()
        .map(|(name, points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points.dedup();
            (name.as_str(), points.clone())
        })
        .collect();
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
            (l.min(p.0), h.max(p.0))
        });
    let log_x = plot.log_x.unwrap_or_else(|| spans_decades(lo, hi));
    let title = format!("{} against {}{scope}", plot.metric, plot.x);
    let note = plot::line_chart(
        path,
        &LineChart {
            title: &title,
            x_label: &plot.x,
            y_label: &plot.metric,
            series: &series,
            errors: &[],
            log_x,
            log_y: plot.log_y,
        },
    )?;
    Ok(Some(match note {
        Some(note) => format!("{title}; {note}"),
        None => title,
    }))
}
