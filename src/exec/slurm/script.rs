//! The batch script of one submission: a job array whose task `i` runs `runner worker`
//! for the `i`th stage (one task, no array, when there is one stage). Everything it
//! names is an absolute path, so it runs the same from any node that sees them.

use std::path::{Path, PathBuf};

/// How a worker plans the pipeline: the same file (a snapshot the driver keeps), profile,
/// overrides and sweeps as the driver, so that keys agree.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The runner binary the workers run (a copy under the results folder).
    pub binary: PathBuf,
    pub results: PathBuf,
    pub file: PathBuf,
    pub profile: Option<String>,
    pub set: Vec<String>,
    pub sweep: Vec<String>,
    /// The driver's working directory: relative data paths resolve from it.
    pub workdir: PathBuf,
}

impl WorkerCommand {
    /// The command line up to `--key`, quoted for bash.
    fn words(&self, device: &str, force: bool) -> String {
        let mut words = vec![
            quote_path(&self.binary),
            "--results".into(),
            quote_path(&self.results),
            "worker".into(),
            quote_path(&self.file),
        ];
        if let Some(p) = &self.profile {
            words.extend(["--profile".into(), quote(p)]);
        }
        for s in &self.set {
            words.extend(["--set".into(), quote(s)]);
        }
        for s in &self.sweep {
            words.extend(["--sweep".into(), quote(s)]);
        }
        words.extend(["--device".into(), device.into()]);
        if force {
            words.push("--force".into());
        }
        words.join(" ")
    }
}

/// One stage of a submission.
#[derive(Debug, Clone)]
pub struct Task {
    pub key: String,
    pub label: String,
    pub log: PathBuf,
}

/// The script for `tasks` (all with the same resources, as sbatch options), at most
/// `limit` at once.
pub fn script(
    command: &WorkerCommand,
    name: &str,
    sbatch_options: &[String],
    device: &str,
    force: bool,
    tasks: &[Task],
    limit: u32,
) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!("#SBATCH --job-name={name}\n"));
    if tasks.len() > 1 {
        s.push_str(&format!("#SBATCH --array=0-{}%{limit}\n", tasks.len() - 1));
    }
    s.push_str(&format!("#SBATCH --chdir={}\n", command.workdir.display()));
    // Each task writes its own log (below); Slurm's own file would be one more per task.
    s.push_str("#SBATCH --output=/dev/null\n");
    for option in sbatch_options {
        s.push_str(&format!("#SBATCH {option}\n"));
    }
    s.push_str(&format!(
        "# runner {}: {} stage{} (task i computes stage i)\n",
        env!("CARGO_PKG_VERSION"),
        tasks.len(),
        if tasks.len() == 1 { "" } else { "s" }
    ));
    let list = |f: &dyn Fn(&Task) -> String| {
        tasks
            .iter()
            .map(|t| format!("  {}\n", f(t)))
            .collect::<String>()
    };
    s.push_str(&format!("labels=(\n{})\n", list(&|t| quote(&t.label))));
    s.push_str(&format!("keys=(\n{})\n", list(&|t| t.key.clone())));
    s.push_str(&format!("logs=(\n{})\n", list(&|t| quote_path(&t.log))));
    s.push_str("i=${SLURM_ARRAY_TASK_ID:-0}\n");
    // Appended: a requeued task keeps what its earlier attempt wrote.
    s.push_str("exec >>\"${logs[$i]}\" 2>&1\n");
    s.push_str(
        "echo \"== ${labels[$i]}: Slurm job ${SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+ (task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID})} on $(hostname) at $(date '+%F %T')\"\n",
    );
    s.push_str(&format!(
        "exec {} --key \"${{keys[$i]}}\"\n",
        command.words(device, force)
    ));
    s
}

/// `text` as one bash word.
pub fn quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=,:+@%".contains(c))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn quote_path(path: &Path) -> String {
    quote(&path.display().to_string())
}

