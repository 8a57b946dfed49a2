//! The fault suite: what a flaky machine and a careless user do to the cache, and what
//! runner must do then. gc during a run, damaged entries of every kind, things that are
//! not entries in the cache's place, and pipelines that cannot plan on this machine.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    cache_keys, computed, last_run_keys, plan_key, plan_line, runner, stderr, stdout,
    tiny_pipeline, write_pipeline,
};

/// The tiny pipeline, run once into a fresh results folder.
struct Ran {
    _dir: tempfile::TempDir,
    root: PathBuf,
    results: PathBuf,
    file: PathBuf,
    keys: std::collections::BTreeMap<String, String>,
}

fn ran(name: &str) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let results = root.join("results");
    let file = write_pipeline(&root, name, &tiny_pipeline(name, 20));
    let run = runner(&results, &["run", file.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let keys = last_run_keys(&results, name);
    Ran {
        _dir: dir,
        root,
        results,
        file,
        keys,
    }
}

impl Ran {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["run", self.file.to_str().unwrap()];
        all.extend_from_slice(args);
        runner(&self.results, &all)
    }

    fn entry(&self, stage: &str) -> PathBuf {
        self.results.join(".cache").join(&self.keys[stage])
    }

    /// A pipeline that shares no stage with this one, for gc to keep.
    fn other_pipeline(&self) -> PathBuf {
        write_pipeline(
            &self.root,
            "other",
            "name: other\nstages:\n  data: { kind: dataset, params: { name: circle, n: 100, holdout: 10 } }\n",
        )
    }
}

fn flip_last_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

/// Waits (at most a minute) until `done` holds.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A run in progress registers what it reaches: gc leaves all of it, and the run
/// finishes. Here the run waits on a stage's lock, which the test holds, while gc
/// collects with a pipeline that shares nothing with it.
#[test]
fn gc_keeps_what_a_live_run_reaches() {
    let base = ran("live");
    // The key of the variant's new sample stage, from a run of it elsewhere.
    let variant = ["--set", "ddpm_samples.params.seed=5"];
    let elsewhere = tempfile::tempdir().unwrap();
    let mut args = vec!["run", base.file.to_str().unwrap()];
    args.extend_from_slice(&variant);
    assert!(runner(elsewhere.path(), &args).status.success());
    let held_key = last_run_keys(elsewhere.path(), "live")["ddpm_samples"].clone();
    let locks = base.results.join(".cache/.locks");
    fs::create_dir_all(&locks).unwrap();
    let held = fs::File::create(locks.join(&held_key)).unwrap();
    held.lock().unwrap();
    // Without the base run's record, only the live run's registration protects it.
    fs::remove_dir_all(base.results.join("live/runs")).unwrap();

    let live = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--results")
        .arg(&base.results)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runs = base.results.join(".cache/.runs");
    wait_for("the run registers", || {
        fs::read_dir(&runs).is_ok_and(|mut d| d.next().is_some())
    });
    let other = base.other_pipeline();
    let gc = runner(&base.results, &["gc", other.to_str().unwrap()]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(
        stdout(&gc).contains("in 2 entries; kept 7 (7 only for runs in progress)"),
        "{}",
        stdout(&gc)
    );
    drop(held);
    let live = live.wait_with_output().unwrap();
    assert!(live.status.success(), "{}", stderr(&live));
    assert_eq!(computed(&live), ["ddpm_samples", "compare"]);

    // Once the run is over and its record dropped, nothing protects its entries.
    assert!(fs::read_dir(&runs).unwrap().next().is_none());
    let gc = runner(
        &base.results,
        &["gc", other.to_str().unwrap(), "--keep-runs", "0"],
    );
    assert!(
        stdout(&gc).contains("in 9 entries; kept 0"),
        "{}",
        stdout(&gc)
    );
    assert!(
        fs::read_dir(&locks).unwrap().next().is_none(),
        "gc deletes lock files nobody holds"
    );
}

/// A reachable stage's checkpoints are its resume point: gc keeps them, and deletes
/// those of stages nothing reaches and what an interrupted replacement left.
#[test]
fn gc_keeps_checkpoints_of_reachable_stages_only() {
    let base = ran("ckpt");
    let tmp = base.results.join(".cache/.tmp");
    let reachable = tmp.join(format!("{}-checkpoints", base.keys["ddpm"]));
    let unreachable = tmp.join(format!("{}-checkpoints", "ab".repeat(32)));
    // What a replacement killed between its two renames leaves: the old entry in a
    // trash directory named after the key.
    let trash = tmp.join(format!("{}-x1y2z3/old", base.keys["smld"]));
    for dir in [&reachable, &unreachable, &trash] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("step-100.safetensors"), b"weights").unwrap();
    }
    let gc = runner(&base.results, &["gc", base.file.to_str().unwrap()]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    let out = stdout(&gc);
    assert!(
        out.contains("checkpoints of a stage nothing reaches"),
        "{out}"
    );
    assert!(out.contains("abandoned staging directory"), "{out}");
    assert!(reachable.join("step-100.safetensors").is_file());
    assert!(!unreachable.exists());
    assert!(!trash.exists());
}

