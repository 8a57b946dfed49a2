//! 1D and 3D data end to end, through the shipped pipelines shrunk by `--set`: the
//! 1D mixture drawn as densities (samples, reverse process, forward process), the 3D
//! shell as three projections, and the metrics in both dimensions.

mod common;

use std::path::{Path, PathBuf};

use common::{runner, stderr};

/// (width, height) of a PNG, from its IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[1..4], b"PNG", "{}", path.display());
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

fn metric(metrics: &str, stage: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.split_once(&format!(",{stage},{name},")))
        .and_then(|(_, rest)| rest.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} of {stage} in {metrics}"))
}

/// Runs the shipped pipeline `name` with `--set` for each of `sets`, plus the two
/// every shrunk run needs (2,000 samples, and an EMA short enough to forget the
/// initial weights in 300 steps); returns the folder (kept alive), its report
/// directory and its metrics table.
fn run_shrunk(name: &str, sets: &[&str]) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let file = format!("{}/pipelines/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let mut args = vec!["run", file.as_str()];
    for set in sets
        .iter()
        .chain(&["ddpm.params.ema_decay=0.95", "samples.params.n=2000"])
    {
        args.extend(["--set", set]);
    }
    let out = runner(&results, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = results.join(name);
    let metrics = std::fs::read_to_string(report.join("metrics.csv")).unwrap();
    (dir, report, metrics)
}

#[test]
fn a_one_dimensional_mixture_is_drawn_as_densities() {
    let (_dir, report, metrics) = run_shrunk(
        "lecture_1d",
        &["data.params.n=4000", "ddpm.params.steps=300"],
    );
    // Both 1D modes come out, near their 0.3/0.7 weights, even after 300 steps.
    assert!(
        metric(&metrics, "samples", "mode_weight_tv") < 0.1,
        "{metrics}"
    );
    // Not diverged (a model that is not learning puts samples at hundreds).
    assert!(
        metric(&metrics, "samples", "sliced_wasserstein") < 2.0,
        "{metrics}"
    );
    let figures = report.join("figures");
    // One density panel for the samples, ten for the reverse process (five per row),
    // five for the forward one.
    assert_eq!(
        png_size(&figures.join("compare-scatter_samples.png")),
        (320, 300)
    );
    assert_eq!(
        png_size(&figures.join("compare-timeline_samples.png")),
        (1600, 560)
    );
    assert_eq!(
        png_size(&figures.join("compare-forward_ddpm.png")),
        (1600, 300)
    );
}

#[test]
fn a_three_dimensional_shell_is_drawn_as_projections_and_measured() {
    let (_dir, report, metrics) = run_shrunk(
        "thesis_3d",
        &[
            "data.params.n=4000",
            "ddpm.params.epochs=~",
            "ddpm.params.steps=300",
            "ddpm.params.batch=256",
        ],
    );
    // A rough model: most samples near the shell, not all.
    let outliers = metric(&metrics, "samples", "outlier_fraction");
    assert!(outliers > 0.0 && outliers < 0.9, "{metrics}");
    assert!(metric(&metrics, "samples", "mmd2").is_finite());
    // x-y, x-z and y-z side by side.
    assert_eq!(
        png_size(&report.join("figures/compare-scatter_samples.png")),
        (900, 340)
    );
    assert!(report.join("figures/compare-forward_ddpm.png").is_file());
    assert!(
        report
            .join("figures/compare-timeline_samples.png")
            .is_file()
    );
}
