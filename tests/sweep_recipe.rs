//! `just sweep`'s selection logic (`scripts/sweep.sh`, which the recipe calls): it runs
//! every pipeline with a `sweep:` section, skips the ones that cannot be planned here
//! with the reason, keeps going past one that fails, and ignores pipelines without a
//! sweep.

mod common;

use std::process::Command;

use common::{tiny_pipeline, write_pipeline};

#[test]
fn sweep_runs_sweeps_skips_unplannable_ones_and_survives_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    let results = dir.path().join("results");
    std::fs::create_dir_all(&pipelines).unwrap();
    let swept = |name: &str| {
        format!(
            "{}sweep:\n  ddpm_samples.params.seed: [1, 2]\n",
            tiny_pipeline(name, 20)
        )
    };
    write_pipeline(&pipelines, "good", &swept("good"));
    write_pipeline(&pipelines, "plain", &tiny_pipeline("plain", 20));
    // Data that is not installed: planning fails, so the pipeline is skipped.
    let missing = dir.path().join("no-mnist-here");
    write_pipeline(
        &pipelines,
        "missing",
        &format!(
            "name: missing\nstages:\n  data: {{ kind: dataset, params: {{ name: mnist, path: {} }} }}\nsweep:\n  data.params.seed: [0, 1]\n",
            missing.display()
        ),
    );
    // Files that plan (their names and bytes are hashed) but are not images: the run
    // fails, and the pipelines after it still run.
    let folder = dir.path().join("junk");
    std::fs::create_dir_all(folder.join("a")).unwrap();
    std::fs::write(folder.join("a/x.png"), b"not a png").unwrap();
    write_pipeline(
        &pipelines,
        "broken",
        &format!(
            "name: broken\nstages:\n  data: {{ kind: dataset, params: {{ name: image_folder, path: {}, size: 8 }} }}\nsweep:\n  data.params.seed: [0, 1]\n",
            folder.display()
        ),
    );
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sweep.sh"))
        .args(["--results", results.to_str().unwrap()])
        .env("RUNNER", env!("CARGO_BIN_EXE_runner"))
        .env("SWEEP_PIPELINES", &pipelines)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed run fails the sweep:\n{stdout}"
    );
    assert!(results.join("good/report.html").is_file(), "{stdout}");
    assert!(
        stdout.contains(&format!("{}/good/report.html", results.display())),
        "{stdout}"
    );
    assert!(
        !results.join("plain").exists(),
        "a pipeline without a sweep ran"
    );
    let skipped = stdout.split("skipped").nth(1).unwrap_or_default();
    assert!(
        skipped.contains("missing.yaml") && skipped.contains("train-images-idx3-ubyte"),
        "the skipped pipeline and its reason:\n{stdout}"
    );
    let failed = stdout.split("failed:").nth(1).unwrap_or_default();
    assert!(failed.contains("broken.yaml"), "{stdout}");
    assert!(!failed.contains("good.yaml") && !skipped.contains("good.yaml"));

    // The same arguments go to planning: a profile a pipeline lacks is a reason to skip.
    std::fs::remove_file(pipelines.join("broken.yaml")).unwrap();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sweep.sh"))
        .args(["--results", results.to_str().unwrap(), "--profile", "nope"])
        .env("RUNNER", env!("CARGO_BIN_EXE_runner"))
        .env("SWEEP_PIPELINES", &pipelines)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("good.yaml: ") && stdout.contains("profile"),
        "{stdout}"
    );
}