/// A flipped byte in a model's weights: a stage that would read them fails and says
/// which entry is damaged; verify flags the entry and everything built from it, and
/// --remove deletes them all, so the next run recomputes a sound chain.
#[test]
fn a_damaged_input_fails_its_reader_and_verify_removes_its_dependents() {
    let base = ran("dmg");
    flip_last_byte(&base.entry("ddpm").join("ema.safetensors"));
    let reader = base.run(&["--set", "ddpm_samples.params.seed=9"]);
    assert_eq!(reader.status.code(), Some(1), "{}", stderr(&reader));
    let err = stderr(&reader);
    assert!(
        err.contains("input `ddpm`")
            && err.contains("is damaged: ema.safetensors does not match its sha256")
            && err.contains("runner verify --remove"),
        "{err}"
    );
    assert!(!computed(&reader).contains(&"ddpm_samples".to_string()));

    let check = runner(&base.results, &["verify"]);
    assert_eq!(check.status.code(), Some(1));
    let out = stdout(&check);
    assert!(out.contains("checked 9 entries: 3 damaged"), "{out}");
    for stage in ["(ddpm)", "(ddpm_samples)", "(compare)"] {
        assert!(out.contains(stage), "{stage} missing from:\n{out}");
    }
    assert_eq!(out.matches("built from damaged entry").count(), 2, "{out}");

    let removed = runner(&base.results, &["verify", "--remove"]);
    assert_eq!(removed.status.code(), Some(1));
    assert_eq!(cache_keys(&base.results).len(), 6);
    let again = base.run(&[]);
    assert!(again.status.success(), "{}", stderr(&again));
    let mut redone = computed(&again);
    redone.sort();
    assert_eq!(redone, ["compare", "ddpm", "ddpm_samples"]);
    assert!(runner(&base.results, &["verify"]).status.success());
}

/// A deleted file and a flipped byte in the data are found the same way.
#[test]
fn a_deleted_file_or_damaged_data_is_found_before_use() {
    let base = ran("gone");
    fs::remove_file(base.entry("smld_samples").join("samples.safetensors")).unwrap();
    flip_last_byte(&base.entry("data").join("data.safetensors"));
    let out = stdout(&runner(&base.results, &["verify"]));
    assert!(out.contains("samples.safetensors is missing"), "{out}");
    assert!(
        out.contains("data.safetensors does not match its sha256"),
        "{out}"
    );
    // Everything but the schedules and the model is built from the data.
    assert!(out.contains("checked 9 entries: 6 damaged"), "{out}");
    let reader = base.run(&["--set", "compare.params.seed=3"]);
    assert_eq!(reader.status.code(), Some(1));
    let err = stderr(&reader);
    assert!(
        err.contains("input `data`") && err.contains("input `smld_samples`"),
        "{err}"
    );
}

