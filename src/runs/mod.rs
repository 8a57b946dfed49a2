//! Runs: every `runner run` is recorded under `results/<pipeline>/runs/<id>/`, so
//! results can be kept, listed, shown and compared after later runs replace
//! `results/<pipeline>/report.html` (which is always the latest). A record holds the
//! command line, the overrides and profile, the pipeline file as read, runner's
//! version, the device and machine, the times, every stage's key, parameters and
//! status, and every metric; beside it are the run's `report.html` and `metrics.csv`
//! (copies: a few kilobytes), its figures (hard links to the published ones, so a run
//! costs no space for them and keeps them when a later run redraws them) and links to
//! its stages' cache entries.
//!
//! Ids are UTC times with a short random tail (`20261202-011530-3fa`): they sort by
//! time, name a folder, and are short enough to type (any unique prefix will do).

pub mod diff;
pub mod show;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::error::RunnerError;
use crate::exec::{Outcome, Status};
use crate::machine::Machine;
use crate::pipeline::Plan;
use crate::report::table::MetricRecord;
use crate::report::{Built, Header};

const RECORD: &str = "run.json";

/// How a run was asked for: what `runner report` needs to rebuild its configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// The pipeline file as given on the command line.
    pub file: String,
    pub profile: Option<String>,
    pub set: Vec<String>,
    pub sweep: Vec<String>,
}

impl Invocation {
    /// `--profile`, `--set` and `--sweep` as a user types them.
    pub fn overrides(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.profile {
            out.push(format!("--profile {p}"));
        }
        out.extend(self.set.iter().map(|s| format!("--set {s}")));
        out.extend(self.sweep.iter().map(|s| format!("--sweep {s}")));
        out
    }
}

/// One stage as the run saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRun {
    /// Stage id with its sweep label.
    pub name: String,
    pub kind: String,
    pub key: String,
    /// `computed`, `cached`, `failed`, `skipped` or `missing`.
    pub status: String,
    /// Why it failed, or which input it waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub seconds: f64,
    /// Its resolved parameters (what the key hashes).
    pub params: serde_json::Value,
}

/// `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub pipeline: String,
    pub command: Vec<String>,
    pub invocation: Invocation,
    pub runner_version: String,
    pub device: String,
    pub machine: Machine,
    /// Local time the run started, RFC 3339.
    pub started: String,
    pub started_unix_ms: u64,
    #[serde(default)]
    pub finished_unix_ms: Option<u64>,
    /// `running` (or killed), `succeeded`, `failed` or `interrupted`.
    pub status: String,
    pub stages: Vec<StageRun>,
    pub metrics: Vec<MetricRecord>,
}

impl RunRecord {
    /// Seconds from start to end, once finished.
    pub fn seconds(&self) -> Option<f64> {
        self.finished_unix_ms
            .map(|end| end.saturating_sub(self.started_unix_ms) as f64 / 1000.0)
    }

    /// The command line as a user would type it again.
    pub fn command_line(&self) -> String {
        let mut words = vec!["runner".to_string()];
        words.extend(self.command.iter().skip(1).map(|w| quote(w)));
        words.join(" ")
    }

    /// What the report's header says about this run.
    pub fn header(&self) -> Header {
        Header {
            run: Some(self.id.clone()),
            command: self.command_line(),
            overrides: self.invocation.overrides(),
            date: self.started.clone(),
            machine: self.machine.line(),
            device: self.device.clone(),
            seconds: self.seconds(),
        }
    }

    /// The run's folder under `results`.
    pub fn dir(&self, results: &Path) -> PathBuf {
        results.join(&self.pipeline).join("runs").join(&self.id)
    }

    /// Every cache key the run's stages have.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.key.as_str())
    }
}

/// A word of a command line, quoted for a POSIX shell when it needs to be.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A run in progress: its record, written when it starts and again when it ends.
pub struct Run {
    pub record: RunRecord,
    dir: PathBuf,
}

