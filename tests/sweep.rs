//! Sweeps end to end: shared stages computed once, labelled results, command-line
//! axes, reports from the cache, gc, verify and concurrent sweeps.

mod common;

use common::{
    cache_keys, computed, run_twice_concurrently, runner, stderr, stdout, tiny_pipeline,
    write_pipeline,
};

/// The tiny pipeline with a 2 x 2 sweep: DDPM's learning rate and its sample count.
fn swept(name: &str) -> String {
    format!(
        "{}sweep:\n  ddpm.params.lr: [0.001, 0.002]\n  ddpm_samples.params.n: [200, 300]\n",
        tiny_pipeline(name, 20)
    )
}

/// Runs the tiny pipeline `name` with `extra` YAML after it (a `sweep:`, a `report:`)
/// into `results`, checking it succeeds; returns the run's output.
fn run_tiny(results: &std::path::Path, name: &str, extra: &str) -> std::process::Output {
    let dir = results.parent().unwrap();
    let text = format!("{}{extra}", tiny_pipeline(name, 20));
    let path = write_pipeline(dir, name, &text);
    let run = runner(results, &["run", path.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    run
}

/// The comparison plots (`sweep-*`, PNG and SVG) of a report folder, by name.
fn sweep_figures(report: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(report.join("figures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sweep-"))
        .collect();
    names.sort();
    names
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn count_prefix(names: &[String], id: &str) -> usize {
    names
        .iter()
        .filter(|n| *n == id || n.starts_with(&format!("{id}[")))
        .count()
}

#[test]
fn a_sweep_computes_every_distinct_stage_once_and_labels_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "sw", &swept("sw"));
    let file = path.to_str().unwrap();

    let plan = stdout(&runner(&results, &["plan", file]));
    assert!(
        plan.contains("4 sweep points over lr (2) x n (2); 16 distinct stages"),
        "{plan}"
    );
    assert!(plan.contains("16 to run, 0 cached (work left: 1 dataset, 2 schedule, 1 model, 3 train, 5 sample, 4 evaluate)"), "{plan}");

    let run = runner(&results, &["run", file, "--jobs", "2"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let ran = sorted(computed(&run));
    assert_eq!(ran.len(), 16, "{ran:?}");
    assert_eq!(count_prefix(&ran, "data"), 1);
    assert_eq!(
        count_prefix(&ran, "ddpm"),
        2,
        "one training per learning rate: {ran:?}"
    );
    assert_eq!(count_prefix(&ran, "smld"), 1, "no swept value reaches smld");
    assert_eq!(count_prefix(&ran, "ddpm_samples"), 4);
    assert_eq!(count_prefix(&ran, "smld_samples"), 1);
    assert_eq!(count_prefix(&ran, "compare"), 4);
    assert!(
        ran.contains(&"ddpm_samples[lr=0.002,n=300]".to_string()),
        "{ran:?}"
    );
    assert_eq!(cache_keys(&results).len(), 16);

    // One row per (evaluated stage, the sweep values reaching it, metric), a column
    // per axis, empty where no value reaches the stage: smld_samples appears once.
    let out = results.join("sw");
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = metrics.lines();
    assert_eq!(lines.next(), Some("lr,n,evaluate,stage,metric,value,of"));
    for row in [
        "0.001,200,compare,ddpm_samples,mmd2,",
        ",,compare,smld_samples,nfe,16.0,samples",
    ] {
        assert!(metrics.contains(row), "no {row} in\n{metrics}");
    }
    let per_stage = 7; // sw, mmd2, 2 mode weights, tv, nfe, seconds
    assert_eq!(metrics.lines().count(), 1 + 4 * per_stage + per_stage);
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.contains(",smld_samples,nfe,"))
            .count(),
        1
    );
    // Forked stages are found under their label; shared ones by id.
    for file in [
        "stages/data/meta.json",
        "stages/smld/loss.csv",
        "stages/ddpm/lr=0.001/loss.csv",
        "stages/ddpm/lr=0.002/loss.csv",
        "stages/ddpm_samples/lr=0.002,n=300/samples.safetensors",
        "stages/compare/lr=0.001,n=200/metrics.csv",
    ] {
        assert!(out.join(file).is_file(), "missing {file}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for needle in [
        "<h2>Sweep</h2>",
        "4 points, 16 distinct stages",
        "ddpm_samples.params.n",
        "class=\"sortable\"",
        "stages&#x2f;ddpm_samples&#x2f;lr=0.002,n=300",
        "figures&#x2f;sweep-",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    let compare_plots = sweep_figures(&out).len();
    assert_eq!(
        compare_plots, 6,
        "sliced_wasserstein, mmd2 and mode_weight_tv against lr, as PNG and SVG"
    );

    // Nothing changed: nothing runs.
    let again = runner(&results, &["run", file]);
    assert!(
        stderr(&again).contains("all 16 stages cached"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn set_fixes_a_swept_value_and_sweep_adds_an_axis() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "ov", &swept("ov"));
    let file = path.to_str().unwrap();
    let first = runner(&results, &["run", file, "--set", "ddpm.params.lr=0.002"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let ran = computed(&first);
    assert_eq!(count_prefix(&ran, "ddpm"), 1, "{ran:?}");
    assert_eq!(count_prefix(&ran, "ddpm_samples"), 2);
    assert!(ran.contains(&"ddpm_samples[n=300]".to_string()), "{ran:?}");

    // The full sweep reuses the lr=0.002 branch and computes only the rest.
    let full = runner(&results, &["run", file]);
    let ran = computed(&full);
    assert_eq!(count_prefix(&ran, "ddpm"), 1, "{ran:?}");
    assert!(ran.contains(&"ddpm[lr=0.001]".to_string()), "{ran:?}");
    assert_eq!(count_prefix(&ran, "ddpm_samples"), 2);
    assert_eq!(count_prefix(&ran, "smld"), 0);

    // A command-line axis on top of the file's.
    let plan = stdout(&runner(
        &results,
        &["plan", file, "--sweep", "smld_samples.params.seed=1,5,9"],
    ));
    assert!(
        plan.contains("12 sweep points over lr (2) x n (2) x seed (3)"),
        "{plan}"
    );
    assert!(
        plan.contains("(work left: 3 sample, 12 evaluate)"),
        "{plan}"
    );
    let bad = runner(&results, &["plan", file, "--sweep", "nope.params.x=1,2"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("no stage `nope`"), "{}", stderr(&bad));
}

#[test]
fn zipped_axes_and_named_plots() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let run = run_tiny(
        &results,
        "zipped",
        "report:\n  plots:\n    - { metric: sliced_wasserstein, x: steps, series: [] }\nsweep:\n  zip:\n    linear.params.steps: [10, 20]\n    ddpm.params.seed: [3, 4]\n",
    );
    let ran = computed(&run);
    assert_eq!(count_prefix(&ran, "linear"), 2);
    assert_eq!(count_prefix(&ran, "ddpm"), 2, "{ran:?}");
    assert!(
        ran.contains(&"ddpm[steps=20,seed=4]".to_string()),
        "{ran:?}"
    );
    let figures = sweep_figures(&results.join("zipped"));
    assert_eq!(
        figures,
        [
            "sweep-0-sliced_wasserstein-by-steps.png",
            "sweep-0-sliced_wasserstein-by-steps.svg"
        ]
    );
}

#[test]
fn report_rebuilds_from_the_cache_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "rep", &swept("rep"));
    let file = path.to_str().unwrap();

    // Before any run: refused (a report without its stages says nothing), and
    // nothing computed.
    let empty = runner(&results, &["report", file]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        stderr(&empty).contains("the report would lack 16 of 16 stages"),
        "{}",
        stderr(&empty)
    );
    assert!(cache_keys(&results).is_empty());

    assert!(runner(&results, &["run", file]).status.success());
    let out = results.join("rep");
    let before = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    std::fs::remove_file(out.join("metrics.csv")).unwrap();
    std::fs::remove_file(out.join("report.html")).unwrap();
    std::fs::remove_dir_all(out.join("stages")).unwrap();
    let rebuilt = runner(&results, &["report", file]);
    assert!(rebuilt.status.success(), "{}", stderr(&rebuilt));
    assert!(computed(&rebuilt).is_empty());
    assert!(stderr(&rebuilt).contains("all 16 stages cached"));
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.csv")).unwrap(),
        before
    );
    assert!(out.join("report.html").is_file());
    assert!(out.join("stages/ddpm/lr=0.002/ema.safetensors").is_file());
}

#[test]
fn gc_removes_only_unreachable_entries() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let keep = write_pipeline(dir.path(), "keep", &tiny_pipeline("keep", 20));
    let gone = write_pipeline(
        dir.path(),
        "gone",
        &tiny_pipeline("gone", 20).replace("n: 2000", "n: 1000"),
    );
    for file in [&keep, &gone] {
        assert!(
            runner(&results, &["run", file.to_str().unwrap()])
                .status
                .success()
        );
    }
    // `gone` shares mlp, linear and sigmas with `keep`; its data and everything
    // downstream differ (6 entries).
    let before = cache_keys(&results);
    assert_eq!(before.len(), 9 + 6);
    // Without run records, only the pipeline file keeps entries.
    let dry = runner(
        &results,
        &[
            "gc",
            keep.to_str().unwrap(),
            "--dry-run",
            "--keep-runs",
            "0",
        ],
    );
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stdout(&dry).contains("would free"), "{}", stdout(&dry));
    assert_eq!(cache_keys(&results), before, "a dry run deletes nothing");

    let gc = runner(
        &results,
        &["gc", keep.to_str().unwrap(), "--keep-runs", "0"],
    );
    assert!(gc.status.success(), "{}", stderr(&gc));
    let report = stdout(&gc);
    assert!(report.contains("in 6 entries; kept 9"), "{report}");
    assert!(
        report.contains("dataset data") && report.contains("train ddpm"),
        "{report}"
    );
    assert_eq!(cache_keys(&results).len(), 9);
    // Everything `keep` needs is still cached.
    let plan = stdout(&runner(&results, &["plan", keep.to_str().unwrap()]));
    assert!(plan.contains("0 to run, 9 cached"), "{plan}");
    // A broken pipeline file stops gc before it deletes anything.
    let broken = write_pipeline(dir.path(), "broken", "name: broken\nstages: {\n");
    let refused = runner(&results, &["gc", broken.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(cache_keys(&results).len(), 9);
}

#[test]
fn verify_detects_a_corrupted_file_and_remove_lets_the_next_run_repair_it() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "ver", &tiny_pipeline("ver", 20));
    let file = path.to_str().unwrap();
    assert!(runner(&results, &["run", file]).status.success());
    let clean = runner(&results, &["verify"]);
    assert!(clean.status.success(), "{}", stdout(&clean));
    assert!(
        stdout(&clean).contains("checked 9 entries: 0 damaged"),
        "{}",
        stdout(&clean)
    );

    // Flip one byte of the DDPM samples (same size: only the hash can tell).
    let samples = results.join("ver/stages/ddpm_samples/samples.safetensors");
    let mut bytes = std::fs::read(&samples).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&samples, bytes).unwrap();
    let bad = runner(&results, &["verify"]);
    assert_eq!(bad.status.code(), Some(1));
    let out = stdout(&bad);
    assert!(
        out.contains("(ddpm_samples)")
            && out.contains("samples.safetensors does not match its sha256"),
        "{out}"
    );
    // The evaluation built from the damaged samples is not to be trusted either.
    assert!(out.contains("checked 9 entries: 2 damaged"), "{out}");
    assert!(
        out.contains("(compare)") && out.contains("built from damaged entry"),
        "{out}"
    );

    // Removing the damage still reports it: exit 1, as README says.
    let removed = runner(&results, &["verify", "--remove"]);
    assert_eq!(removed.status.code(), Some(1));
    assert!(
        stderr(&removed).contains("2 damaged cache entries removed"),
        "{}",
        stderr(&removed)
    );
    let rerun = runner(&results, &["run", file]);
    // Only the removed entries are recomputed (their keys are unchanged), and
    // sampling is deterministic: the same bytes come back.
    assert_eq!(computed(&rerun), ["ddpm_samples", "compare"]);
    assert!(runner(&results, &["verify"]).status.success());
}

