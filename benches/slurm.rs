//! The Slurm driver's overhead on a 1,000-point sweep (`cargo bench --bench slurm`;
//! `-- --quick` runs a 10-point one): how long it takes to submit the 1,000 stages that
//! become ready together, how many `sbatch` calls that makes, and the seconds from the
//! last job's end to the report. Jobs run through the stand-ins of
//! tests/fixtures/fake-slurm (each task a real `runner worker` process, started at
//! once), so what is measured is the driver, not a cluster's scheduling delays.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// An exact-score model and `points` cheap sample stages off it, one per seed: after the
/// four shared stages, `points` stages are ready at once.
fn sweep(points: usize) -> String {
    let seeds: Vec<String> = (0..points).map(|i| i.to_string()).collect();
    format!(
        "name: overhead
stages:
  data:   {{ kind: dataset,  params: {{ name: gmm, n: 200, holdout: 50, seed: 0 }} }}
  linear: {{ kind: schedule, params: {{ type: linear, steps: 20 }} }}
  exact:  {{ kind: model,    params: {{ arch: exact }} }}
  oracle: {{ kind: train, needs: {{ data: data, schedule: linear, model: exact }} }}
  draw:   {{ kind: sample, needs: {{ train: oracle }}, params: {{ sampler: ddim, steps: 2, n: 10, seed: 0 }} }}
sweep:
  draw.params.seed: [{}]
",
        seeds.join(", ")
    )
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn main() {
    run(&std::env::args().collect::<Vec<_>>());
}

/// The benchmark, given its command line (tests/benches.rs runs it with `--quick`).
pub fn run(args: &[String]) {
    let quick = args.iter().any(|a| a == "--quick");
    let points = if quick { 10 } else { 1000 };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("overhead.yaml");
    std::fs::write(&file, sweep(points)).expect("write the sweep");
    let state = dir.path().join("slurm");
    std::fs::create_dir_all(&state).unwrap();
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-slurm");
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let results = dir.path().join("results");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--results")
        .arg(&results)
        .arg("run")
        .arg(&file)
        .args(["--executor", "slurm", "--set", "slurm.poll=1s"])
        .env("PATH", &path)
        .env("FAKE_SLURM_DIR", &state)
        // Tasks start once the submission is over, so the workers do not compete with
        // the driver for this machine's cores while it is measured.
        .env("FAKE_SLURM_START_DELAY", if quick { "0" } else { "20" })
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("runner starts");
    // Each line of the driver's output with the moment it arrived.
    let lines: Vec<(f64, String)> = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .map(|l| (unix_seconds(), l))
        .collect();
    let status = child.wait().unwrap();
    let total = started.elapsed().as_secs_f64();
    let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "the run failed:\n{}", text.join("\n"));
    let at = |f: &dyn Fn(&str) -> bool| -> Vec<f64> {
        lines
            .iter()
            .filter(|(_, l)| f(l))
            .map(|(t, _)| *t)
            .collect()
    };
    // The trainings' commit releases the sweep's stages; the last of them submitted.
    let released = at(&|l| l.trim_start().starts_with("oracle") && l.contains(" computed in "))
        .first()
        .copied()
        .expect("oracle computed");
    let submitted = at(&|l| l.trim_start().starts_with("draw[") && l.contains("submitted as job"))
        .into_iter()
        .fold(f64::MIN, f64::max);
    let report = at(&|l| l.starts_with("report: "))
        .first()
        .copied()
        .expect("a report");
    // The last job's end: the latest commit among the cache's entries.
    let last_commit = std::fs::read_dir(results.join(".cache"))
        .unwrap()
        .filter_map(|e| {
            let m = std::fs::read_to_string(e.ok()?.path().join("manifest.json")).ok()?;
            let m: serde_json::Value = serde_json::from_str(&m).ok()?;
            m["finished_unix_ms"].as_f64()
        })
        .fold(f64::MIN, f64::max)
        / 1e3;
    let calls = std::fs::read_to_string(state.join("calls")).unwrap_or_default();
    let sbatch = calls.lines().filter(|l| l.starts_with("sbatch ")).count();
    let in_sbatch: f64 = std::fs::read_to_string(state.join("sbatch-seconds"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .sum();
    let polls = calls
        .lines()
        .filter(|l| l.starts_with("sacct ") || l.starts_with("squeue "))
        .count();
    // What the end-to-report time is made of: one poll of the stand-in sacct over every
    // job, and writing the report (`runner report` rebuilds the same one from the cache).
    let timed = |program: &str, args: &[&str]| {
        let start = Instant::now();
        let mut c = Command::new(program);
        c.args(args)
            .env("PATH", &path)
            .env("FAKE_SLURM_DIR", &state)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        assert!(c.status().unwrap().success(), "{program} {args:?} failed");
        start.elapsed().as_secs_f64()
    };
    let one_poll = timed(
        "sacct",
        &[
            "-X",
            "-n",
            "-P",
            "--starttime=2000-01-01T00:00:00",
            "--jobs=101,102,103,104,105",
        ],
    );
    let report_alone = timed(
        env!("CARGO_BIN_EXE_runner"),
        &[
            "--results",
            results.to_str().unwrap(),
            "report",
            file.to_str().unwrap(),
        ],
    );
    println!(
        "slurm driver, {points}-point sweep ({} stages), poll every 1 s:",
        points + 4
    );
    println!(
        "  submitting the {points} stages ready together   {:8.3} s",
        submitted - released
    );
    println!("  sbatch calls                                 {sbatch:8}");
    println!("  of that, inside the stand-in sbatch          {in_sbatch:8.3} s (all calls)");
    println!("  sacct/squeue calls                           {polls:8}");
    println!(
        "  last job's end to the report                 {:8.3} s",
        report - last_commit
    );
    println!("  of that, one stand-in sacct poll             {one_poll:8.3} s");
    println!("  of that, writing the report (runner report)  {report_alone:8.3} s");
    println!("  whole run                                    {total:8.3} s");
}