/// Manifests that are truncated, not JSON, or list no outputs, and a dangling symlink
/// or a plain file in an entry's place: none is an entry. verify names each, run
/// recomputes them in place, verify --remove deletes them.
#[test]
fn what_is_not_an_entry_is_reported_and_replaced() {
    let base = ran("broken");
    let manifest = |stage: &str| base.entry(stage).join("manifest.json");
    let text = fs::read_to_string(manifest("ddpm_samples")).unwrap();
    fs::write(manifest("ddpm_samples"), &text[..text.len() / 2]).unwrap();
    fs::write(manifest("smld_samples"), "").unwrap();
    let mut listing: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(manifest("compare")).unwrap()).unwrap();
    listing["outputs"] = serde_json::json!([]);
    fs::write(manifest("compare"), listing.to_string()).unwrap();
    fs::remove_dir_all(base.entry("linear")).unwrap();
    std::os::unix::fs::symlink(base.root.join("nowhere"), base.entry("linear")).unwrap();
    fs::remove_dir_all(base.entry("sigmas")).unwrap();
    fs::write(base.entry("sigmas"), "not a directory").unwrap();

    let check = runner(&base.results, &["verify"]);
    assert_eq!(check.status.code(), Some(1));
    let out = stdout(&check);
    for problem in [
        "manifest.json is malformed or truncated",
        "manifest.json lists no outputs",
        "which cannot be read",
        "a file, not a directory",
    ] {
        assert!(out.contains(problem), "`{problem}` missing from:\n{out}");
    }
    // The five, and the two trainings built from the schedules.
    assert!(out.contains("checked 9 entries: 7 damaged"), "{out}");

    let run = base.run(&[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let mut redone = computed(&run);
    redone.sort();
    assert_eq!(
        redone,
        [
            "compare",
            "ddpm_samples",
            "linear",
            "sigmas",
            "smld_samples"
        ]
    );
    assert!(base.entry("linear").is_dir() && base.entry("sigmas").is_dir());
    assert!(runner(&base.results, &["verify"]).status.success());

    // verify --remove deletes what is not an entry, whatever it is.
    fs::remove_dir_all(base.entry("linear")).unwrap();
    std::os::unix::fs::symlink(base.root.join("nowhere"), base.entry("linear")).unwrap();
    let removed = runner(&base.results, &["verify", "--remove"]);
    assert_eq!(removed.status.code(), Some(1));
    assert!(fs::symlink_metadata(base.entry("linear")).is_err());
}

/// gc over `pipelines/` on a machine without one pipeline's data: that pipeline is
/// reported and what its last run reached is kept; the others are collected.
#[test]
fn gc_goes_on_past_a_pipeline_whose_data_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let results = root.join("results");
    let folder = root.join("images");
    fs::create_dir_all(folder.join("a")).unwrap();
    for i in 0..4u8 {
        image::GrayImage::from_pixel(4, 4, image::Luma([i * 60]))
            .save(folder.join("a").join(format!("{i}.png")))
            .unwrap();
    }
    let pipelines = root.join("pipelines");
    fs::create_dir_all(&pipelines).unwrap();
    let photos = write_pipeline(
        &pipelines,
        "photos",
        &format!(
            "name: photos\nstages:\n  data: {{ kind: dataset, params: {{ name: image_folder, path: \"{}\", size: 4, holdout: 1 }} }}\n",
            folder.display()
        ),
    );
    let toy = write_pipeline(&pipelines, "toy", &tiny_pipeline("toy", 10));
    let old = write_pipeline(root, "old", &tiny_pipeline("old", 11));
    for file in [&photos, &toy, &old] {
        let run = runner(&results, &["run", file.to_str().unwrap()]);
        assert!(run.status.success(), "{}", stderr(&run));
    }
    let photo_entry = results
        .join(".cache")
        .join(&last_run_keys(&results, "photos")["data"]);
    fs::remove_dir_all(&folder).unwrap();

    let gc = Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(root)
        .args(["--results", "results", "gc", "--keep-runs", "0"])
        .output()
        .unwrap();
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(
        stderr(&gc).contains("photos.yaml does not plan")
            && stderr(&gc).contains("kept what its last run reached"),
        "{}",
        stderr(&gc)
    );
    // `old` differs from `toy` only in its trainings and what follows them.
    assert!(
        stdout(&gc).contains("in 5 entries; kept 10"),
        "{}",
        stdout(&gc)
    );
    assert!(photo_entry.is_dir());
}

