//! The pipeline's results folder: `metrics.csv` for all evaluated stages, figures,
//! links to every stage's cache entry, and `report.html` rendered from templates/.

pub mod plots;

use std::fs;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use crate::cache::Cache;
use crate::error::RunnerError;
use crate::exec::scheduler::Outcome;
use crate::pipeline::Plan;
use crate::pipeline::spec::StageKind;
use crate::stages::artifacts::{read_csv, write_csv};

const TEMPLATE: &str = include_str!("../../templates/report.html");

#[derive(Serialize)]
struct StageRow {
    id: String,
    kind: String,
    key: String,
    status: String,
    /// `computed`, `cached`, `failed` or `skipped`, for styling.
    state: &'static str,
    seconds: String,
    link: Option<String>,
}

#[derive(Serialize)]
struct MetricRow {
    evaluate: String,
    stage: String,
    metric: String,
    value: String,
}

#[derive(Serialize)]
struct Figure {
    title: String,
    src: String,
}

/// Every metric row of the pipeline: (evaluate stage, sample stage, metric, value).
type Metrics = Vec<(String, String, String, f64)>;

/// Builds `results/<pipeline>/` from the cache; returns the report's path.
pub fn build(plan: &Plan, cache: &Cache, outcomes: &[Outcome], results: &Path) -> Result<PathBuf, RunnerError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| RunnerError::Report(format!("{what}: {e}"));
    let dir = results.join(&plan.name);
    let figures_dir = dir.join("figures");
    let _ = fs::remove_dir_all(&figures_dir);
    fs::create_dir_all(&figures_dir).map_err(|e| fail(&format!("creating {}", figures_dir.display()), &e))?;
    link_stages(plan, cache, &dir).map_err(|e| fail("linking stage outputs", &e))?;

    let mut stages = Vec::new();
    let mut metrics: Metrics = Vec::new();
    let (mut loss_figs, mut schedule_figs, mut scatter_figs) = (Vec::new(), Vec::new(), Vec::new());
    for (node, outcome) in plan.nodes().zip(outcomes) {
        let manifest = cache.manifest(&node.key)?;
        let seconds = match (&manifest, outcome.seconds) {
            (_, s) if s > 0.0 => format!("{s:.1}"),
            (Some(m), _) => format!("{:.1}", m.seconds),
            _ => "-".into(),
        };
        let status = match &outcome.status {
            crate::exec::scheduler::Status::Failed(m) => format!("failed: {m}"),
            crate::exec::scheduler::Status::Skipped(input) => format!("skipped (input {input} did not complete)"),
            s => s.label().to_string(),
        };
        stages.push(StageRow {
            id: node.id.clone(),
            kind: node.kind().name().into(),
            key: node.key[..12].into(),
            status,
            state: outcome.status.label(),
            seconds,
            link: manifest.is_some().then(|| format!("stages/{}", node.id)),
        });
        let Some(manifest) = manifest else { continue };
        let entry = cache.entry_dir(&node.key);
        let copy = |file: &str, title: String, into: &mut Vec<Figure>| -> Result<(), RunnerError> {
            let name = format!("{}-{file}", node.id);
            fs::copy(entry.join(file), figures_dir.join(&name)).map_err(|e| fail(&format!("copying {file}"), &e))?;
            into.push(Figure { title, src: format!("figures/{name}") });
            Ok(())
        };
        match node.kind() {
            StageKind::Schedule => copy("schedule.png", node.id.clone(), &mut schedule_figs)?,
            StageKind::Train => copy("loss.png", node.id.clone(), &mut loss_figs)?,
            StageKind::Evaluate => {
                for out in manifest.outputs.iter().filter(|o| o.path.starts_with("scatter_") && o.path.ends_with(".png")) {
                    let sample = out.path.trim_start_matches("scatter_").trim_end_matches(".png").to_string();
                    copy(&out.path, sample, &mut scatter_figs)?;
                }
                metrics.extend(read_metrics(&entry.join("metrics.csv"), &node.id)?);
            }
            _ => {}
        }
    }
    write_metrics(&dir.join("metrics.csv"), &metrics)?;

    let mut env = minijinja::Environment::new();
    env.add_template("report.html", TEMPLATE).map_err(|e| fail("report template", &e))?;
    let metric_rows: Vec<MetricRow> = metrics
        .iter()
        .map(|(e, s, m, v)| MetricRow { evaluate: e.clone(), stage: s.clone(), metric: m.clone(), value: format_value(*v) })
        .collect();
    let html = env
        .get_template("report.html")
        .and_then(|t| {
            t.render(minijinja::context! {
                name => &plan.name,
                description => &plan.description,
                pipeline_file => plan.path.display().to_string(),
                source => &plan.source,
                stages => minijinja::value::Serde(&stages),
                metrics => minijinja::value::Serde(&metric_rows),
                scatter_figures => minijinja::value::Serde(&scatter_figs),
                loss_figures => minijinja::value::Serde(&loss_figs),
                schedule_figures => minijinja::value::Serde(&schedule_figs),
                runner_version => env!("CARGO_PKG_VERSION"),
            })
        })
        .map_err(|e| fail("rendering the report", &e))?;
    let path = dir.join("report.html");
    write_atomically(&path, html.as_bytes()).map_err(|e| fail(&format!("writing {}", path.display()), &e))?;
    Ok(path)
}

