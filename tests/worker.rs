//! `runner worker`: computes exactly one stage of a planned pipeline, found by its
//! key, and tells the driver by its exit code (0 in the cache, 1 failed, 2 invalid,
//! 3 not runnable); what a cluster executor's jobs run.

mod common;

use std::path::Path;

use common::{runner, stderr, stdout, tiny_pipeline, write_pipeline};

/// (stage name, full key) of every node, in plan order, as the driver plans them.
fn keys(path: &Path, sets: &[String]) -> Vec<(String, String)> {
    runner::pipeline::load(path, None, sets, &[])
        .unwrap()
        .nodes()
        .map(|n| (n.name(), n.key.clone()))
        .collect()
}

fn worker(results: &Path, path: &Path, key: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["worker", path.to_str().unwrap(), "--key", key];
    args.extend_from_slice(extra);
    runner(results, &args)
}

fn key_of<'a>(keys: &'a [(String, String)], stage: &str) -> &'a str {
    &keys.iter().find(|(n, _)| n == stage).unwrap().1
}

#[test]
fn worker_computes_one_stage_by_key_and_the_driver_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "work", &tiny_pipeline("work", 20));
    let keys = keys(&path, &[]);

    // An input missing from the cache: not runnable yet, and nothing is written.
    let ddpm = key_of(&keys, "ddpm");
    let out = worker(&results, &path, ddpm, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("stage ddpm cannot run yet") && err.contains("data ("),
        "{err}"
    );
    assert!(!results.join(".cache").join(ddpm).exists());

    // A key no stage of the plan has.
    let out = worker(&results, &path, &"0".repeat(64), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no stage of pipeline `work` has key"));

    // Every stage, one process each, in plan order: each commits its entry.
    for (name, key) in &keys {
        let out = worker(&results, &path, key, &[]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), format!("computed {key}"), "{name}");
        let manifest = results.join(".cache").join(key).join("manifest.json");
        assert!(manifest.is_file(), "{name}: no manifest");
    }
    // Asked again: already there.
    let data = key_of(&keys, "data");
    let out = worker(&results, &path, data, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).trim(), format!("cached {data}"));
    // `--force` recomputes it in place.
    let out = worker(&results, &path, data, &["--force"]);
    assert_eq!(stdout(&out).trim(), format!("computed {data}"));
    // A cached stage stays cached even when an input's entry has gone since.
    let smld = key_of(&keys, "smld");
    let sigmas = results.join(".cache").join(key_of(&keys, "sigmas"));
    let kept = dir.path().join("sigmas-entry");
    std::fs::rename(&sigmas, &kept).unwrap();
    let out = worker(&results, &path, smld, &[]);
    assert_eq!(
        stdout(&out).trim(),
        format!("cached {smld}"),
        "{}",
        stderr(&out)
    );
    std::fs::rename(&kept, &sigmas).unwrap();

    // The driver finds every stage cached: the workers' entries are its own.
    let out = runner(&results, &["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("all {} stages cached", keys.len())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn worker_plans_with_the_same_overrides_and_reports_a_failed_stage() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "wfail", &tiny_pipeline("wfail", 20));
    // The driver planned with an override: the worker, given the same `--set`, finds
    // the stage; without it, the key is not in its plan.
    let sets = vec!["ddpm.params.lr=1.0e30".to_string()];
    let keys = keys(&path, &sets);
    for stage in ["data", "linear", "mlp"] {
        let out = worker(&results, &path, key_of(&keys, stage), &[]);
        assert_eq!(out.status.code(), Some(0), "{stage}: {}", stderr(&out));
    }
    let ddpm = key_of(&keys, "ddpm");
    let out = worker(&results, &path, ddpm, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = worker(&results, &path, ddpm, &["--set", &sets[0]]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("stage ddpm failed") && err.contains("loss became"),
        "{err}"
    );
    assert!(!results.join(".cache").join(ddpm).exists());

    // A pipeline that does not parse is exit code 2, as for every command.
    let broken = write_pipeline(dir.path(), "broken", "name: broken\nstages: [\n");
    let out = worker(&results, &broken, ddpm, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
