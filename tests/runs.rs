//! Runs kept after later runs: recorded and listed, shown as tables (text, JSON, CSV),
//! compared, their reports rebuilt, and kept by gc.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{cache_keys, runner, stderr, stdout, tiny_pipeline, write_pipeline};

struct Two {
    _dir: tempfile::TempDir,
    results: PathBuf,
    file: PathBuf,
    ids: Vec<String>,
}

/// The tiny pipeline run twice: as written, then with DDPM trained 30 steps.
fn two_runs() -> Two {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let file = write_pipeline(dir.path(), "tiny", &tiny_pipeline("tiny", 20));
    let mut ids = Vec::new();
    for set in [None, Some("ddpm.params.steps=30")] {
        let mut args = vec!["run", file.to_str().unwrap()];
        args.extend(set.iter().flat_map(|s| ["--set", *s]));
        let out = runner(&results, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let id = stderr(&out)
            .lines()
            .find_map(|l| l.split(", run ").nth(1))
            .expect("the run says its id")
            .trim()
            .to_string();
        ids.push(id);
        // Ids have one-second resolution in their time part: keep them ordered.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    Two {
        _dir: dir,
        results,
        file,
        ids,
    }
}

fn run_dir(two: &Two, i: usize) -> PathBuf {
    two.results.join("tiny/runs").join(&two.ids[i])
}

#[test]
fn runs_are_recorded_with_their_report_and_listed() {
    let two = two_runs();
    for i in 0..2 {
        let dir = run_dir(&two, i);
        for file in ["run.json", "pipeline.yaml", "report.html", "metrics.csv"] {
            assert!(dir.join(file).is_file(), "{} lacks {file}", dir.display());
        }
        assert!(
            dir.join("stages/ddpm/ema.safetensors").is_file(),
            "stage links resolve"
        );
        let record: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
        assert_eq!(record["status"], "succeeded");
        assert_eq!(record["stages"].as_array().unwrap().len(), 9);
        assert!(record["machine"]["cores"].as_u64().unwrap() >= 1);
        assert!(record["metrics"].as_array().unwrap().len() > 5);
    }
    let second: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run_dir(&two, 1).join("run.json")).unwrap())
            .unwrap();
    assert_eq!(second["invocation"]["set"][0], "ddpm.params.steps=30");
    // Figures are hard links of the published ones: the run costs no space for them.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let figure = fs::read_dir(run_dir(&two, 1).join("figures"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let published = two.results.join("tiny/figures").join(figure.file_name());
        assert_eq!(
            figure.metadata().unwrap().ino(),
            fs::metadata(published).unwrap().ino()
        );
    }
    // The first run's report survives the second run's, and differs from it.
    let first = fs::read_to_string(run_dir(&two, 0).join("report.html")).unwrap();
    assert!(first.contains(&two.ids[0]) && !first.contains("ddpm.params.steps=30"));
    let latest = fs::read_to_string(two.results.join("tiny/report.html")).unwrap();
    assert!(latest.contains(&two.ids[1]) && latest.contains("--set ddpm.params.steps=30"));

    let listed = stdout(&runner(&two.results, &["runs"]));
    let lines: Vec<&str> = listed.lines().filter(|l| l.contains(" tiny ")).collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].contains(&two.ids[0]) && lines[1].contains(&two.ids[1]),
        "{listed}"
    );
    assert!(lines[1].contains("succeeded") && lines[1].contains("--set ddpm.params.steps=30"));
    assert!(lines[1].contains("3 computed, 6 cached"), "{listed}");
}