fn format_value(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e9 { format!("{v:.0}") } else { format!("{v:.5}") }
}

fn read_metrics(path: &Path, evaluate: &str) -> Result<Metrics, RunnerError> {
    let fail = |e: &dyn std::fmt::Display| RunnerError::Report(format!("reading {}: {e}", path.display()));
    let df = read_csv(path).map_err(|e| fail(&e))?;
    let text = |name: &str| -> Result<Vec<String>, RunnerError> {
        let col = df.column(name).map_err(|e| fail(&e))?;
        let col = col.cast(&DataType::String).map_err(|e| fail(&e))?;
        Ok(col.str().map_err(|e| fail(&e))?.iter().map(|s| s.unwrap_or_default().to_string()).collect())
    };
    let values = df.column("value").map_err(|e| fail(&e))?.cast(&DataType::Float64).map_err(|e| fail(&e))?;
    let values: Vec<f64> = values.f64().map_err(|e| fail(&e))?.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    Ok(text("stage")?
        .into_iter()
        .zip(text("metric")?)
        .zip(values)
        .map(|((s, m), v)| (evaluate.to_string(), s, m, v))
        .collect())
}

fn write_metrics(path: &Path, metrics: &Metrics) -> Result<(), RunnerError> {
    let col = |name: &str, f: &dyn Fn(&(String, String, String, f64)) -> String| {
        Column::new(name.into(), metrics.iter().map(f).collect::<Vec<String>>())
    };
    let mut df = DataFrame::new_infer_height(vec![
        col("evaluate", &|r| r.0.clone()),
        col("stage", &|r| r.1.clone()),
        col("metric", &|r| r.2.clone()),
        Column::new("value".into(), metrics.iter().map(|r| r.3).collect::<Vec<f64>>()),
    ])
    .map_err(|e| RunnerError::Report(e.to_string()))?;
    let tmp = path.with_extension("csv.tmp");
    write_csv(&tmp, &mut df).map_err(|e| RunnerError::Report(e.to_string()))?;
    fs::rename(&tmp, path).map_err(|e| RunnerError::Report(format!("writing {}: {e}", path.display())))
}

/// `results/<pipeline>/stages/<id>` -> `../../.cache/<key>` for every cached stage.
fn link_stages(plan: &Plan, cache: &Cache, dir: &Path) -> std::io::Result<()> {
    let stages = dir.join("stages");
    let _ = fs::remove_dir_all(&stages);
    fs::create_dir_all(&stages)?;
    for node in plan.nodes().filter(|n| cache.is_cached(&n.key)) {
        let target = Path::new("..").join("..").join(".cache").join(&node.key);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, stages.join(&node.id))?;
        #[cfg(not(unix))]
        fs::write(stages.join(format!("{}.txt", node.id)), target.display().to_string())?;
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(tmp, path)
}
