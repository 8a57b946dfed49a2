//! The pipeline's results folder: `metrics.csv` for all evaluated stages, figures,
//! links to every stage's cache entry, and `report.html` rendered from templates/.

pub mod claims;
pub mod compare;
pub mod table;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use petgraph::graph::NodeIndex;
use polars::prelude::*;
use serde::Serialize;

use crate::artifacts::read_csv;
use crate::cache::Cache;
use crate::error::RunnerError;
use crate::exec::{Outcome, Status};
use crate::pipeline::sweep::folder_name;
use crate::pipeline::{Plan, StageNode};
use crate::stages::StageKind;
use table::{MetricRow, MetricsTable};

const TEMPLATE: &str = include_str!("../../templates/report.html");

/// Galleries of per-stage figures stop here; large sweeps link the rest.
const GALLERY_LIMIT: usize = 48;

#[derive(Serialize)]
struct StageRow {
    name: String,
    kind: String,
    key: String,
    status: String,
    /// `computed`, `cached`, `failed`, `skipped` or `missing`, for styling.
    state: &'static str,
    seconds: String,
    link: Option<String>,
    /// The cluster job that ran the stage, and its log relative to the report.
    job: Option<String>,
    log: Option<String>,
}

#[derive(Serialize)]
struct Figure {
    title: String,
    src: String,
    /// The same figure as SVG, for papers.
    svg: Option<String>,
}

#[derive(Serialize)]
struct Gallery {
    title: String,
    figures: Vec<Figure>,
    /// Figures left out of the page (still in the stage folders).
    more: usize,
}

#[derive(Serialize)]
struct AxisView {
    name: String,
    path: String,
    values: Vec<String>,
}

#[derive(Serialize)]
struct SweepView {
    points: usize,
    stages: usize,
    axes: Vec<AxisView>,
}

/// A figure's title: a stage's own figure (a whole file name) by the stage; one of
/// several (`scatter_<stage>.png`) by what follows the prefix, else by the stage id,
/// with the sweep point's label.
fn figure_title(node: &StageNode, file: &str, path: &str) -> String {
    if file.ends_with(".png") {
        return node.name();
    }
    let subject = path.trim_start_matches(file).trim_end_matches(".png");
    let subject = if subject.is_empty() {
        node.id.as_str()
    } else {
        subject
    };
    if node.label.is_empty() {
        subject.to_string()
    } else {
        format!("{subject} [{}]", node.label)
    }
}

/// A written results folder: the report's path, the verdicts on the claims and every
/// metric by evaluate stage.
pub struct Built {
    pub path: PathBuf,
    pub claims: Vec<claims::Verdict>,
    pub metrics: Vec<table::MetricRecord>,
}

/// What the report's header states about the run it shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Header {
    /// The run's id, when the report belongs to a recorded run.
    pub run: Option<String>,
    pub command: String,
    /// `--profile`, `--set` and `--sweep` as given.
    pub overrides: Vec<String>,
    pub date: String,
    pub machine: String,
    pub device: String,
    /// Seconds the run took, start to end (none for a report rebuilt from the cache).
    pub seconds: Option<f64>,
}

