//! Every cache key of every shipped pipeline, under each of its profiles and with its
//! whole sweep, is the one recorded in `tests/cache_keys.txt`: a refactoring that
//! changes a key by accident (a renamed field, a reordered role, a default moved)
//! would silently recompute every user's cache. A key that must change comes with a
//! bumped stage version; then regenerate the file with `RUNNER_RECORD_KEYS=1 cargo
//! test --release --test cache_keys` and say why in the commit.

use std::path::Path;

/// Image files with fixed contents where the image pipelines look for them (relative
/// to the working directory, since a dataset's `path` is part of its key; the keys
/// hash the files' names and contents).
fn write_fixtures(dir: &Path) {
    for folder in ["data/mnist", "fashion"] {
        for (split, kind) in [
            ("train", "images-idx3"),
            ("train", "labels-idx1"),
            ("t10k", "images-idx3"),
            ("t10k", "labels-idx1"),
        ] {
            let path = dir.join(folder).join(format!("{split}-{kind}-ubyte"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{folder} {split} {kind}")).unwrap();
        }
    }
    for (class, file) in [("roses", "a.png"), ("tulips", "b.jpg")] {
        let path = dir.join("flowers").join(class).join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{class} {file}")).unwrap();
    }
}

/// `--set` values that point a pipeline at the fixtures.
fn fixture_overrides(pipeline: &str) -> Vec<String> {
    match pipeline {
        "fashion_mnist_samplers" => vec!["data.params.path=fashion".into()],
        "flowers64" => vec!["data.params.path=flowers".into()],
        _ => vec![],
    }
}

/// `pipeline profile stage key` for every node of every shipped pipeline.
fn current_keys() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = tempfile::tempdir().unwrap();
    write_fixtures(fixtures.path());
    // The only test of this binary, so changing the working directory is safe.
    std::env::set_current_dir(fixtures.path()).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(root.join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = String::new();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let sets = fixture_overrides(&name);
        let loaded = runner::pipeline::spec::load(&file, None, &sets, &[]).unwrap();
        let profiles = std::iter::once(None).chain(loaded.spec.profiles.keys().map(Some));
        for profile in profiles {
            let plan = runner::pipeline::load(&file, profile.map(String::as_str), &sets, &[])
                .unwrap_or_else(|e| panic!("{name} ({profile:?}): {e}"));
            for node in plan.nodes() {
                out.push_str(&format!(
                    "{name} {} {} {}\n",
                    profile.map(String::as_str).unwrap_or("-"),
                    node.name(),
                    node.key
                ));
            }
        }
    }
    out
}

#[test]
fn shipped_pipelines_keep_their_cache_keys() {
    let recorded_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cache_keys.txt");
    let now = current_keys();
    if std::env::var_os("RUNNER_RECORD_KEYS").is_some() {
        std::fs::write(&recorded_path, &now).unwrap();
        return;
    }
    let recorded = std::fs::read_to_string(&recorded_path).unwrap();
    let changed: Vec<String> = now
        .lines()
        .zip(recorded.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("now:  {a}\n  was:  {b}"))
        .collect();
    assert!(
        changed.is_empty() && now.lines().count() == recorded.lines().count(),
        "{} of {} keys changed ({} now, {} recorded):\n  {}",
        changed.len(),
        recorded.lines().count(),
        now.lines().count(),
        recorded.lines().count(),
        changed.join("\n  ")
    );
}
