//! `--executor slurm` against stand-ins for `sbatch`, `sacct`, `squeue` and `scancel`
//! (tests/fixtures/fake-slurm): scripts on PATH that record their arguments, run the
//! submitted tasks in the background as Slurm would, and answer in Slurm's formats,
//! with rules for the cases a real cluster produces rarely (a timeout, an out-of-memory
//! kill, a preemption, accounting disabled). tests/slurm_cluster.rs runs the same
//! executor against a real Slurm.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct FakeSlurm {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    results: PathBuf,
    file: PathBuf,
}

impl FakeSlurm {
    fn new(pipeline: &str) -> FakeSlurm {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let state = root.join("slurm");
        std::fs::create_dir_all(&state).unwrap();
        let file = write_pipeline(&root, "tiny", pipeline);
        FakeSlurm {
            results: root.join("results"),
            _dir: dir,
            root,
            state,
            file,
        }
    }

    fn command(&self, results: &Path, args: &[&str]) -> Command {
        let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-slurm");
        let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
        let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
        c.arg("--results")
            .arg(results)
            .args(args)
            .env("PATH", path)
            .env("FAKE_SLURM_DIR", &self.state)
            .current_dir(&self.root);
        c
    }

    /// `runner run` of the pipeline through Slurm, polling every second.
    fn run(&self, extra: &[&str]) -> Output {
        let mut args = vec!["run", self.file.to_str().unwrap(), "--executor", "slurm"];
        args.extend(["--set", "slurm.poll=1s"]);
        args.extend(extra);
        self.command(&self.results, &args).output().unwrap()
    }

    fn spawn(&self) -> Child {
        let args = [
            "run",
            self.file.to_str().unwrap(),
            "--executor",
            "slurm",
            "--set",
            "slurm.poll=1s",
        ];
        self.command(&self.results, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn key(&self, stage: &str) -> String {
        let out = self
            .command(&self.results, &["plan", self.file.to_str().unwrap()])
            .output()
            .unwrap();
        plan_key(&stdout(&out), stage)
    }

    fn rule(&self, stage: &str, behaviour: &str) {
        let line = format!("{} {behaviour}\n", self.key(stage));
        let rules = self.state.join("rules");
        let mut text = std::fs::read_to_string(&rules).unwrap_or_default();
        text.push_str(&line);
        std::fs::write(rules, text).unwrap();
    }

    /// The command lines the stand-ins were called with.
    fn calls(&self, command: &str) -> Vec<String> {
        std::fs::read_to_string(self.state.join("calls"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&format!("{command} ")))
            .map(String::from)
            .collect()
    }

    /// The scripts submitted that run `stage` (found by its key).
    fn submissions_of(&self, stage: &str) -> usize {
        let key = self.key(stage);
        self.calls("sbatch")
            .iter()
            .filter(|c| {
                let script = c.split_whitespace().last().unwrap();
                std::fs::read_to_string(script).unwrap().contains(&key)
            })
            .count()
    }

    /// States of every job and task the stand-ins know, by id.
    fn states(&self) -> Vec<(String, String)> {
        let mut states: Vec<(String, String)> = std::fs::read_dir(self.state.join("jobs"))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap())
                    .filter(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
                    .map(|e| {
                        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                        let state = text.split('|').next().unwrap_or_default().to_string();
                        (e.file_name().to_string_lossy().into_owned(), state)
                    })
                    .collect()
            })
            .unwrap_or_default();
        states.sort();
        states
    }
}

fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// metrics.csv without the timing rows, which differ between any two runs.
fn metrics_without_times(results: &Path) -> String {
    std::fs::read_to_string(results.join("tiny/metrics.csv"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("_seconds"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_run_through_slurm_matches_a_local_run_in_arrays_of_ready_stages() {
    let slurm = FakeSlurm::new(&tiny_pipeline("tiny", 20));
    let local_results = slurm.root.join("local");
    let local = runner(&local_results, &["run", slurm.file.to_str().unwrap()]);
    assert!(local.status.success(), "{}", stderr(&local));

    let out = slurm.run(&[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // Same results, same cache entries.
    assert_eq!(
        metrics_without_times(&slurm.results),
        metrics_without_times(&local_results)
    );
    assert_eq!(cache_keys(&slurm.results), cache_keys(&local_results));
    assert_eq!(cache_keys(&slurm.results).len(), 9);
    // Every stage ran as a job, its id printed by its label; stages of one kind that
    // were ready together went out as one array: 9 stages in 6 submissions (dataset,
    // schedules, model, trainings, samplers, evaluation).
    for stage in [
        "data",
        "linear",
        "sigmas",
        "mlp",
        "ddpm",
        "smld",
        "ddpm_samples",
        "compare",
    ] {
        assert!(
            err.lines()
                .any(|l| l.trim_start().starts_with(stage) && l.contains("submitted as job 10")),
            "no job id printed for {stage}:\n{err}"
        );
    }
    assert_eq!(
        slurm.calls("sbatch").len(),
        6,
        "{:?}",
        slurm.calls("sbatch")
    );
    let arrays: Vec<String> = slurm
        .calls("sbatch")
        .iter()
        .map(|c| std::fs::read_to_string(c.split_whitespace().last().unwrap()).unwrap())
        .filter(|s| s.contains("#SBATCH --array=0-1%100"))
        .collect();
    assert_eq!(
        arrays.len(),
        3,
        "schedules, trainings and samplers are arrays of 2"
    );
    // Every sacct call names its start time (its default window begins at midnight).
    let sacct = slurm.calls("sacct");
    assert!(!sacct.is_empty());
    assert!(
        sacct.iter().all(|c| c.contains("--starttime=")),
        "{sacct:?}"
    );
    assert!(
        slurm.calls("squeue").is_empty(),
        "accounting works: no squeue needed"
    );
    // The report's stage table names each job and links its log.
    let report = std::fs::read_to_string(slurm.results.join("tiny/report.html"))
        .unwrap()
        .replace("&#x2f;", "/");
    assert!(
        report.contains("<th>Slurm job</th>"),
        "no job column in the report"
    );
    assert!(
        report.contains(r#"(<a href="../.cache/.slurm/logs/ddpm-"#),
        "no log link in the report"
    );
    let log = std::fs::read_dir(slurm.results.join(".cache/.slurm/logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ddpm-")
        })
        .expect("ddpm's log");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.starts_with("== ddpm: Slurm job 10"), "{log}");
    // The cache is sound, and the driver's own files are not taken for entries.
    let verify = runner(&slurm.results, &["verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    // Run again: everything is cached, nothing is submitted.
    let again = slurm.run(&[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(slurm.calls("sbatch").len(), 6);
}

#[test]
fn plan_prints_the_scripts_a_slurm_run_would_submit_wave_by_wave() {
    let slurm = FakeSlurm::new(&tiny_pipeline("tiny", 20));
    let out = slurm
        .command(
            &slurm.results,
            &["plan", slurm.file.to_str().unwrap(), "--executor", "slurm"],
        )
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("--executor slurm: 6 sbatch submissions"),
        "{text}"
    );
    for wave in 1..=4 {
        assert!(
            text.contains(&format!("# wave {wave}\n#!/bin/bash")),
            "{text}"
        );
    }
    assert!(!text.contains("# wave 5"), "{text}");
    assert!(text.contains("#SBATCH --array=0-1%100"), "{text}");
    // Planning submits and writes nothing.
    assert!(slurm.calls("sbatch").is_empty());
    assert!(!slurm.results.exists());
    // `run --dry-run` prints the same.
    let dry = slurm
        .command(
            &slurm.results,
            &[
                "run",
                slurm.file.to_str().unwrap(),
                "--executor",
                "slurm",
                "--dry-run",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(stdout(&dry), text);
}

#[test]
fn a_failing_stage_is_reported_with_its_job_and_the_end_of_its_log() {
    let text = tiny_pipeline("tiny", 20).replace(
        "sampler: annealed_langevin, n_steps_each: 5",
        "sampler: annealed_langevin, n_steps_each: 5, step_lr: 1.0e38",
    );
    let slurm = FakeSlurm::new(&text);
    let out = slurm.run(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("x smld_samples         FAILED (job 10"),
        "{err}"
    );
    assert!(err.contains("the worker failed (Slurm job 10"), "{err}");
    assert!(err.contains("exit code 1:0"), "{err}");
    assert!(err.contains(".log, last lines:"), "{err}");
    assert!(
        err.contains("| error: stage smld_samples failed: 17 of 300 samples")
            || err.contains("samples are NaN or infinite"),
        "the log's last lines are shown:\n{err}"
    );
    assert!(
        err.contains("skipped compare: input `smld_samples` did not complete"),
        "{err}"
    );
    assert!(err.contains("1 failed, 1 skipped"), "{err}");
    // Everything else finished and is cached.
    assert_eq!(cache_keys(&slurm.results).len(), 7);
}

#[test]
fn slurm_end_states_fail_their_stage_with_what_to_change() {
    let slurm = FakeSlurm::new(&tiny_pipeline("tiny", 20));
    slurm.rule("ddpm", "TIMEOUT");
    slurm.rule("smld", "OUT_OF_MEMORY");
    slurm.rule("mlp", "NODE_FAIL");
    let out = slurm.run(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("failed  mlp: the job's node failed"), "{err}");
    assert!(
        !err.contains("the job reached its time limit"),
        "mlp blocks the trainings: {err}"
    );
    std::fs::remove_file(slurm.state.join("rules")).unwrap();
    slurm.rule("ddpm", "TIMEOUT");
    slurm.rule("smld", "OUT_OF_MEMORY");
    let out = slurm.run(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed  ddpm: the job reached its time limit; raise `time` in `resources:`"),
        "{err}"
    );
    assert!(err.contains("TIMEOUT)"), "{err}");
    assert!(
        err.contains("failed  smld: the job ran out of memory; raise `mem` in `resources:`"),
        "{err}"
    );
    assert!(err.contains("skipped ddpm_samples"), "{err}");
}

/// A job Slurm calls COMPLETED that left no entry (here: it never ran) is a failure.
#[test]
fn a_completed_job_without_its_entry_fails_its_stage() {
    let slurm = FakeSlurm::new(&tiny_pipeline("tiny", 20));
    slurm.rule("linear", "COMPLETED");
    let out = slurm.run(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed  linear: job 10")
            && err.contains("ended COMPLETED but its stage is not in the cache"),
        "{err}"
    );
    assert!(err.contains("no log at"), "{err}");
}

#[test]
fn a_preempted_job_is_submitted_again() {
    let slurm = FakeSlurm::new(&tiny_pipeline("tiny", 20));
    slurm.rule("ddpm", "PREEMPTED_ONCE");
    let out = slurm.run(&[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("was preempted: submitting it again"), "{err}");
    assert_eq!(slurm.submissions_of("ddpm"), 2);
    assert_eq!(slurm.submissions_of("smld"), 1);
    assert_eq!(cache_keys(&slurm.results).len(), 9);
}

/// Slurm requeueing a task itself (a node lost, a preemption with requeue): the same
/// job id comes back through REQUEUED and PENDING, and the driver keeps following it.
#[test]
fn a_job_slurm_requeues_itself_is_followed_under_its_id() {
    let slurm = FakeSlurm::new(&tiny_pipeline("tiny", 20));
    slurm.rule("ddpm", "REQUEUED");
    let out = slurm.run(&[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(slurm.submissions_of("ddpm"), 1);
    assert!(!err.contains("preempted"), "{err}");
    assert_eq!(cache_keys(&slurm.results).len(), 9);
}

#[test]
fn without_accounting_jobs_are_followed_with_squeue() {
    let slurm = FakeSlurm::new(&tiny_pipeline("tiny", 20));
    std::fs::write(slurm.state.join("accounting_disabled"), "").unwrap();
    let out = slurm.run(&[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Slurm accounting is not available here"),
        "{err}"
    );
    // Told once, then squeue only.
    assert_eq!(
        err.matches("accounting is not available").count(),
        1,
        "{err}"
    );
    assert_eq!(slurm.calls("sacct").len(), 1);
    assert!(slurm.calls("squeue").len() >= 4);
    assert_eq!(cache_keys(&slurm.results).len(), 9);
}

#[test]
fn ctrl_c_cancels_the_runs_jobs() {
    let slurm = FakeSlurm::new(&tiny_pipeline("tiny", 20));
    slurm.rule("ddpm", "HOLD");
    slurm.rule("smld", "HOLD");
    let child = slurm.spawn();
    wait_for("the trainings' submission", Duration::from_secs(60), || {
        slurm.submissions_of("ddpm") == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("cancelling 1 Slurm job of this run: scancel 10"),
        "{err}"
    );
    assert_eq!(slurm.calls("scancel").len(), 1);
    // Nothing of the run is left queued or running.
    let states = slurm.states();
    assert!(
        states.iter().all(|(_, s)| s != "PENDING" && s != "RUNNING"),
        "{states:?}"
    );
    assert!(states.iter().any(|(_, s)| s == "CANCELLED"), "{states:?}");
    assert!(err.contains("cancelled: job 10"), "{err}");
    let verify = runner(&slurm.results, &["verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn a_killed_driver_started_again_follows_the_jobs_still_running() {
    let slurm = FakeSlurm::new(&tiny_pipeline("tiny", 20));
    slurm.rule("ddpm", "SLOW");
    let mut child = slurm.spawn();
    wait_for("the trainings' submission", Duration::from_secs(60), || {
        slurm.submissions_of("ddpm") == 1
    });
    // Killed once it has recorded the job (it waits FAKE_SLURM_SLOW seconds to run).
    let (records, ddpm) = (slurm.results.join(".cache/.slurm/jobs"), slurm.key("ddpm"));
    wait_for("the job's record", Duration::from_secs(30), || {
        std::fs::read_dir(&records).is_ok_and(|mut entries| {
            entries.any(|e| e.unwrap().file_name().to_string_lossy().starts_with(&ddpm))
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(slurm.states().iter().any(|(_, s)| s == "PENDING"));
    let out = slurm.run(&[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("following job 10"), "{err}");
    assert_eq!(slurm.submissions_of("ddpm"), 1, "ddpm was submitted again");
    assert_eq!(cache_keys(&slurm.results).len(), 9);
}

/// A profile picks the executor and lays its `resources:` over the file's; each stage's
/// script asks for what its kind and id get, GPUs only where they are meant to go.
#[test]
fn a_profile_picks_slurm_and_its_resources_reach_each_stages_script() {
    let text = tiny_pipeline("tiny", 20)
        + "resources:\n  default: { time: 30m, mem: 2G }\nprofiles:\n  cluster:\n    description: on the cluster\n    executor: slurm\n    resources:\n      default: { gpus: 1, partition: cpu }\n      train: { partition: gpu, time: 12h }\n      stages: { smld: { extra: [--exclusive] } }\n    slurm: { array_limit: 7 }\n";
    let slurm = FakeSlurm::new(&text);
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", slurm.file.to_str().unwrap(), "--profile", "cluster"];
        args.extend(extra);
        let out = slurm.command(&slurm.results, &args).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let text = plan(&["--device", "cuda"]);
    let scripts: Vec<&str> = text.split("#!/bin/bash\n").skip(1).collect();
    let script_of = |stage: &str| {
        *scripts
            .iter()
            .find(|s| s.lines().any(|l| l == format!("  {stage}")))
            .unwrap_or_else(|| panic!("no script for {stage} in {text}"))
    };
    let data = script_of("data");
    for line in [
        "#SBATCH --mem=2048M",
        "#SBATCH --time=00:30:00",
        "#SBATCH --partition=cpu",
    ] {
        assert!(data.contains(line), "{line} not in {data}");
    }
    assert!(!data.contains("--gres"), "{data}");
    assert!(data.contains("--device cpu"), "{data}");
    let ddpm = script_of("ddpm");
    for line in [
        "#SBATCH --time=12:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --mem=2048M",
    ] {
        assert!(ddpm.contains(line), "{line} not in {ddpm}");
    }
    assert!(ddpm.contains("--device cuda"), "{ddpm}");
    assert!(
        !ddpm.contains("--exclusive") && !ddpm.contains("--array"),
        "{ddpm}"
    );
    // smld asks for more than ddpm, so the two trainings are two submissions.
    assert!(script_of("smld").contains("#SBATCH --exclusive"));
    assert!(script_of("ddpm_samples").contains("#SBATCH --gres=gpu:1"));
    assert!(!script_of("compare").contains("--gres"));
    assert!(text.contains("#SBATCH --array=0-1%7"), "{text}");
    assert!(
        text.contains("--profile cluster"),
        "workers plan with the profile: {text}"
    );
    // The command line wins over the profile.
    assert!(!plan(&["--executor", "local"]).contains("sbatch"));
}

/// `gc` deletes what the driver left that nothing needs: the copies of runner, the
/// pipeline and the scripts once no job is in flight, and the logs of stages no longer
/// in the cache; logs of the stages it keeps stay.
#[test]
fn gc_deletes_the_drivers_leftovers_and_keeps_the_logs_of_kept_stages() {
    let slurm = FakeSlurm::new(&tiny_pipeline("tiny", 20));
    let out = slurm.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = slurm.results.join(".cache/.slurm");
    let count = |sub: &str| std::fs::read_dir(dir.join(sub)).map_or(0, |d| d.count());
    assert_eq!(count("bin"), 1);
    assert_eq!(count("logs"), 9);
    let file = slurm.file.to_str().unwrap();
    let dry = runner(&slurm.results, &["gc", file, "--dry-run"]);
    assert!(stdout(&dry).contains("would free"), "{}", stdout(&dry));
    assert_eq!(count("bin"), 1, "a dry run deletes nothing");
    let gc = runner(&slurm.results, &["gc", file]);
    let text = stdout(&gc);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(text.contains("files of Slurm runs"), "{text}");
    assert_eq!(
        (count("bin"), count("pipelines"), count("scripts")),
        (0, 0, 0)
    );
    assert_eq!(count("logs"), 9, "the stages are kept, so are their logs");
    // An entry deleted (as `verify --remove` does): its log goes at the next gc.
    let ddpm = slurm.key("ddpm");
    let entry = cache_keys(&slurm.results)
        .into_iter()
        .find(|k| k.starts_with(&ddpm))
        .unwrap();
    std::fs::remove_dir_all(slurm.results.join(".cache").join(&entry)).unwrap();
    let gc = runner(&slurm.results, &["gc", file]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert_eq!(count("logs"), 8, "{}", stdout(&gc));
    assert!(
        !std::fs::read_dir(dir.join("logs"))
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().contains(&ddpm) })
    );
}
