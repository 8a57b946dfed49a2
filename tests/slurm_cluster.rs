//! `--executor slurm` against a real Slurm: the single-node cluster that
//! `scripts/slurm-local.sh start` sets up (CI does, then sets RUNNER_SLURM_TESTS=1).
//! Without that variable these tests say so and pass; with it, a cluster that does not
//! answer fails them. They run one at a time: they share the node and its queue.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// One test on the cluster at a time.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Whether to run: RUNNER_SLURM_TESTS=1 asks for the cluster, which must then answer.
fn cluster() -> Option<std::sync::MutexGuard<'static, ()>> {
    if std::env::var("RUNNER_SLURM_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set RUNNER_SLURM_TESTS=1 after `sudo bash scripts/slurm-local.sh start` to run the real-Slurm tests"
        );
        return None;
    }
    let sinfo = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .expect("RUNNER_SLURM_TESTS=1 but sinfo does not run: is Slurm installed?");
    let states = String::from_utf8_lossy(&sinfo.stdout).to_string();
    assert!(
        sinfo.status.success()
            && states
                .lines()
                .any(|s| ["idle", "mixed", "allocated"].contains(&s.trim())),
        "RUNNER_SLURM_TESTS=1 but the cluster has no usable node: {states} {}",
        String::from_utf8_lossy(&sinfo.stderr)
    );
    Some(CLUSTER.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Jobs Slurm knows (finished ones too, for MinJobAge), as (id, name, state).
fn queue() -> Vec<(String, String, String)> {
    let out = Command::new("squeue")
        .args(["--states=all", "-h", "-r", "-o", "%i|%j|%T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            Some((f.next()?.into(), f.next()?.into(), f.next()?.into()))
        })
        .collect()
}

/// A pipeline of its own per test (its `seed` changes every key, so jobs of one test
/// are never taken for another's).
fn pipeline(dir: &Path, seed: u64, train_steps: usize) -> std::path::PathBuf {
    let text = tiny_pipeline("tiny", train_steps).replace("seed: 0 }", &format!("seed: {seed} }}"));
    write_pipeline(dir, "tiny", &text)
}

fn slurm_run(results: &Path, file: &Path, extra: &[&str]) -> Output {
    slurm_command(results, file, extra).output().unwrap()
}

fn slurm_command(results: &Path, file: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
    c.arg("--results")
        .arg(results)
        .arg("run")
        .arg(file)
        .args(["--executor", "slurm", "--set", "slurm.poll=1s"])
        .args(extra)
        .current_dir(file.parent().unwrap());
    c
}

fn spawn(results: &Path, file: &Path) -> Child {
    slurm_command(results, file, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}: {:?}",
            queue()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The training array's jobs (named after the kind) in `state`.
fn trainings(prefix: &str, state: &str) -> Vec<String> {
    queue()
        .into_iter()
        .filter(|(_, name, s)| name.starts_with(prefix) && s == state)
        .map(|(id, _, _)| id)
        .collect()
}

#[test]
fn a_sweep_through_real_slurm_matches_a_local_run() {
    let Some(_cluster) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(pipeline(dir.path(), 11, 20)).unwrap()
        + "sweep:\n  ddpm.params.steps: [10, 20]\n";
    let file = write_pipeline(dir.path(), "tiny", &text);
    let local = dir.path().join("local");
    let out = runner(&local, &["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results = dir.path().join("results");
    let out = slurm_run(&results, &file, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let strip = |results: &Path| {
        std::fs::read_to_string(results.join("tiny/metrics.csv"))
            .unwrap()
            .lines()
            .filter(|l| !l.contains("_seconds"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&results), strip(&local));
    assert_eq!(cache_keys(&results), cache_keys(&local));
    assert!(err.contains("submitted as job"), "{err}");
    let verify = runner(&results, &["verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn a_failing_stage_on_real_slurm_is_reported_with_its_job_and_log() {
    let Some(_cluster) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(pipeline(dir.path(), 12, 20))
        .unwrap()
        .replace(
            "sampler: annealed_langevin, n_steps_each: 5",
            "sampler: annealed_langevin, n_steps_each: 5, step_lr: 1.0e38",
        );
    let file = write_pipeline(dir.path(), "tiny", &text);
    let results = dir.path().join("results");
    let out = slurm_run(&results, &file, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("x smld_samples         FAILED (job "), "{err}");
    assert!(err.contains(".log, last lines:"), "{err}");
    assert!(err.contains("samples are NaN or infinite"), "{err}");
    assert!(err.contains("skipped compare"), "{err}");
    assert_eq!(cache_keys(&results).len(), 7);
}

#[test]
fn ctrl_c_on_real_slurm_leaves_the_queue_empty() {
    let Some(_cluster) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), 13, 5_000_000);
    let results = dir.path().join("results");
    let child = spawn(&results, &file);
    wait_for("the trainings to run", Duration::from_secs(120), || {
        !trainings("runner-train-x2", "RUNNING").is_empty()
    });
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("cancelling 1 Slurm job of this run"), "{err}");
    let alive: Vec<_> = queue()
        .into_iter()
        .filter(|(_, name, s)| {
            name.starts_with("runner-")
                && ["PENDING", "RUNNING", "COMPLETING"].contains(&s.as_str())
        })
        .collect();
    assert!(alive.is_empty(), "still in the queue: {alive:?}");
    assert!(
        !trainings("runner-train-x2", "CANCELLED").is_empty(),
        "{:?}",
        queue()
    );
    let verify = runner(&results, &["verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn a_killed_driver_restarted_on_real_slurm_resubmits_nothing_running() {
    let Some(_cluster) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), 14, 150_000);
    let results = dir.path().join("results");
    let mut child = spawn(&results, &file);
    wait_for("the trainings to run", Duration::from_secs(120), || {
        !trainings("runner-train-x2", "RUNNING").is_empty()
    });
    let running = trainings("runner-train-x2", "RUNNING");
    child.kill().unwrap();
    child.wait().unwrap();
    let out = slurm_run(&results, &file, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("following job"), "{err}");
    // The trainings ran once, as the first driver's job.
    let all: Vec<String> = queue()
        .into_iter()
        .filter(|(id, name, _)| name.starts_with("runner-train-x2") && !id.is_empty())
        .map(|(id, _, _)| id.split('_').next().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let first = running[0].split('_').next().unwrap().to_string();
    assert!(all.contains(&first), "{all:?}");
    assert_eq!(cache_keys(&results).len(), 9);
    // No training job of this pipeline other than the first driver's.
    let ours: Vec<&String> = all
        .iter()
        .filter(|id| {
            let log = std::fs::read_dir(results.join(".cache/.slurm/logs")).unwrap();
            log.into_iter().any(|e| {
                std::fs::read_to_string(e.unwrap().path())
                    .unwrap_or_default()
                    .contains(&format!("(task {id}_"))
            })
        })
        .collect();
    assert_eq!(ours, [&first], "{all:?}");
}