/// A file name part made of a stage's label (`ddpm[lr=0.001]` -> `ddpm_lr=0.001_`).
pub fn file_part(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> WorkerCommand {
        WorkerCommand {
            binary: "/shared/bin/runner".into(),
            results: "/shared/results".into(),
            file: "/shared/results/.cache/.slurm/pipelines/p.yaml".into(),
            profile: Some("cluster".into()),
            set: vec!["ddpm.params.lr=3e-4".into(), "note=it's".into()],
            sweep: vec![],
            workdir: "/home/me/project".into(),
        }
    }

    #[test]
    fn an_array_runs_the_worker_on_its_tasks_stage_with_the_resources() {
        let resources: crate::pipeline::cluster::Resources =
            serde_norway::from_str("{ time: 2h, gpus: 1, partition: gpu }").unwrap();
        let tasks: Vec<Task> = (0..3)
            .map(|i| Task {
                key: format!("{i}{}", "a".repeat(63)),
                label: format!("s[lr={i}]"),
                log: format!("/shared/results/.cache/.slurm/logs/s{i}.log").into(),
            })
            .collect();
        let s = script(
            &command(),
            "runner-train-3",
            &resources.sbatch_options(),
            "auto",
            false,
            &tasks,
            20,
        );
        assert!(s.starts_with("#!/bin/bash\n#SBATCH --job-name=runner-train-3\n"));
        for line in [
            "#SBATCH --array=0-2%20",
            "#SBATCH --chdir=/home/me/project",
            "#SBATCH --time=02:00:00",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --partition=gpu",
            "  's[lr=1]'",
            "  /shared/results/.cache/.slurm/logs/s2.log",
        ] {
            assert!(s.lines().any(|l| l == line), "no line {line:?} in\n{s}");
        }
        assert!(s.contains(&format!("  2{}\n", "a".repeat(63))), "{s}");
        assert!(
            s.contains("exec /shared/bin/runner --results /shared/results worker /shared/results/.cache/.slurm/pipelines/p.yaml --profile cluster --set ddpm.params.lr=3e-4 --set 'note=it'\\''s' --device auto --key \"${keys[$i]}\""),
            "{s}"
        );
        let one = script(
            &command(),
            "runner-k",
            &resources.sbatch_options(),
            "cpu",
            true,
            &tasks[..1],
            20,
        );
        assert!(!one.contains("--array"), "{one}");
        assert!(one.contains("--device cpu --force --key"), "{one}");
    }

    /// The script is bash: run it with a stand-in binary and check what task 1 ran.
    #[test]
    fn the_script_runs_the_worker_for_its_task_and_logs_to_the_tasks_file() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("runner");
        std::fs::write(&fake, "#!/bin/bash\necho \"args: $*\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = command();
        c.binary = fake;
        c.workdir = dir.path().to_path_buf();
        let tasks: Vec<Task> = (0..2)
            .map(|i| Task {
                key: format!("key{i}"),
                label: format!("stage {i}"),
                log: dir.path().join(format!("log{i}")),
            })
            .collect();
        let path = dir.path().join("job.sh");
        std::fs::write(&path, script(&c, "n", &[], "cpu", false, &tasks, 5)).unwrap();
        let status = std::process::Command::new("bash")
            .arg(&path)
            .env("SLURM_ARRAY_TASK_ID", "1")
            .env("SLURM_ARRAY_JOB_ID", "77")
            .env("SLURM_JOB_ID", "78")
            .status()
            .unwrap();
        assert!(status.success());
        assert!(!dir.path().join("log0").exists());
        let log = std::fs::read_to_string(dir.path().join("log1")).unwrap();
        assert!(
            log.starts_with("== stage 1: Slurm job 78 (task 77_1) on "),
            "{log}"
        );
        assert!(
            log.contains("--set note=it's --device cpu --key key1\n"),
            "{log}"
        );
    }

    #[test]
    fn quoting_keeps_every_character() {
        assert_eq!(quote("plain-1.0"), "plain-1.0");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(file_part("ddpm[lr=0.001]"), "ddpm_lr=0.001_");
    }
}