/// Builds `results/<pipeline>/` from the cache; returns the report's path and how the
/// pipeline's claims came out.
pub fn build(
    plan: &Plan,
    cache: &Cache,
    outcomes: &[Outcome],
    results: &Path,
    header: &Header,
) -> Result<Built, RunnerError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| RunnerError::Report(format!("{what}: {e}"));
    let dir = results.join(&plan.name);
    let figures_dir = dir.join("figures");
    let _ = fs::remove_dir_all(&figures_dir);
    fs::create_dir_all(&figures_dir)
        .map_err(|e| fail(&format!("creating {}", figures_dir.display()), &e))?;
    link_stages(plan, cache, &dir, 1).map_err(|e| fail("linking stage outputs", &e))?;

    let mut stages = Vec::new();
    let mut evaluated: HashMap<NodeIndex, Vec<(String, String, f64)>> = HashMap::new();
    // One gallery per figure a kind declares, later kinds first (evaluations, then
    // training curves, then schedules).
    let mut galleries: Vec<Gallery> = Vec::new();
    let mut gallery_of: HashMap<(StageKind, usize), usize> = HashMap::new();
    for &kind in StageKind::ALL.iter().rev() {
        for (i, (_, title)) in kind.figures().iter().enumerate() {
            gallery_of.insert((kind, i), galleries.len());
            galleries.push(Gallery {
                title: title.to_string(),
                figures: Vec::new(),
                more: 0,
            });
        }
    }
    for (&ix, outcome) in plan.order.iter().zip(outcomes) {
        let node = &plan.graph[ix];
        let manifest = cache.manifest(&node.key)?;
        let seconds = match (&manifest, outcome.seconds) {
            (_, s) if s > 0.0 => format!("{s:.1}"),
            (Some(m), _) => format!("{:.1}", m.seconds),
            _ => "-".into(),
        };
        let status = match &outcome.status {
            Status::Failed(m) => format!("failed: {m}"),
            Status::Skipped(input) => format!("skipped (input {input} did not complete)"),
            s => s.label().to_string(),
        };
        stages.push(StageRow {
            name: node.name(),
            kind: node.kind().name().into(),
            key: node.key[..12].into(),
            status,
            state: outcome.status.label(),
            seconds,
            link: manifest.is_some().then(|| plan.link(node)),
            job: outcome.job.as_ref().map(|j| j.id.clone()),
            log: outcome.job.as_ref().and_then(|j| {
                let inside = j.log.strip_prefix(cache.root()).ok()?;
                Some(format!("../.cache/{}", inside.display()))
            }),
        });
        let Some(manifest) = manifest else { continue };
        let entry = cache.entry_dir(&node.key);
        let prefix = if node.label.is_empty() {
            node.id.clone()
        } else {
            format!("{}-{}", node.id, folder_name(&node.label))
        };
        let mut copy = |file: &str, title: String, gallery: usize| -> Result<(), RunnerError> {
            let gallery = &mut galleries[gallery];
            if gallery.figures.len() >= GALLERY_LIMIT {
                gallery.more += 1;
                return Ok(());
            }
            let name = format!("{prefix}-{file}");
            fs::copy(entry.join(file), figures_dir.join(&name))
                .map_err(|e| fail(&format!("copying {file}"), &e))?;
            let svg = Path::new(file).with_extension("svg");
            let svg = match entry.join(&svg).is_file() {
                true => {
                    let svg_name = Path::new(&name).with_extension("svg");
                    fs::copy(entry.join(&svg), figures_dir.join(&svg_name))
                        .map_err(|e| fail(&format!("copying {}", svg.display()), &e))?;
                    Some(format!("figures/{}", svg_name.display()))
                }
                false => None,
            };
            gallery.figures.push(Figure {
                title,
                src: format!("figures/{name}"),
                svg,
            });
            Ok(())
        };
        for (i, (file, _)) in node.kind().figures().iter().enumerate() {
            let gallery = gallery_of[&(node.kind(), i)];
            // An exact model trains nothing and has no loss curve: only outputs count.
            for out in manifest
                .outputs
                .iter()
                .filter(|o| o.path.starts_with(file) && o.path.ends_with(".png"))
            {
                copy(&out.path, figure_title(node, file, &out.path), gallery)?;
            }
        }
        if node.kind() == StageKind::Evaluate {
            evaluated.insert(ix, read_metrics(&entry.join("metrics.csv"))?);
        }
    }
    let table = metrics_table(plan, &evaluated);
    let metrics = metric_records(plan, &evaluated);
    table::write_csv(&metrics, &dir.join("metrics.csv"))?;

    let mut compare_figures = Vec::new();
    if !plan.sweep.is_empty() {
        for (i, plot) in compare::chosen(plan, &table).iter().enumerate() {
            let name = format!(
                "sweep-{i}-{}-by-{}.png",
                folder_name(&plot.metric),
                folder_name(&plot.x)
            );
            let drawn = compare::draw(plan, &table, plot, &figures_dir.join(&name))
                .map_err(|e| fail("drawing a comparison plot", &e))?;
            if let Some(title) = drawn {
                let svg = Path::new(&name).with_extension("svg");
                compare_figures.push(Figure {
                    title,
                    src: format!("figures/{name}"),
                    svg: Some(format!("figures/{}", svg.display())),
                });
            }
        }
    }
    let sweep = (!plan.sweep.is_empty()).then(|| SweepView {
        points: plan.points.len(),
        stages: plan.order.len(),
        axes: plan
            .sweep
            .axes
            .iter()
            .map(|a| AxisView {
                name: a.name.clone(),
                path: a.path.clone(),
                values: a.shown.clone(),
            })
            .collect(),
    });

    let claims = claims::judge(plan, &table);
    let mut env = minijinja::Environment::new();
    env.add_template("report.html", TEMPLATE)
        .map_err(|e| fail("report template", &e))?;
    let html = env
        .get_template("report.html")
        .and_then(|t| {
            t.render(minijinja::context! {
                name => &plan.name,
                description => &plan.description,
                pipeline_file => plan.path.display().to_string(),
                source => &plan.source,
                sweep => minijinja::value::Serde(&sweep),
                compare_figures => minijinja::value::Serde(&compare_figures),
                metric_tables => minijinja::value::Serde(&table::tables(&metrics).iter().map(|t| shown_table(plan, t)).collect::<Vec<_>>()),
                stages_ran_as_jobs => stages.iter().any(|s| s.job.is_some()),
                stages => minijinja::value::Serde(&stages),
                galleries => minijinja::value::Serde(&galleries),
                claims => minijinja::value::Serde(&claims),
                runner_version => env!("CARGO_PKG_VERSION"),
                header => minijinja::value::Serde(header),
            })
        })
        .map_err(|e| fail("rendering the report", &e))?;
    let path = dir.join("report.html");
    crate::artifacts::replace(&path, html.as_bytes())
        .map_err(|e| fail(&format!("writing {}", path.display()), &e))?;
    Ok(Built {
        path,
        claims,
        metrics,
    })
}

