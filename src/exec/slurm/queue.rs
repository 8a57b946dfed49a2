//! Talking to Slurm: `sbatch` to submit, `sacct` (or `squeue` where accounting is
//! disabled) to follow jobs, `scancel` to stop them. Each is the command found on PATH,
//! so a site's wrappers (and the tests' stand-ins) are used as they are.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// What a job's state means to the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Queued, or held, or requeued: not running yet.
    Waiting,
    Running,
    Completed,
    /// Stopped for a job of higher priority: submitted again.
    Preempted,
    /// Ended without its stage: why, in the user's terms.
    Failed(String),
}

/// Slurm's state names (`squeue`'s `%T`, `sacct`'s `State`) read as [`Phase`]s.
pub fn phase(state: &str) -> Phase {
    // sacct writes `CANCELLED by 1000`.
    let name = state.split_whitespace().next().unwrap_or_default();
    match name {
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD"
        | "SUSPENDED" | "STOPPED" | "RESIZING" => Phase::Waiting,
        "RUNNING" | "CONFIGURING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" => Phase::Running,
        "COMPLETED" => Phase::Completed,
        "PREEMPTED" => Phase::Preempted,
        "FAILED" => Phase::Failed("the worker failed".into()),
        "CANCELLED" => Phase::Failed(
            "the job was cancelled outside runner (scancel, or an administrator)".into(),
        ),
        "TIMEOUT" => Phase::Failed(
            "the job reached its time limit; raise `time` in `resources:` (a training goes on from its last checkpoint)".into(),
        ),
        "OUT_OF_MEMORY" => {
            Phase::Failed("the job ran out of memory; raise `mem` in `resources:`".into())
        }
        "NODE_FAIL" => Phase::Failed("the job's node failed; run again to resubmit it".into()),
        "BOOT_FAIL" => {
            Phase::Failed("the job's node failed to boot; run again to resubmit it".into())
        }
        "DEADLINE" => Phase::Failed("the job reached its deadline before it could end".into()),
        other => Phase::Failed(format!("the job ended in Slurm state {other}")),
    }
}

/// One job or array task as Slurm reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub state: String,
    /// `sacct`'s `ExitCode` (`1:0`), when accounting gives it.
    pub exit: Option<String>,
    pub node: Option<String>,
}

/// Submits a batch script; returns the job id (`sbatch --parsable` prints `id` or
/// `id;cluster`).
pub fn sbatch(script: &Path) -> Result<String, String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| format!("cannot run sbatch: {e}; is Slurm's client on PATH?"))?;
    if !out.status.success() {
        return Err(format!(
            "sbatch refused the job: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    job_id(&String::from_utf8_lossy(&out.stdout))
}

/// The job id in what `sbatch --parsable` prints: `id` or `id;cluster`, on its last line
/// (site wrappers may print notices before it).
fn job_id(text: &str) -> Result<String, String> {
    let id = text
        .lines()
        .last()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("sbatch answered `{}`, not a job id", text.trim()));
    }
    Ok(id)
}