#[test]
fn two_concurrent_runs_of_a_sweep_compute_each_stage_once() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "conc", &swept("conc"));
    let (a, b) = run_twice_concurrently(&results, &path, "2");
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        stderr(&a),
        stderr(&b)
    );
    let mut all = computed(&a);
    all.extend(computed(&b));
    let all = sorted(all);
    let mut distinct = all.clone();
    distinct.dedup();
    assert_eq!(all, distinct, "a stage was computed twice");
    assert_eq!(all.len(), 16);
    // Both finish with the same results: a third, cached run writes the same table.
    let metrics = std::fs::read_to_string(results.join("conc/metrics.csv")).unwrap();
    let again = runner(&results, &["run", path.to_str().unwrap()]);
    assert!(stderr(&again).contains("all 16 stages cached"));
    assert_eq!(
        std::fs::read_to_string(results.join("conc/metrics.csv")).unwrap(),
        metrics
    );
}

#[test]
fn stages_that_use_every_core_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let text = swept("heavy").replace("steps: 20, batch: 64", "steps: 300, batch: 64");
    let path = write_pipeline(dir.path(), "heavy", &text);
    let run = runner(&results, &["run", path.to_str().unwrap(), "--jobs", "4"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let mut spans: Vec<(u64, u64, String)> = Vec::new();
    for key in cache_keys(&results) {
        let text = std::fs::read_to_string(results.join(".cache").join(&key).join("manifest.json"))
            .unwrap();
        let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
        let kind = manifest["kind"].as_str().unwrap();
        if kind == "train" || kind == "sample" {
            let (start, end) = (
                manifest["started_unix_ms"].as_u64().unwrap(),
                manifest["finished_unix_ms"].as_u64().unwrap(),
            );
            assert!(start > 0 && end >= start);
            spans.push((start, end, manifest["stage"].as_str().unwrap().to_string()));
        }
    }
    assert_eq!(spans.len(), 3 + 5);
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "{} started before {} ended: {spans:?}",
            pair[1].2,
            pair[0].2
        );
    }
}