/// A metrics table as the page shows it: numbers formatted, stages linked.
#[derive(Serialize)]
struct ShownTable {
    title: String,
    axes: Vec<String>,
    /// `samples` or `model`: the header of the stage column.
    subject: &'static str,
    metrics: Vec<String>,
    rows: Vec<ShownRow>,
}

#[derive(Serialize)]
struct ShownRow {
    point: Vec<String>,
    stage: String,
    link: Option<String>,
    values: Vec<String>,
}

fn shown_table(plan: &Plan, t: &table::Table) -> ShownTable {
    ShownTable {
        title: format!("{} ({})", t.evaluate, t.of),
        axes: t.axes.clone(),
        subject: t.subject(),
        metrics: t.metrics.clone(),
        rows: t
            .rows
            .iter()
            .map(|r| ShownRow {
                point: r.point.clone(),
                stage: r.stage.clone(),
                // Unforked stages link to their folder; a fork's label is in the row.
                link: plan
                    .nodes_of(&r.stage)
                    .next()
                    .filter(|_| !plan.is_forked(&r.stage))
                    .map(|n| plan.link(n)),
                values: r
                    .values
                    .iter()
                    .map(|v| v.map(table::number).unwrap_or_default())
                    .collect(),
            })
            .collect(),
    }
}

/// Every metric by evaluate node, in plan order, each once: a row's sweep values are
/// those of the evaluated stage and of the evaluate stage's own swept parameters, so a
/// stage that no sweep axis reaches appears once, not once per point (every fork of
/// the evaluation measured it the same way).
fn metric_records(
    plan: &Plan,
    evaluated: &HashMap<NodeIndex, Vec<(String, String, f64)>>,
) -> Vec<table::MetricRecord> {
    let mut records: Vec<table::MetricRecord> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for &ix in &plan.order {
        let Some(values) = evaluated.get(&ix) else {
            continue;
        };
        let node = &plan.graph[ix];
        let own: Vec<(usize, usize)> = node
            .coords
            .iter()
            .copied()
            .filter(|&(a, _)| plan.sweep.axes[a].stage == node.id)
            .collect();
        let point_of = |stage: &str| -> Vec<(String, String)> {
            let input = node
                .needs
                .iter()
                .flat_map(|(_, ixs)| ixs)
                .map(|&i| &plan.graph[i])
                .find(|n| n.id == stage);
            let mut coords: Vec<(usize, usize)> = input
                .map(|n| n.coords.clone())
                .unwrap_or_else(|| node.coords.clone());
            coords.extend(&own);
            coords.sort_unstable();
            coords.dedup();
            coords
                .iter()
                .map(|&(a, v)| {
                    let axis = &plan.sweep.axes[a];
                    (axis.name.clone(), axis.shown[v].clone())
                })
                .collect()
        };
        for (stage, metric, value) in values {
            let point = point_of(stage);
            if !seen.insert((
                node.id.clone(),
                stage.clone(),
                point.clone(),
                metric.clone(),
            )) {
                continue;
            }
            let of_models = plan
                .nodes_of(stage)
                .next()
                .is_some_and(|n| n.kind() == StageKind::Train);
            let of = match (of_models, crate::metrics::per_noise_level(metric)) {
                (true, Some(_)) => table::NOISE_LEVELS,
                (true, None) => "models",
                (false, _) => "samples",
            };
            records.push(table::MetricRecord {
                evaluate: node.id.clone(),
                stage: stage.clone(),
                of: of.into(),
                point,
                metric: metric.clone(),
                value: *value,
            });
        }
    }
    records
}