#[test]
fn show_prints_samples_and_models_apart_as_text_json_and_csv() {
    let two = two_runs();
    let text = stdout(&runner(&two.results, &["show"]));
    assert!(
        text.starts_with(&format!("run {} of tiny", two.ids[1])),
        "{text}"
    );
    assert!(text.contains("compare (samples)"), "{text}");
    let header = text
        .lines()
        .find(|l| l.trim_start().starts_with("samples"))
        .unwrap();
    for column in ["sliced_wasserstein", "mmd2", "mode_weight_tv"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("ddpm_samples "))
    );

    let json: serde_json::Value = serde_json::from_str(&stdout(&runner(
        &two.results,
        &["show", &two.ids[0], "--json"],
    )))
    .unwrap();
    assert_eq!(json["run"], two.ids[0].as_str());
    let table = &json["tables"][0];
    assert_eq!(table["evaluate"], "compare");
    assert_eq!(table["of"], "samples");
    assert_eq!(table["rows"].as_array().unwrap().len(), 2);
    let sw = table["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .position(|m| m == "sliced_wasserstein")
        .unwrap();
    let value = table["rows"][0]["values"][sw].as_f64().unwrap();
    assert!(value.is_finite() && value > 0.0);

    let csv = stdout(&runner(&two.results, &["show", "tiny", "--csv"]));
    // The same text as the run's metrics.csv.
    assert!(csv.starts_with("evaluate,stage,metric,value,of\n"), "{csv}");
    let row = csv
        .lines()
        .find(|l| l.contains(",ddpm_samples,sliced_wasserstein,"))
        .unwrap();
    assert!(
        row.starts_with("compare,") && row.ends_with(",samples"),
        "{row}"
    );
    let published = two.results.join("tiny").join("metrics.csv");
    assert_eq!(csv, std::fs::read_to_string(published).unwrap());
    let bad = runner(&two.results, &["show", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("no run `nope`"), "{}", stderr(&bad));
}

#[test]
fn diff_shows_changed_params_and_every_metric() {
    let two = two_runs();
    let text = stdout(&runner(&two.results, &["diff"]));
    assert!(
        text.contains(&format!("runs {} (a) and {} (b)", two.ids[0], two.ids[1])),
        "{text}"
    );
    let param = text
        .lines()
        .find(|l| l.contains(" steps "))
        .expect("the changed param");
    assert!(
        param.contains("ddpm") && param.contains("20") && param.contains("30"),
        "{param}"
    );
    // smld did not change: its samples' metrics are the same in both runs.
    let same = text
        .lines()
        .find(|l| l.contains("smld_samples") && l.contains("sliced_wasserstein"))
        .unwrap();
    assert!(same.trim_end().ends_with("same"), "{same}");

    let json: serde_json::Value = serde_json::from_str(&stdout(&runner(
        &two.results,
        &["diff", &two.ids[0], &two.ids[1], "--json"],
    )))
    .unwrap();
    let params = json["params"].as_array().unwrap();
    assert_eq!(params.len(), 1, "{params:?}");
    assert_eq!(
        (params[0]["stage"].as_str(), params[0]["param"].as_str()),
        (Some("ddpm"), Some("steps"))
    );
    assert_eq!(
        (params[0]["a"].as_u64(), params[0]["b"].as_u64()),
        (Some(20), Some(30))
    );
    let changed = json["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["stage"] == "ddpm_samples" && m["a"] != m["b"])
        .count();
    assert!(changed > 0, "DDPM's samples changed with its training");
}

#[test]
fn report_rebuilds_the_latest_runs_configuration_and_refuses_to_drop_stages() {
    let two = two_runs();
    let published = two.results.join("tiny");
    let table = fs::read_to_string(published.join("metrics.csv")).unwrap();
    fs::remove_file(published.join("metrics.csv")).unwrap();
    fs::remove_file(published.join("report.html")).unwrap();
    // Without the --set, FILE's latest run is what gets rebuilt.
    let rebuilt = runner(&two.results, &["report", two.file.to_str().unwrap()]);
    assert!(rebuilt.status.success(), "{}", stderr(&rebuilt));
    assert!(stderr(&rebuilt).contains(&format!("rebuilding run {}", two.ids[1])));
    assert_eq!(
        fs::read_to_string(published.join("metrics.csv")).unwrap(),
        table
    );
    let html = fs::read_to_string(published.join("report.html")).unwrap();
    assert!(html.contains(&two.ids[1]) && html.contains("--set ddpm.params.steps=30"));
    // An older run on request.
    let older = runner(&two.results, &["report", "--run", &two.ids[0][..17]]);
    assert!(older.status.success(), "{}", stderr(&older));
    assert!(
        fs::read_to_string(published.join("report.html"))
            .unwrap()
            .contains(&two.ids[0])
    );

    // A configuration whose stages are not all cached is refused, saying how to fix it.
    let other = runner(
        &two.results,
        &[
            "report",
            two.file.to_str().unwrap(),
            "--set",
            "ddpm.params.steps=99",
        ],
    );
    assert_eq!(other.status.code(), Some(1));
    let err = stderr(&other);
    assert!(
        err.contains("the report would lack 3 of 9 stages")
            && err.contains("ddpm, ddpm_samples, compare"),
        "{err}"
    );
    // So is a recorded run whose entries are gone.
    let key = fs::read_link(run_dir(&two, 1).join("stages/compare")).unwrap();
    fs::remove_dir_all(run_dir(&two, 1).join("stages").join(&key)).unwrap();
    let gone = runner(&two.results, &["report"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains("lack 1 of 9 stages, not in the cache (compare)"),
        "{}",
        stderr(&gone)
    );
    assert!(
        stderr(&gone).contains("--set ddpm.params.steps=30` computes them"),
        "{}",
        stderr(&gone)
    );
}

#[test]
fn gc_keeps_what_recorded_runs_reach_unless_told_to_keep_fewer() {
    let two = two_runs();
    let other = write_pipeline(
        two.results.parent().unwrap(),
        "other",
        "name: other\nstages:\n  data: { kind: dataset, params: { name: circle, n: 100, holdout: 10 } }\n",
    );
    let all = cache_keys(&two.results).len();
    assert_eq!(all, 9 + 3);
    let gc = runner(&two.results, &["gc", other.to_str().unwrap()]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert_eq!(cache_keys(&two.results).len(), all, "{}", stdout(&gc));
    let gc = runner(
        &two.results,
        &["gc", other.to_str().unwrap(), "--keep-runs", "1"],
    );
    assert!(
        stdout(&gc).contains("deleted 1 run records"),
        "{}",
        stdout(&gc)
    );
    // The first run's own DDPM, its samples and their evaluation go.
    assert_eq!(cache_keys(&two.results).len(), 9);
    assert!(!run_dir(&two, 0).exists() && run_dir(&two, 1).exists());
    assert!(runner(&two.results, &["report"]).status.success());
}

/// The report's metrics: one table per evaluate stage and kind, a row per evaluated
/// stage and the sweep values that reach it (a stage no axis reaches once), wide
/// tables scrolling in their box, figures opening full size.
#[test]
fn report_tables_keep_samples_apart_and_unswept_stages_once() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let text = format!(
        "{}sweep:\n  ddpm_samples.params.seed: [0, 1]\n",
        tiny_pipeline("tables", 20)
    );
    let file = write_pipeline(dir.path(), "tables", &text);
    assert!(
        runner(&results, &["run", file.to_str().unwrap()])
            .status
            .success()
    );
    let html = fs::read_to_string(results.join("tables/report.html")).unwrap();
    let start = html
        .find("<h3>compare (samples)</h3>")
        .expect("a samples table");
    let table = &html[start..start + html[start..].find("</table>").unwrap()];
    assert!(
        html[start..].starts_with("<h3>compare (samples)</h3>\n<div class=\"wide\">"),
        "a wide table scrolls in its box"
    );
    assert_eq!(table.matches("<tr><td>").count(), 3, "{table}");
    assert_eq!(table.matches(">smld_samples<").count(), 1, "{table}");
    assert_eq!(table.matches(">ddpm_samples<").count(), 2, "{table}");
    assert!(
        html.contains("<figure><a href=\"figures&#x2f;"),
        "figures open full size"
    );
    // The terminal shows the same rows.
    let shown = stdout(&runner(&results, &["show"]));
    assert_eq!(
        shown.lines().filter(|l| l.contains("smld_samples")).count(),
        1,
        "{shown}"
    );
}

/// `runner completions SHELL` prints a script that knows every command.
#[test]
fn completions_know_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = runner(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for command in [
            "run", "plan", "report", "runs", "show", "diff", "gc", "verify", "list",
        ] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
        assert!(script.contains("keep-runs"), "{shell} lacks --keep-runs");
    }
    let bad = runner(dir.path(), &["completions", "cmd.exe"]);
    assert_eq!(bad.status.code(), Some(2));
}