/// A sweep over the evaluation's own settings gives each unswept stage one row per
/// value (they are different measurements), and still one per value, not per point.
#[test]
fn swept_evaluation_settings_are_rows_of_every_stage_they_measure() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    run_tiny(
        &results,
        "ev",
        "sweep:\n  compare.params.projections: [4, 32]\n  ddpm.params.lr: [0.001, 0.002]\n",
    );
    let metrics = std::fs::read_to_string(results.join("ev/metrics.csv")).unwrap();
    let rows: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains(",smld_samples,sliced_wasserstein,"))
        .collect();
    assert_eq!(rows.len(), 2, "{metrics}");
    assert!(
        rows[0].starts_with("4,,compare,") && rows[1].starts_with("32,,compare,"),
        "{metrics}"
    );
    assert_ne!(rows[0].split(',').nth(5), rows[1].split(',').nth(5));
    let ddpm = metrics
        .lines()
        .filter(|l| l.contains(",ddpm_samples,sliced_wasserstein,"))
        .count();
    assert_eq!(ddpm, 4, "{metrics}");
}

/// A seed axis repeats an experiment: comparison plots never put it on x or make a
/// line per seed; they draw the mean over seeds with the spread as error bars.
#[test]
fn seed_axes_are_drawn_as_mean_and_spread() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    run_tiny(
        &results,
        "seeds",
        "sweep:\n  ddpm.params.seed: [0, 1, 2]\n  ddpm.params.lr: [0.001, 0.002]\n",
    );
    let figures: Vec<String> = sweep_figures(&results.join("seeds"))
        .into_iter()
        .filter(|n| n.ends_with(".png"))
        .collect();
    assert!(!figures.is_empty());
    assert!(
        figures.iter().all(|f| f.ends_with("-by-lr.png")),
        "{figures:?}"
    );
    let html = std::fs::read_to_string(results.join("seeds/report.html")).unwrap();
    assert!(
        html.contains("sliced_wasserstein by lr (mean ± std over seed, 3 values)"),
        "no seed caption in the report"
    );
    // Only seeds varying: nothing to plot against.
    run_tiny(&results, "only", "sweep:\n  ddpm.params.seed: [0, 1]\n");
    assert_eq!(sweep_figures(&results.join("only")), Vec::<String>::new());
}