/// One row per (sweep point, evaluate stage at that point, evaluated stage, metric).
fn metrics_table(
    plan: &Plan,
    evaluated: &HashMap<NodeIndex, Vec<(String, String, f64)>>,
) -> MetricsTable {
    let evaluate_positions: Vec<usize> = plan
        .stages
        .iter()
        .enumerate()
        .filter(|(_, id)| {
            plan.nodes_of(id)
                .next()
                .is_some_and(|n| n.kind() == StageKind::Evaluate)
        })
        .map(|(i, _)| i)
        .collect();
    let mut rows = Vec::new();
    for (p, point) in plan.points.iter().enumerate() {
        for &s in &evaluate_positions {
            let Some(values) = evaluated.get(&point.nodes[s]) else {
                continue;
            };
            for (stage, metric, value) in values {
                rows.push(MetricRow {
                    point: p,
                    // Zipped axes share their group's index.
                    coords: plan
                        .sweep
                        .axes
                        .iter()
                        .map(|a| point.groups[a.group])
                        .collect(),
                    evaluate: plan.stages[s].clone(),
                    stage: stage.clone(),
                    metric: metric.clone(),
                    value: *value,
                });
            }
        }
    }
    MetricsTable { rows }
}

/// An evaluate stage's `metrics.csv`: (evaluated stage, metric, value).
fn read_metrics(path: &Path) -> Result<Vec<(String, String, f64)>, RunnerError> {
    let fail =
        |e: &dyn std::fmt::Display| RunnerError::Report(format!("reading {}: {e}", path.display()));
    let df = read_csv(path).map_err(|e| fail(&e))?;
    let text = |name: &str| -> Result<Vec<String>, RunnerError> {
        let col = df.column(name).map_err(|e| fail(&e))?;
        let col = col.cast(&DataType::String).map_err(|e| fail(&e))?;
        Ok(col
            .str()
            .map_err(|e| fail(&e))?
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect())
    };
    let values = df
        .column("value")
        .map_err(|e| fail(&e))?
        .cast(&DataType::Float64)
        .map_err(|e| fail(&e))?;
    let values: Vec<f64> = values
        .f64()
        .map_err(|e| fail(&e))?
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect();
    Ok(text("stage")?
        .into_iter()
        .zip(text("metric")?)
        .zip(values)
        .map(|((s, m), v)| (s, m, v))
        .collect())
}

/// `<dir>/stages/<id>` (or `<id>/<label>` when forked) -> the cache entry, by a relative
/// link; `dir` is `up` folders below the results folder (1 for `results/<pipeline>`).
pub fn link_stages(plan: &Plan, cache: &Cache, dir: &Path, up: usize) -> std::io::Result<()> {
    let stages = dir.join("stages");
    let _ = fs::remove_dir_all(&stages);
    fs::create_dir_all(&stages)?;
    for node in plan.nodes().filter(|n| cache.is_cached(&n.key)) {
        let link = dir.join(plan.link(node));
        let depth = link
            .strip_prefix(dir)
            .map(|p| p.components().count())
            .unwrap_or(2);
        let mut target = PathBuf::new();
        for _ in 0..depth + up - 1 {
            target.push("..");
        }
        let target = target.join(".cache").join(&node.key);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &link)?;
        #[cfg(not(unix))]
        fs::write(link.with_extension("txt"), target.display().to_string())?;
    }
    Ok(())
}