/// `runner` under `ulimit -v` (KiB), so a size that slipped past the checks would
/// abort on its allocation instead of passing quietly.
fn limited(results: &Path, kib: u64, args: &[&str]) -> std::process::Output {
    let mut command = format!("ulimit -v {kib} && exec \"$0\" --results \"$1\"");
    for i in 0..args.len() {
        command.push_str(&format!(" \"${}\"", i + 2));
    }
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .arg(env!("CARGO_BIN_EXE_runner"))
        .arg(results)
        .args(args)
        .output()
        .unwrap()
}

/// 4 GiB of address space, in KiB.
const FOUR_GIB: u64 = 4 * 1024 * 1024;

/// Sizes past any use or past the machine's memory are refused when planning, at the
/// stage's line, with what the stage needs and what the machine has, before anything
/// is allocated (the list: samples, data, batch, widths, schedule steps).
#[test]
fn sizes_past_the_machine_are_refused_when_planning() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "huge", &tiny_pipeline("huge", 20));
    let results = dir.path().join("results");
    let cases = [
        (
            "ddpm_samples.params.n=10000000000000",
            "ddpm_samples",
            "1.0e13 samples of 2 values",
        ),
        ("data.params.n=1000000000", "data", "1.0e9 rows of 2 values"),
        ("data.params.holdout=1000000000", "data", "1.0e9 rows"),
        ("ddpm.params.batch=1000000000", "ddpm", "batches of 1.0e9"),
        (
            "mlp.params.hidden=[1000000000]",
            "mlp",
            "parameters or more; at most 2.0e9",
        ),
        (
            "mlp.params.embedding_dim=1000000000",
            "mlp",
            "parameters or more",
        ),
        (
            "linear.params.steps=10000000000000",
            "linear",
            "`steps` must be 1 to 1000000",
        ),
        (
            "ddpm_samples.params.steps=10000000000000",
            "ddpm_samples",
            "`steps` must be 1 to 1000000",
        ),
    ];
    for (set, stage, what) in cases {
        for command in ["plan", "run"] {
            let out = limited(
                &results,
                FOUR_GIB,
                &[command, file.to_str().unwrap(), "--set", set],
            );
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{set}: {err}");
            assert!(
                err.contains(&format!("stage `{stage}`")) && err.contains(what),
                "{set}: {err}"
            );
            assert!(err.contains("huge.yaml:"), "no location: {err}");
        }
    }
    let memory = limited(
        &results,
        FOUR_GIB,
        &["plan", file.to_str().unwrap(), "--set", cases[0].0],
    );
    assert!(
        stderr(&memory).contains("and this machine has 4.0 GiB"),
        "{}",
        stderr(&memory)
    );
    assert!(
        fs::read_dir(&results).map_or(true, |d| cache_keys(&results).is_empty() && d.count() <= 1)
    );
}

/// Legal sizes that would take days are planned, with their estimated time.
#[test]
fn plan_says_how_long_a_huge_but_legal_stage_would_take() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "long", &tiny_pipeline("long", 20));
    let results = dir.path().join("results");
    for (set, stage, unit, work) in [
        (
            "ddpm.params.steps=1000000000",
            "ddpm",
            " h here",
            "1.0e9 steps of 64 examples",
        ),
        (
            "smld_samples.params.n_steps_each=10000000000000",
            "smld_samples",
            "years",
            "300 samples x 3.0e13 score evaluations",
        ),
        (
            "compare.params.projections=10000000000000",
            "compare",
            "days",
            "1.0e13 projections",
        ),
    ] {
        let out = limited(
            &results,
            FOUR_GIB,
            &["plan", file.to_str().unwrap(), "--set", set],
        );
        assert!(out.status.success(), "{set}: {}", stderr(&out));
        let text = stdout(&out);
        let line = plan_line(&text, stage);
        assert!(line.contains(unit) && line.contains(work), "{set}: {line}");
        assert!(text.contains("the long stages above take about"), "{text}");
    }
    // The pipeline as written takes seconds: no estimate is shown.
    let plain = stdout(&runner(&results, &["plan", file.to_str().unwrap()]));
    assert!(!plain.contains("about"), "{plain}");
}