fn unix_ms() -> u64 {
    crate::cache::store::unix_ms(SystemTime::now())
}

/// A new id: the UTC time to the second and three hex digits from the clock's
/// nanoseconds and the process id (two runs started in the same second differ).
fn new_id() -> String {
    let now = chrono::Utc::now();
    let tail =
        (now.timestamp_subsec_nanos() ^ std::process::id().wrapping_mul(2_654_435_761)) & 0xfff;
    format!("{}-{tail:03x}", now.format("%Y%m%d-%H%M%S"))
}

impl Run {
    /// Records a run of `plan` as started: its folder, the pipeline file as read and a
    /// record with status `running`.
    pub fn begin(
        results: &Path,
        plan: &Plan,
        invocation: Invocation,
        device: &str,
    ) -> Result<Run, RunnerError> {
        let record = RunRecord {
            id: new_id(),
            pipeline: plan.name.clone(),
            command: std::env::args().collect(),
            invocation,
            runner_version: env!("CARGO_PKG_VERSION").into(),
            device: device.into(),
            machine: Machine::this(),
            started: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            started_unix_ms: unix_ms(),
            finished_unix_ms: None,
            status: "running".into(),
            stages: Vec::new(),
            metrics: Vec::new(),
        };
        let dir = record.dir(results);
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, &e))?;
        let source = dir.join("pipeline.yaml");
        crate::artifacts::replace(&source, plan.source.as_bytes())
            .map_err(|e| io_error(&source, &e))?;
        let run = Run { record, dir };
        run.save()?;
        Ok(run)
    }

    fn save(&self) -> Result<(), RunnerError> {
        let path = self.dir.join(RECORD);
        let text = serde_json::to_string_pretty(&self.record).expect("run records serialize");
        crate::artifacts::replace(&path, text.as_bytes()).map_err(|e| io_error(&path, &e))
    }

    /// The header of the report this run writes (its time so far).
    pub fn header(&self) -> Header {
        let mut header = self.record.header();
        header.seconds = Some((unix_ms() - self.record.started_unix_ms) as f64 / 1000.0);
        header
    }

    /// Records how the stages ended and the metrics; `status` is `succeeded`, `failed`
    /// or `interrupted`.
    pub fn end(
        &mut self,
        plan: &Plan,
        outcomes: &[Outcome],
        status: &str,
    ) -> Result<(), RunnerError> {
        self.record.stages = stage_runs(plan, outcomes);
        self.record.finished_unix_ms = Some(unix_ms());
        self.record.status = status.into();
        self.save()
    }

    /// Keeps the published report (`results/<pipeline>/`) as this run's: the page and
    /// table copied, the figures hard-linked, the stages linked to their entries.
    pub fn keep_report(
        &mut self,
        plan: &Plan,
        cache: &Cache,
        published: &Path,
        built: &Built,
    ) -> Result<(), RunnerError> {
        self.record.metrics = built.metrics.clone();
        self.save()?;
        for file in ["report.html", "metrics.csv"] {
            let from = published.join(file);
            if from.is_file() {
                let to = self.dir.join(file);
                fs::copy(&from, &to).map_err(|e| io_error(&to, &e))?;
            }
        }
        let figures = self.dir.join("figures");
        fs::create_dir_all(&figures).map_err(|e| io_error(&figures, &e))?;
        if let Ok(entries) = fs::read_dir(published.join("figures")) {
            for entry in entries.flatten() {
                let to = figures.join(entry.file_name());
                if fs::hard_link(entry.path(), &to).is_err() {
                    fs::copy(entry.path(), &to).map_err(|e| io_error(&to, &e))?;
                }
            }
        }
        crate::report::link_stages(plan, cache, &self.dir, 3)
            .map_err(|e| io_error(&self.dir.join("stages"), &e))
    }
}

fn io_error(path: &Path, e: &dyn std::fmt::Display) -> RunnerError {
    RunnerError::Report(format!("writing {}: {e}", path.display()))
}

