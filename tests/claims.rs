//! `expect:`: a pipeline's claims, checked after the run, shown in the report and the
//! summary, and an exit code 3 under `--check` when one is not reproduced.

mod common;

use common::{runner, stderr, tiny_pipeline, write_pipeline};

fn with_claims(name: &str, claims: &str) -> String {
    format!("{}expect:\n{claims}", tiny_pipeline(name, 20))
}

const PASSING: &str = "  - { stage: ddpm_samples, metric: mode_weight_tv, below: 1.5, note: \"recovers the weights\" }\n  - { stage: smld_samples, metric: sliced_wasserstein, above: 0.0 }\n";
const FAILING: &str = "  - { stage: ddpm_samples, metric: sliced_wasserstein, below: 0.0 }\n  - { stage: ddpm_samples, metric: mmd2, below_stage: smld_samples }\n";

#[test]
fn claims_are_judged_shown_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(
        dir.path(),
        "claims",
        &with_claims("claims", &format!("{PASSING}{FAILING}")),
    );
    let file = path.to_str().unwrap();
    // Without --check a claim not reproduced is reported, not an error.
    let out = runner(&results, &["run", file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("claims: "), "{err}");
    assert!(
        err.contains("not reproduced  sliced_wasserstein of ddpm_samples below 0"),
        "{err}"
    );
    assert!(
        err.contains("reproduced      mode_weight_tv of ddpm_samples below 1.5"),
        "{err}"
    );
    assert!(
        err.contains(" vs "),
        "a comparison shows both values: {err}"
    );
    let html = std::fs::read_to_string(results.join("claims/report.html")).unwrap();
    assert!(html.contains("<h2>Claims</h2>") && html.contains("recovers the weights"));
    assert!(html.contains("status-failed\">not reproduced"), "{html}");
    assert!(html.contains("status-ok\">reproduced"));
    // --check turns it into exit code 3; everything stays cached.
    let out = runner(&results, &["run", file, "--check"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("claims not reproduced"));
    assert!(stderr(&out).contains("stages cached"));

    // Only passing claims: --check succeeds.
    let passing = write_pipeline(dir.path(), "passing", &with_claims("passing", PASSING));
    let out = runner(&results, &["run", passing.to_str().unwrap(), "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("claims: 2 of 2 reproduced"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn claims_that_name_unknown_stages_metrics_or_axes_are_pipeline_errors() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let plan_error = |claims: &str| {
        let path = write_pipeline(dir.path(), "bad", &with_claims("bad", claims));
        let out = runner(&results, &["plan", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        stderr(&out)
    };
    // The tiny pipeline is 21 lines; `expect:` is line 22 and its first claim line 23.
    let err = plan_error("  - { stage: nope, metric: mmd2, below: 1 }\n");
    assert!(err.contains("bad.yaml:23:7"), "{err}");
    assert!(
        err.contains(
            "`nope` is not a stage an evaluate stage judges; those are: ddpm_samples, smld_samples"
        ),
        "{err}"
    );
    let err = plan_error("  - stage: ddpm_samples\n    metric: fidd\n    below: 1\n");
    assert!(err.contains("bad.yaml:24:5"), "{err}");
    assert!(
        err.contains("`fidd` is not a metric; metrics are: sliced_wasserstein"),
        "{err}"
    );
    let err = plan_error("  - { stage: ddpm_samples, metric: mmd2, below: 1, above: 0 }\n");
    assert!(err.contains("set exactly one of `below`"), "{err}");
    let err = plan_error("  - { stage: ddpm_samples, metric: mmd2, below: 1, at: { steps: 3 } }\n");
    assert!(err.contains("the pipeline has no `sweep:`"), "{err}");
    let err = plan_error("  - { stage: ddpm_samples, metric: mmd2, blow: 1 }\n");
    assert!(err.contains("unknown field `blow`"), "{err}");
}

#[test]
fn a_claim_can_name_a_sweep_point() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let text = format!(
        "{}sweep:\n  ddpm_samples.params.seed: [1, 2]\nexpect:\n  - {{ stage: ddpm_samples, metric: sliced_wasserstein, above: 0.0, at: {{ seed: 2 }} }}\n  - {{ stage: ddpm_samples, metric: sliced_wasserstein, above: 0.0, at: {{ seed: 3 }} }}\n",
        tiny_pipeline("points", 20)
    );
    let path = write_pipeline(dir.path(), "points", &text);
    let out = runner(&results, &["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("axis `seed` never takes 3; its values are: 1, 2"),
        "{}",
        stderr(&out)
    );
    let text = text.replace(
        "  - { stage: ddpm_samples, metric: sliced_wasserstein, above: 0.0, at: { seed: 3 } }\n",
        "",
    );
    let path = write_pipeline(dir.path(), "points", &text);
    let out = runner(&results, &["run", path.to_str().unwrap(), "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    // One value: the point `seed=2`, not `seed=1`.
    let line = err
        .lines()
        .find(|l| l.contains("at seed=2"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("reproduced") && !line.contains("seed=1"),
        "{line}"
    );
}

#[test]
fn a_claim_of_a_profile_is_judged_only_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let profile =
        "profiles:\n  long:\n    description: longer\n    set: { ddpm.params.steps: 30 }\n";
    let text = format!(
        "{}{profile}expect:\n  - {{ stage: ddpm_samples, metric: sliced_wasserstein, below: 0.0, profiles: [long] }}\n  - {{ stage: ddpm_samples, metric: mode_weight_tv, below: 1.5 }}\n",
        tiny_pipeline("scoped", 20)
    );
    let path = write_pipeline(dir.path(), "scoped", &text);
    let file = path.to_str().unwrap();
    // Without the profile only the unscoped claim is judged, and it holds.
    let out = runner(&results, &["run", file, "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("claims: 1 of 1 reproduced"),
        "{}",
        stderr(&out)
    );
    // Under it both are, and the scoped one fails.
    let out = runner(&results, &["run", file, "--profile", "long", "--check"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("claims: 1 of 2 reproduced"),
        "{}",
        stderr(&out)
    );

    // A profile the file does not define is an error at the claim, naming the choices.
    let bad = text.replace("profiles: [long]", "profiles: [lng]");
    let path = write_pipeline(dir.path(), "scoped", &bad);
    let out = runner(&results, &["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    // The tiny pipeline is 21 lines, the profile 4; the claim is line 27.
    assert!(err.contains("scoped.yaml:27:"), "{err}");
    assert!(
        err.contains("no profile `lng`; the file defines: long"),
        "{err}"
    );
}