/// A stage that fits the machine but not what is free when it starts fails alone,
/// with what it needs and what is free; the others finish and the run says so.
#[test]
fn a_stage_that_does_not_fit_the_free_memory_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let limit = FOUR_GIB as f64 * 1024.0;
    // A 2D dataset costs 24 bytes a row: this one needs all but 16 MiB of the limit,
    // which the running process's own address space already takes.
    let rows = ((limit - 16.0 * 1024.0 * 1024.0) / 24.0) as u64;
    let text = format!(
        "name: tight\nstages:\n  small: {{ kind: dataset, params: {{ name: circle, n: 1000, holdout: 100 }} }}\n  big: {{ kind: dataset, params: {{ name: circle, n: {}, holdout: 1000 }} }}\n",
        rows - 1000
    );
    let file = write_pipeline(dir.path(), "tight", &text);
    let results = dir.path().join("results");
    let plan = limited(&results, FOUR_GIB, &["plan", file.to_str().unwrap()]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let run = limited(&results, FOUR_GIB, &["run", file.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(
        err.contains("failed  big: needs about 4.0 GiB of memory")
            && err.contains("and the free memory is"),
        "{err}"
    );
    assert_eq!(computed(&run), ["small"]);
    assert!(err.contains("1 of 2 stages failed"), "{err}");
}

/// A sampler that diverges fails its stage with what to change, instead of writing
/// NaN samples that every metric downstream would turn into NaN.
#[test]
fn non_finite_samples_fail_the_sample_stage() {
    let dir = tempfile::tempdir().unwrap();
    let text = tiny_pipeline("nan", 20).replace(
        "sampler: annealed_langevin, n_steps_each: 5",
        "sampler: annealed_langevin, n_steps_each: 5, step_lr: 1.0e38",
    );
    let file = write_pipeline(dir.path(), "nan", &text);
    let out = runner(
        &dir.path().join("results"),
        &["run", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("failed  smld_samples: ")
            && err.contains(
                "of 300 samples are NaN or infinite: sampler `annealed_langevin` diverged"
            ),
        "{err}"
    );
    assert!(err.contains("skipped compare"), "{err}");
}

/// A run with a training long enough to be interrupted in the middle.
fn slow_pipeline(dir: &Path, name: &str) -> PathBuf {
    write_pipeline(
        dir,
        name,
        &tiny_pipeline(name, 20).replace(
            "params: { objective: eps, steps: 20, batch: 64 }",
            "params: { objective: eps, steps: 200000, batch: 64, checkpoint_every: 100 }",
        ),
    )
}

fn spawn_run(results: &Path, file: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--results")
        .arg(results)
        .arg("run")
        .arg(file)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn send(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether the run `child` has registered with the cache (it is past its start-up and
/// about to compute).
fn registered(results: &Path, child: &std::process::Child) -> bool {
    let suffix = format!("-{}", child.id());
    fs::read_dir(results.join(".cache/.runs")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(&suffix))
    })
}

/// SIGINT, SIGTERM and SIGHUP stop a run with a message and the shell's code for the
/// signal; the cache stays sound and the next run goes on from there.
#[test]
fn signals_end_a_run_with_a_message_and_a_sound_cache() {
    let dir = tempfile::tempdir().unwrap();
    let file = slow_pipeline(dir.path(), "sig");
    let results = dir.path().join("results");
    for (signal, code, name) in [
        ("INT", 130, "SIGINT (Ctrl-C)"),
        ("TERM", 143, "SIGTERM"),
        ("HUP", 129, "SIGHUP"),
    ] {
        let child = spawn_run(&results, &file, &[]);
        wait_for("the run to start", || registered(&results, &child));
        std::thread::sleep(Duration::from_millis(300));
        send(&child, signal);
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{signal}: {err}");
        assert!(
            err.contains(&format!("{name}: stopping at the next step"))
                && err.contains(&format!("interrupted by {name}: "))
                && err.contains("goes on from there"),
            "{err}"
        );
        let check = runner(&results, &["verify"]);
        assert!(check.status.success(), "{}", stdout(&check));
    }
}

/// kill -9 at random moments of fresh runs and of `--force` replacements never leaves
/// a damaged entry or one without its manifest; gc then leaves no staging behind, and
/// a last run completes from what was cached.
#[test]
fn kill_9_at_random_moments_leaves_a_sound_cache() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}sweep:\n  ddpm_samples.params.seed: [0, 1, 2]\n",
        tiny_pipeline("kill", 300)
    );
    let file = write_pipeline(dir.path(), "kill", &text);
    let results = dir.path().join("results");
    // A fixed seed: the same delays every time, spread over a run's 0.2-1 s.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..12 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_millis(30 + state % 700);
        let force: &[&str] = if round % 3 == 2 {
            &["--force", "ddpm", "--force", "data"]
        } else {
            &[]
        };
        let mut child = spawn_run(&results, &file, force);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let check = runner(&results, &["verify"]);
        assert!(
            check.status.success(),
            "round {round} ({delay:?}): {}",
            stdout(&check)
        );
        for key in cache_keys(&results) {
            assert!(
                results
                    .join(".cache")
                    .join(&key)
                    .join("manifest.json")
                    .is_file(),
                "round {round}: entry {key} has no manifest"
            );
        }
    }
    let gc = runner(&results, &["gc", file.to_str().unwrap()]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    let left: Vec<String> = fs::read_dir(results.join(".cache/.tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with("-checkpoints"))
        .collect();
    assert!(left.is_empty(), "staging left after gc: {left:?}");
    let last = runner(&results, &["run", file.to_str().unwrap()]);
    assert!(last.status.success(), "{}", stderr(&last));
    assert!(runner(&results, &["verify"]).status.success());
}

/// A tmpfs of `size` mounted for the test, unmounted when dropped; None (and a note on
/// stderr) where this process may not mount.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: this process cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallDisk { _dir: dir, path })
    }

    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .unwrap();
        stdout(&out).lines().nth(1).unwrap().trim().parse().unwrap()
    }

    /// Fills the disk until `leave` bytes are free.
    fn fill(&self, leave: u64) {
        let _ = fs::remove_file(self.path.join("filler"));
        let size = self.free().saturating_sub(leave);
        let _ = fs::write(self.path.join("filler"), vec![0u8; size as usize]);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// A full disk at any point of a run: exit 1 with a message, never 2; the stage
/// summary when stages ran; the previous last_run.json whole and no temporary file
/// beside it; a sound cache; and, with room again, a run that completes.
#[test]
fn a_full_disk_fails_the_run_cleanly() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let results = disk.path.join("results");
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "full", &tiny_pipeline("full", 20));
    let first = runner(&results, &["run", file.to_str().unwrap()]);
    assert!(first.status.success(), "{}", stderr(&first));
    let history = fs::read_to_string(results.join("full/last_run.json")).unwrap();
    for (seed, leave) in [0u64, 8_000, 40_000, 100_000, 200_000]
        .into_iter()
        .enumerate()
    {
        disk.fill(leave);
        let set = format!("ddpm.params.seed={}", seed + 10);
        let out = runner(&results, &["run", file.to_str().unwrap(), "--set", &set]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{leave} bytes free: {err}");
        assert!(
            err.contains("No space left on device"),
            "{leave} bytes free: {err}"
        );
        if err.contains(" computed, ") {
            assert!(err.contains(" failed, "), "{err}");
        }
        let now = fs::read_to_string(results.join("full/last_run.json")).unwrap();
        assert!(
            now == history || serde_json::from_str::<serde_json::Value>(&now).is_ok(),
            "last_run.json damaged"
        );
        let strays: Vec<String> = fs::read_dir(results.join("full"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(strays.is_empty(), "{leave} bytes free: left {strays:?}");
        let _ = fs::remove_file(disk.path.join("filler"));
        let check = runner(&results, &["verify"]);
        assert!(
            check.status.success(),
            "{leave} bytes free: {}",
            stdout(&check)
        );
    }
    let again = runner(
        &results,
        &[
            "run",
            file.to_str().unwrap(),
            "--set",
            "ddpm.params.seed=10",
        ],
    );
    assert!(again.status.success(), "{}", stderr(&again));
}

/// Symlink loops in an image folder (`c/l1 -> ..` and a second one): plan finishes,
/// every image counts once, and the run warns about each link it did not follow.
#[test]
fn symlink_loops_in_an_image_folder_count_each_image_once() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("images");
    fs::create_dir_all(folder.join("c")).unwrap();
    for i in 0..10u8 {
        image::GrayImage::from_pixel(4, 4, image::Luma([i * 20]))
            .save(folder.join("c").join(format!("{i}.png")))
            .unwrap();
    }
    std::os::unix::fs::symlink("..", folder.join("c/l1")).unwrap();
    std::os::unix::fs::symlink("../c", folder.join("c/l2")).unwrap();
    let file = write_pipeline(
        dir.path(),
        "loops",
        &format!(
            "name: loops\nstages:\n  data: {{ kind: dataset, params: {{ name: image_folder, path: \"{}\", size: 4, holdout: 1 }} }}\n",
            folder.display()
        ),
    );
    let results = dir.path().join("results");
    let plan = runner(&results, &["plan", file.to_str().unwrap()]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let run = runner(&results, &["run", file.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let err = stderr(&run);
    assert_eq!(err.matches("which is read once").count(), 2, "{err}");
    let meta: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(results.join("loops/stages/data/meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["n_train"], 9);
    assert_eq!(meta["n_test"], 1);
}

/// One seeded mutation of pipeline text: what a slip of the keyboard, a bad merge or
/// a hostile file does to it.
fn mutate(text: &str, rng: &mut u64) -> String {
    let mut next = |n: usize| {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        (*rng % n.max(1) as u64) as usize
    };
    let chars: Vec<char> = text.chars().collect();
    let at = next(chars.len());
    let mut lines: Vec<&str> = text.lines().collect();
    let wild = [
        "{", "}", "[", "]", ":", ",", "-", "\n", " ", "#", "&a", "*a", "!", "|", "'", "\"", "0",
        "e", ".", "~", "\t", "?",
    ];
    let values = [
        "1e308",
        "-1",
        ".nan",
        "-.inf",
        "99999999999999999999",
        "0",
        "1.5",
        "\"\"",
        "[]",
        "{}",
        "null",
        "true",
        "x",
        "1e13",
    ];
    match next(8) {
        0 => chars
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != at)
            .map(|(_, c)| c)
            .collect(),
        1 => {
            let mut out: String = chars[..at].iter().collect();
            out.push_str(wild[next(wild.len())]);
            out.extend(&chars[at..]);
            out
        }
        2 => chars[..at].iter().collect(),
        3 => {
            let i = next(lines.len());
            let line = lines[i];
            lines.insert(i, line);
            lines.join("\n")
        }
        4 => {
            let (i, j) = (next(lines.len()), next(lines.len()));
            lines.swap(i, j);
            lines.join("\n")
        }
        5 => {
            // A number replaced by an extreme value.
            let starts: Vec<usize> = (1..chars.len())
                .filter(|&i| chars[i].is_ascii_digit() && !chars[i - 1].is_ascii_alphanumeric())
                .collect();
            if starts.is_empty() {
                return text.to_string();
            }
            let start = starts[next(starts.len())];
            let mut end = start;
            while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '.') {
                end += 1;
            }
            let mut out: String = chars[..start].iter().collect();
            out.push_str(values[next(values.len())]);
            out.extend(&chars[end..]);
            out
        }
        6 => {
            let i = next(lines.len());
            let indented = format!("  {}", lines[i]);
            lines[i] = &indented;
            lines.join("\n")
        }
        _ => {
            // A value after a key replaced.
            let colons: Vec<usize> = (0..chars.len()).filter(|&i| chars[i] == ':').collect();
            if colons.is_empty() {
                return text.to_string();
            }
            let c = colons[next(colons.len())] + 1;
            let mut end = c;
            while end < chars.len() && !matches!(chars[end], ',' | '}' | '\n') {
                end += 1;
            }
            let mut out: String = chars[..c].iter().collect();
            out.push(' ');
            out.push_str(values[next(values.len())]);
            out.extend(&chars[end..]);
            out
        }
    }
}

/// Seeded mutations of every shipped pipeline, 400 in all, planned under a time and a
/// memory limit: each ends with 0 or 2, never a panic, a signal or a hang.
#[test]
fn fuzzed_pipelines_never_panic_hang_or_blow_up() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut sources: Vec<(String, String)> = fs::read_dir(&shipped)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    sources.sort();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut refused = 0;
    for case in 0..400 {
        let (name, text) = &sources[case % sources.len()];
        let mut mutated = text.clone();
        for _ in 0..1 + case % 3 {
            mutated = mutate(&mutated, &mut rng);
        }
        let file = dir.path().join(format!("case-{case}.yaml"));
        fs::write(&file, &mutated).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v {FOUR_GIB} && exec timeout 20 \"$0\" --results \"$1\" plan \"$2\""
            ))
            .arg(env!("CARGO_BIN_EXE_runner"))
            .arg(&results)
            .arg(&file)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
            .output()
            .unwrap();
        let err = stderr(&out);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(2)) && !err.contains("panicked"),
            "case {case} (from {name}) ended with {:?}:\n{err}\n--- the file ---\n{mutated}",
            out.status
        );
        if code == Some(2) {
            refused += 1;
            assert!(err.starts_with("error: "), "case {case}: {err}");
        }
    }
    // The mutations do break files: most are refused, some still plan.
    eprintln!("{refused} of 400 refused");
    assert!((100..400).contains(&refused), "{refused} of 400 refused");
}

