//! Image pipelines end to end, on images the tests generate: an image folder and a
//! small MNIST-style IDX set, a tiny U-Net, sampling, a classifier and image metrics.

mod common;

use std::path::Path;

use common::{computed, runner, stderr, write_pipeline};
use runner::data::idx;

/// Two classes of 8x8 RGB images: red squares on the left, blue on the right, with
/// a little per-image variation. A text file is mixed in (it must be skipped).
fn image_folder(dir: &Path) {
    for (class, colour, left) in [
        ("red", [220u8, 30, 30], true),
        ("blue", [30, 30, 220], false),
    ] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..12u32 {
            let img = image::RgbImage::from_fn(10, 8, |x, y| {
                let inside = if left { x < 5 } else { x >= 5 };
                if inside && y > 1 && y < 7 {
                    image::Rgb([colour[0], colour[1], colour[2].saturating_sub(i as u8)])
                } else {
                    image::Rgb([(i * 5) as u8, (i * 5) as u8, (i * 5) as u8])
                }
            });
            img.save(dir.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(dir.join("README.txt"), "not an image").unwrap();
}

const UNET: &str = "{ arch: unet, channels: 8, channel_mult: [1, 2], attention: [4], groups: 4 }";

fn folder_pipeline(folder: &Path, train: &str) -> String {
    format!(
        r#"name: tiny_images
stages:
  data:    {{ kind: dataset, params: {{ name: image_folder, path: "{folder}", size: 8, holdout: 6 }} }}
  linear:  {{ kind: schedule, params: {{ type: linear, steps: 50 }} }}
  unet:    {{ kind: model, params: {UNET} }}
  ddpm:    {{ kind: train, needs: {{ data: data, schedule: linear, model: unet }}, params: {train} }}
  stoch:   {{ kind: sample, needs: {{ train: ddpm }}, params: {{ sampler: ancestral, n: 16 }} }}
  determ:  {{ kind: sample, needs: {{ train: ddpm }}, params: {{ sampler: ddim, steps: 5, n: 16 }} }}
  cnn:     {{ kind: classifier, needs: {{ data: data }}, params: {{ width: 4, features: 8, steps: 20, batch: 8 }} }}
  judge:
    kind: evaluate
    needs: {{ reference: data, samples: [stoch, determ], models: ddpm, classifier: cnn }}
    params:
      {{ metrics: [fid, kid, inception_score, precision_recall, confidence, class_fractions, fid_floor, nll, recognizable_at],
        feature_points: 16, kid_subset: 6, nll_points: 2, nll_rtol: 1.0e-3, nll_atol: 1.0e-3,
        interpolation_sampler: {{ sampler: ddim, steps: 5 }}, mix_steps: 5 }}
"#,
        folder = folder.display()
    )
}

#[test]
fn image_folder_pipeline_trains_samples_and_measures() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("pictures");
    image_folder(&folder);
    let pipeline = write_pipeline(
        dir.path(),
        "tiny_images",
        &folder_pipeline(
            &folder,
            "{ objective: eps, steps: 6, batch: 8, lr: 1.0e-3, grad_clip: 1.0, warmup: 2 }",
        ),
    );
    let results = dir.path().join("results");
    let out = runner(&results, &["run", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("README.txt (not a PNG or JPEG)"),
        "{}",
        stderr(&out)
    );
    let report = results.join("tiny_images");
    // Image samples clip each predicted x0 to [-1, 1] by default, and say so in their
    // key; they end inside the data range.
    let manifest = std::fs::read_to_string(report.join("stages/stoch/manifest.json")).unwrap();
    assert!(manifest.contains("\"clip_denoised\": true"), "{manifest}");
    let (samples, _) =
        runner::artifacts::load_f32(&report.join("stages/stoch/samples.safetensors"), "samples")
            .unwrap();
    assert!(samples.iter().all(|v| (-1.0..=1.0).contains(v)));
    let metrics = std::fs::read_to_string(report.join("metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let column = header.iter().position(|h| *h == "metric").unwrap();
    for line in metrics.lines().skip(1) {
        let name = line.split(',').nth(column).unwrap();
        assert!(runner::metrics::is_column(name), "{name} is undeclared");
    }
    for name in [
        "fid",
        "kid",
        "inception_score",
        "precision",
        "recall",
        "classifier_accuracy",
        "bits_per_dim",
        "recognizable_at",
        "confidence",
        "class_fraction_0",
        "class_fraction_min",
        "class_fraction_max",
    ] {
        assert!(metrics.contains(name), "{name} missing from {metrics}");
    }
    // The floor is on the reference's row; the class fractions of a set sum to 1.
    assert!(metrics.contains("judge,data,fid_floor,"), "{metrics}");
    let fractions: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("judge,stoch,class_fraction_")
                && !l.contains("_min")
                && !l.contains("_max")
        })
        .map(|l| l.split(',').nth(3).unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((fractions - 1.0).abs() < 1e-9, "{fractions}");
    let figures: Vec<String> = std::fs::read_dir(report.join("figures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for want in [
        "grid_stoch.png",
        "grid_determ.png",
        "timeline_determ.png",
        "forward_ddpm.png",
        "interpolation_ddpm.png",
        "mix_ddpm.png",
        "judge-recognizability.png",
    ] {
        assert!(
            figures.iter().any(|f| f.ends_with(want)),
            "{want} not in {figures:?}"
        );
    }
    // The 8x8 grid of 16 samples: two rows of 8 tiles, each tile 8 px x 4.
    let grid = figures
        .iter()
        .find(|f| f.ends_with("grid_stoch.png"))
        .unwrap();
    let img = image::open(report.join("figures").join(grid)).unwrap();
    assert_eq!((img.width(), img.height()), (8 * 34 + 2, 2 * 34 + 2));
    // Interpolations: 4 pairs x 8 fractions; the mix: 5 noise levels x (8 + 2 sources).
    let size = |suffix: &str| {
        let name = figures.iter().find(|f| f.ends_with(suffix)).unwrap();
        let img = image::open(report.join("figures").join(name)).unwrap();
        (img.width(), img.height())
    };
    assert_eq!(size("interpolation_ddpm.png"), (8 * 34 + 2, 4 * 34 + 2));
    assert_eq!(size("mix_ddpm.png"), (10 * 34 + 2, 5 * 34 + 2));

    // A changed image changes the dataset's key: everything downstream reruns.
    image::RgbImage::from_pixel(10, 8, image::Rgb([1, 2, 3]))
        .save(folder.join("red").join("0.png"))
        .unwrap();
    let plan = runner(&results, &["plan", pipeline.to_str().unwrap()]);
    let text = common::stdout(&plan);
    assert!(text.contains("param content changed"), "{text}");
}

#[test]
fn a_corrupt_image_fails_its_stage_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("pictures");
    image_folder(&folder);
    std::fs::write(
        folder.join("red").join("broken.png"),
        b"\x89PNG\r\n\x1a\nnope",
    )
    .unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        "tiny_images",
        &folder_pipeline(&folder, "{ objective: eps, steps: 2, batch: 4 }"),
    );
    let out = runner(
        &dir.path().join("results"),
        &["run", pipeline.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("broken.png") && err.contains("cannot decode image"),
        "{err}"
    );
}

/// Writes a 4-class MNIST-style set of 8x8 images (bars at the label's row).
fn idx_set(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", 80usize), ("t10k", 20)] {
        let mut pixels = vec![0u8; n * 64];
        let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
        for (i, &l) in labels.iter().enumerate() {
            for x in 0..8 {
                pixels[i * 64 + (2 * l as usize) * 8 + x] = 255;
            }
        }
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx::encode(&[n, 8, 8], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx::encode(&[n], &labels),
        )
        .unwrap();
    }
}

#[test]
fn mnist_style_files_train_and_a_killed_training_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("idx");
    idx_set(&data);
    let text = |steps: usize| {
        format!(
            r#"name: tiny_mnist
stages:
  data:   {{ kind: dataset, params: {{ name: mnist, path: "{data}", classes: [0, 1, 2] }} }}
  linear: {{ kind: schedule, params: {{ type: linear, steps: 50 }} }}
  unet:   {{ kind: model, params: {UNET} }}
  ddpm:   {{ kind: train, needs: {{ data: data, schedule: linear, model: unet }}, params: {{ objective: eps, steps: {steps}, batch: 8, checkpoint_every: 5 }} }}
"#,
            data = data.display()
        )
    };
    let steps = 400;
    let pipeline = write_pipeline(dir.path(), "tiny_mnist", &text(steps));
    // Uninterrupted reference run.
    let straight = dir.path().join("straight");
    let out = runner(&straight, &["run", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(computed(&out).len(), 4);

    // Killed as soon as its first checkpoint exists, then run again.
    let interrupted = dir.path().join("interrupted");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--results")
        .arg(&interrupted)
        .args(["run", pipeline.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = interrupted.join(".cache").join(".tmp");
    let started = std::time::Instant::now();
    let checkpoint = loop {
        let found = std::fs::read_dir(&tmp).ok().and_then(|entries| {
            entries.flatten().map(|e| e.path()).find(|p| {
                p.to_string_lossy().ends_with("-checkpoints") && p.join("current").exists()
            })
        });
        if let Some(found) = found {
            break found;
        }
        assert!(started.elapsed().as_secs() < 120, "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "training finished before a checkpoint was seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        checkpoint
            .join("current")
            .join("state.safetensors")
            .exists()
    );
    let out = runner(&interrupted, &["run", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("resuming from the checkpoint at step"),
        "{err}"
    );
    assert!(
        !err.contains(&format!("resuming from the checkpoint at step {steps}")),
        "{err}"
    );
    // Resumed exactly: the same weights, byte for byte; the checkpoints are gone.
    let weights = |results: &Path| {
        let link = results.join("tiny_mnist").join("stages").join("ddpm");
        std::fs::read(link.join("weights.safetensors")).unwrap()
    };
    assert_eq!(weights(&straight), weights(&interrupted));
    assert!(!checkpoint.exists());
}