/// Every stage of the plan with its outcome, in plan order.
pub fn stage_runs(plan: &Plan, outcomes: &[Outcome]) -> Vec<StageRun> {
    outcomes
        .iter()
        .map(|o| {
            let node = &plan.graph[o.node];
            let message = match &o.status {
                Status::Failed(m) => Some(m.clone()),
                Status::Skipped(input) => Some(format!("input `{input}` did not complete")),
                Status::Cancelled(what) => Some(what.clone()),
                _ => None,
            };
            StageRun {
                name: node.name(),
                kind: node.kind().name().into(),
                key: node.key.clone(),
                status: o.status.label().into(),
                message,
                seconds: o.seconds,
                params: node.params.clone(),
            }
        })
        .collect()
}

/// Every recorded run under `results` (of pipeline `name`, when given), oldest first.
pub fn list(results: &Path, name: Option<&str>) -> Vec<RunRecord> {
    let mut runs = Vec::new();
    let pipelines: Vec<PathBuf> = match name {
        Some(name) => vec![results.join(name)],
        None => fs::read_dir(results)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default(),
    };
    for pipeline in pipelines {
        let Ok(entries) = fs::read_dir(pipeline.join("runs")) else {
            continue;
        };
        for entry in entries.flatten() {
            let record = fs::read(entry.path().join(RECORD))
                .ok()
                .and_then(|b| serde_json::from_slice::<RunRecord>(&b).ok());
            runs.extend(record);
        }
    }
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    runs
}

/// The run a user names: an id or a unique prefix of one, or a pipeline's name (its
/// latest run); `None` is the latest run of all.
pub fn find(results: &Path, query: Option<&str>) -> Result<RunRecord, RunnerError> {
    let all = list(results, None);
    let Some(query) = query else {
        return all.into_iter().next_back().ok_or_else(|| {
            RunnerError::Usage(format!(
                "no runs are recorded under {}; `runner run FILE` records one",
                results.display()
            ))
        });
    };
    if let Some(latest) = all.iter().rev().find(|r| r.pipeline == query) {
        return Ok(latest.clone());
    }
    let matching: Vec<&RunRecord> = all.iter().filter(|r| r.id.starts_with(query)).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(RunnerError::Usage(format!(
            "no run `{query}` under {}; `runner runs` lists them",
            results.display()
        ))),
        many => Err(RunnerError::Usage(format!(
            "`{query}` names {} runs ({}); give more of the id",
            many.len(),
            many.iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Every recorded run split into the `keep` latest of each pipeline and the older
/// rest (`keep` of `None`: all are kept).
pub fn split(results: &Path, keep: Option<usize>) -> (Vec<RunRecord>, Vec<RunRecord>) {
    let mut by_pipeline: std::collections::BTreeMap<String, Vec<RunRecord>> = Default::default();
    for run in list(results, None) {
        by_pipeline
            .entry(run.pipeline.clone())
            .or_default()
            .push(run);
    }
    let (mut kept, mut older) = (Vec::new(), Vec::new());
    for mut runs in by_pipeline.into_values() {
        let cut = keep.map_or(0, |k| runs.len().saturating_sub(k));
        kept.extend(runs.split_off(cut));
        older.extend(runs);
    }
    (kept, older)
}

/// Deletes the records of `runs`.
pub fn remove(results: &Path, runs: &[RunRecord]) -> Result<(), RunnerError> {
    for run in runs {
        let dir = run.dir(results);
        fs::remove_dir_all(&dir)
            .map_err(|e| RunnerError::Report(format!("removing {}: {e}", dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_commands_quote_what_needs_it() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = new_id();
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), "20261202-011530-3fa".len());
        assert_eq!(quote("ddpm.params.lr=3e-4"), "ddpm.params.lr=3e-4");
        assert_eq!(
            quote("mlp.params.hidden=[64, 64]"),
            "'mlp.params.hidden=[64, 64]'"
        );
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
