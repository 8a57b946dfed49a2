//! Helpers shared by the integration tests: run the real binary on small pipelines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn runner(results: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--results")
        .arg(results)
        .args(args)
        .output()
        .expect("runner binary starts")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a pipeline file into `dir` and returns its path.
pub fn write_pipeline(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A complete but tiny DDPM + SMLD pipeline that runs in seconds.
pub fn tiny_pipeline(name: &str, train_steps: usize) -> String {
    format!(
        r#"name: {name}
description: tiny test pipeline
stages:
  data:   {{ kind: dataset,  params: {{ name: gmm, n: 2000, holdout: 400, seed: 0 }} }}
  linear: {{ kind: schedule, params: {{ type: linear, steps: 20 }} }}
  sigmas: {{ kind: schedule, params: {{ type: geometric, levels: 3 }} }}
  mlp:    {{ kind: model,    params: {{ arch: mlp, hidden: [16, 16], embedding_dim: 8 }} }}
  ddpm:
    kind: train
    needs: {{ data: data, schedule: linear, model: mlp }}
    params: {{ objective: eps, steps: {train_steps}, batch: 64 }}
  smld:
    kind: train
    needs: {{ data: data, schedule: sigmas, model: mlp }}
    params: {{ objective: dsm, steps: {train_steps}, batch: 64 }}
  ddpm_samples: {{ kind: sample, needs: {{ train: ddpm }}, params: {{ sampler: ancestral, n: 300 }} }}
  smld_samples: {{ kind: sample, needs: {{ train: smld }}, params: {{ sampler: annealed_langevin, n_steps_each: 5, n: 300 }} }}
  compare:
    kind: evaluate
    needs: {{ reference: data, samples: [ddpm_samples, smld_samples] }}
    params: {{ metrics: [sliced_wasserstein, mmd, mode_weights], projections: 16, mmd_points: 200 }}
"#
    )
}

/// Lines of stderr saying a stage was computed, as stage ids.
pub fn computed(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains(" computed in "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// Two `runner run` processes of the same pipeline started together; waits for both.
pub fn run_twice_concurrently(results: &Path, pipeline: &Path, jobs: &str) -> (Output, Output) {
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_runner"))
            .arg("--results")
            .arg(results)
            .args(["run", pipeline.to_str().unwrap(), "--jobs", jobs])
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("runner binary starts")
    };
    let (a, b) = (spawn(), spawn());
    (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
}

/// The names of the cache's entries (64 hex digits), sorted.
pub fn cache_keys(results: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(results.join(".cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    keys.sort();
    keys
}

/// The full cache key of each stage of the last run of pipeline `name`, by stage name.
pub fn last_run_keys(results: &Path, name: &str) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(results.join(name).join("last_run.json")).unwrap();
    let history: serde_json::Value = serde_json::from_str(&text).unwrap();
    history
        .as_object()
        .unwrap()
        .iter()
        .map(|(stage, record)| (stage.clone(), record["key"].as_str().unwrap().to_string()))
        .collect()
}

/// The line `runner plan` prints for `stage` (its name, kind, key prefix and reason).
pub fn plan_line<'a>(plan: &'a str, stage: &str) -> &'a str {
    plan.lines()
        .find(|l| l.trim_start().starts_with(&format!("{stage} ")))
        .unwrap_or_else(|| panic!("no stage `{stage}` in the plan:\n{plan}"))
}

/// The key prefix `runner plan` prints for `stage`.
pub fn plan_key(plan: &str, stage: &str) -> String {
    plan_line(plan, stage)
        .split_whitespace()
        .nth(2)
        .expect("a key after the name and kind")
        .to_string()
}