/// The key prefix `plan` shows for `stage`.
fn planned_prefix(results: &Path, file: &Path, stage: &str) -> String {
    plan_key(
        &stdout(&runner(results, &["plan", file.to_str().unwrap()])),
        stage,
    )
}

/// Whether the stage whose key starts with `prefix` is being computed.
fn computing(results: &Path, prefix: &str) -> bool {
    fs::read_dir(results.join(".cache/.tmp")).is_ok_and(|d| {
        d.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix) && !name.ends_with("-checkpoints")
        })
    })
}

/// The first Ctrl-C stops a run at the next step: the training saves a checkpoint at
/// that step (none is due on its own), nothing new starts, the report is written and
/// the run is recorded as interrupted; the next run resumes from that step. A second
/// Ctrl-C quits at once.
#[test]
fn the_first_ctrl_c_stops_gracefully_and_the_second_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "ctrl",
        &tiny_pipeline("ctrl", 20).replace(
            "params: { objective: eps, steps: 20, batch: 64 }",
            "params: { objective: eps, steps: 200000, batch: 64, checkpoint_every: 0 }",
        ),
    );
    let results = dir.path().join("results");
    let prefix = planned_prefix(&results, &file, "ddpm");
    let child = spawn_run(&results, &file, &["--jobs", "1"]);
    wait_for("ddpm to train", || computing(&results, &prefix));
    std::thread::sleep(Duration::from_millis(300));
    send(&child, "INT");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("SIGINT (Ctrl-C): stopping at the next step"),
        "{err}"
    );
    let step: usize = err
        .split("cancelled: stopped by the interrupt at step ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no interrupted training in:\n{err}"));
    assert!(step > 1, "{err}");
    assert!(err.contains("of 200000: checkpoint saved"), "{err}");
    assert!(
        err.contains("6 computed, 0 cached, 0 failed, 0 skipped, 3 cancelled"),
        "{err}"
    );
    assert!(results.join("ctrl/report.html").is_file());
    let run = fs::read_dir(results.join("ctrl/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.path().join("run.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "interrupted");
    let samples = record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ddpm_samples")
        .unwrap();
    assert_eq!(
        (samples["status"].as_str(), samples["message"].as_str()),
        (Some("cancelled"), Some("not started"))
    );
    assert!(runner(&results, &["verify"]).status.success());

    // The next run resumes at that very step; two Ctrl-C end it at once.
    let child = spawn_run(&results, &file, &["--jobs", "1"]);
    wait_for("ddpm to resume", || computing(&results, &prefix));
    std::thread::sleep(Duration::from_millis(300));
    send(&child, "INT");
    std::thread::sleep(Duration::from_millis(20));
    send(&child, "INT");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!("resuming from the checkpoint at step {step}")),
        "{err}"
    );
    assert!(runner(&results, &["verify"]).status.success());
}