/// Cancels jobs (whole arrays by their id).
pub fn scancel(ids: &[String]) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    let out = Command::new("scancel")
        .args(ids)
        .output()
        .map_err(|e| format!("cannot run scancel: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scancel {}: {}",
            ids.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Where job states come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `sacct`, from this time on (`--starttime`: its default window starts at midnight,
    /// so a job submitted before it would be missing).
    Accounting { since: String },
    /// `squeue --states=all`: jobs stay in it for `MinJobAge` after they end.
    Queue,
}

/// The states of the jobs `ids` (array ids cover their tasks), by job or task id
/// (`123`, `123_4`). Accounting that turns out to be disabled switches `source` to the
/// queue, once, and says so.
pub fn states(source: &mut Source, ids: &[String]) -> Result<HashMap<String, Report>, String> {
    if let Source::Accounting { since } = source {
        match sacct(since, ids) {
            Ok(states) => return Ok(states),
            Err(Unavailable::Disabled(why)) => {
                eprintln!(
                    "note: {why}; following jobs with `squeue --states=all` instead (an ended job stays there for MinJobAge seconds; runner polls well within that)"
                );
                *source = Source::Queue;
            }
            Err(Unavailable::Failed(why)) => return Err(why),
        }
    }
    squeue(ids)
}

enum Unavailable {
    /// No accounting here: use the queue.
    Disabled(String),
    /// A transient failure: try again at the next poll.
    Failed(String),
}

fn sacct(since: &str, ids: &[String]) -> Result<HashMap<String, Report>, Unavailable> {
    let out = Command::new("sacct")
        .args(["-X", "-n", "-P", "-o", "JobID,State,ExitCode,NodeList"])
        .arg(format!("--starttime={since}"))
        .arg(format!("--jobs={}", ids.join(",")))
        .output()
        .map_err(|e| Unavailable::Disabled(format!("sacct cannot run ({e})")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let lower = stderr.to_ascii_lowercase();
        if lower.contains("disabled") || lower.contains("not configured") {
            return Err(Unavailable::Disabled(format!(
                "Slurm accounting is not available here (sacct: {})",
                stderr.trim()
            )));
        }
        return Err(Unavailable::Failed(format!(
            "sacct failed: {}",
            stderr.trim()
        )));
    }
    let mut states = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split('|').collect();
        let [id, state, exit, node, ..] = fields.as_slice() else {
            continue;
        };
        let report = Report {
            state: state.to_string(),
            exit: Some(exit.to_string()),
            node: Some(node.to_string()).filter(|n| !n.is_empty() && *n != "None assigned"),
        };
        for id in expand(id) {
            states.insert(id, report.clone());
        }
    }
    Ok(states)
}

fn squeue(ids: &[String]) -> Result<HashMap<String, Report>, String> {
    // Without `-j`: squeue refuses a list in which one id has left the queue.
    let out = Command::new("squeue")
        .args(["--me", "--states=all", "-h", "-r", "-o", "%i|%T|%N"])
        .output()
        .map_err(|e| format!("cannot run squeue: {e}; is Slurm's client on PATH?"))?;
    if !out.status.success() {
        return Err(format!(
            "squeue failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let ours = |id: &str| {
        let job = id.split('_').next().unwrap_or_default();
        ids.iter().any(|i| i == job)
    };
    let mut states = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split('|').collect();
        let [id, state, node, ..] = fields.as_slice() else {
            continue;
        };
        for id in expand(id).into_iter().filter(|i| ours(i)) {
            let report = Report {
                state: state.to_string(),
                exit: None,
                node: Some(node.to_string()).filter(|n| !n.is_empty()),
            };
            states.insert(id, report);
        }
    }
    Ok(states)
}

/// A job id as Slurm prints it, as the ids it covers: `123`, `123_4`, and pending
/// array tasks `123_[0-3,7%2]` as `123_0`..`123_3`, `123_7`.
pub fn expand(id: &str) -> Vec<String> {
    let Some((job, rest)) = id.split_once("_[") else {
        return vec![id.to_string()];
    };
    let ranges = rest.trim_end_matches(']');
    let ranges = ranges.split('%').next().unwrap_or_default();
    let mut ids = Vec::new();
    for part in ranges.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
            continue;
        };
        // A range's step (`0-9:2`) is not used by runner's arrays.
        ids.extend((a..=b.min(a + 1_000_000)).map(|i| format!("{job}_{i}")));
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_id_is_read_with_or_without_its_cluster() {
        assert_eq!(job_id("4242\n"), Ok("4242".into()));
        assert_eq!(job_id("4242;gpu-cluster\n"), Ok("4242".into()));
        assert_eq!(job_id("note: using account lab\n17;c\n"), Ok("17".into()));
        assert!(job_id("sbatch: error: Batch job submission failed\n").is_err());
        assert!(job_id("").is_err());
    }

    #[test]
    fn pending_array_ranges_expand_to_their_tasks() {
        assert_eq!(expand("12"), ["12"]);
        assert_eq!(expand("12_3"), ["12_3"]);
        assert_eq!(expand("12_[0-2,5%2]"), ["12_0", "12_1", "12_2", "12_5"]);
        assert_eq!(expand("12_[7]"), ["12_7"]);
    }

    #[test]
    fn every_terminal_state_has_a_meaning() {
        assert_eq!(phase("PENDING"), Phase::Waiting);
        assert_eq!(phase("REQUEUED"), Phase::Waiting);
        assert_eq!(phase("RUNNING"), Phase::Running);
        assert_eq!(phase("COMPLETED"), Phase::Completed);
        assert_eq!(phase("PREEMPTED"), Phase::Preempted);
        for (state, words) in [
            ("FAILED", "failed"),
            ("CANCELLED by 1000", "cancelled outside runner"),
            ("TIMEOUT", "raise `time`"),
            ("OUT_OF_MEMORY", "raise `mem`"),
            ("NODE_FAIL", "node failed"),
            ("BOOT_FAIL", "failed to boot"),
            ("DEADLINE", "deadline"),
            ("SPECIAL_EXIT", "SPECIAL_EXIT"),
        ] {
            match phase(state) {
                Phase::Failed(why) => assert!(why.contains(words), "{state}: {why}"),
                other => panic!("{state} read as {other:?}"),
            }
        }
    }
}
