//! The Slurm executor: each stage the DAG loop hands over becomes a task of a job array
//! that runs `runner worker` on the same binary, and the driver follows the jobs until
//! their stages are committed to the shared cache.
//!
//! A stage is submitted once its inputs are committed (the loop's rule for every
//! executor), not ahead of them with `--dependency=afterok`: a requeued or preempted
//! input, a stage that another run computed meanwhile, or a failure that must skip the
//! dependents are then all decided by the cache, in one place, and Slurm's dependency
//! bookkeeping (jobs left pending forever when an input fails) never arises. Stages that
//! are ready together, of one kind and with the same resources, go out as one array.

pub mod queue;
pub mod records;
pub mod script;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use petgraph::Direction;

use self::queue::{Phase, Report, Source};
use self::records::{Record, Records};
use self::script::{Task, WorkerCommand};
use super::executor::{Executor, Finished, Job, JobRef, Status};
use crate::cache::Cache;
use crate::pipeline::Plan;
use crate::pipeline::cluster::SlurmSettings;
use crate::progress::Progress;

/// Tasks in one array at most (Slurm's default `MaxArraySize` is 1001).
const MAX_ARRAY: usize = 1000;

/// Times a stage is submitted again after preemption before it counts as failed.
const MAX_PREEMPTIONS: u32 = 5;

/// How long a job Slurm has never reported may take to appear before it counts as lost.
const APPEAR_WITHIN: Duration = Duration::from_secs(300);

/// Polls in a row that may fail (a busy controller) before the jobs count as lost.
const POLL_FAILURES: u32 = 30;

/// Lines of a failed job's log shown with the failure.
const LOG_TAIL: usize = 12;

/// Where the driver keeps what its jobs need and leave, under the results folder (on
/// the shared filesystem, so every node sees it).
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(cache: &Cache) -> Layout {
        Layout {
            root: cache.root().join(".slurm"),
        }
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    fn scripts(&self) -> PathBuf {
        self.root.join("scripts")
    }

    fn records(&self) -> Records {
        Records::new(self.root.join("jobs"))
    }

    /// The log of a stage's job: named after its label and key.
    pub fn log(&self, label: &str, key: &str) -> PathBuf {
        self.logs()
            .join(format!("{}-{}.log", script::file_part(label), &key[..12]))
    }

    /// The copy of `bytes` named `<prefix>-<sha>` (what the workers run and read:
    /// rebuilding runner or editing the pipeline while jobs wait does not change them).
    fn snapshot_path(&self, dir: &str, prefix: &str, suffix: &str, bytes: &[u8]) -> PathBuf {
        let sha = crate::cache::store::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes));
        self.root
            .join(dir)
            .join(format!("{prefix}-{}{suffix}", &sha[..16]))
    }
}

/// What `gc` deletes of the driver's files: the logs of stages that are not in the
/// cache (after the collection), and, when no job of any driver is in flight (no job
/// record is left), the snapshots of binaries, pipelines and scripts (the next run
/// copies what it needs again). Returns each file with its size; deletes only without
/// `dry_run` (`collected`: the keys the collection deletes, or would).
pub fn prune(
    cache: &Cache,
    collected: &std::collections::HashSet<String>,
    dry_run: bool,
) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let layout = Layout::new(cache);
    let files = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default()
    };
    let keys: Vec<String> = cache
        .keys()
        .unwrap_or_default()
        .into_iter()
        .filter(|k| !collected.contains(k))
        .collect();
    let mut doomed: Vec<PathBuf> = files(layout.logs())
        .into_iter()
        .filter(|log| {
            let stem = log
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let prefix = stem.rsplit('-').next().unwrap_or_default();
            !keys
                .iter()
                .any(|k| k.starts_with(prefix) && prefix.len() == 12)
        })
        .collect();
    if files(layout.root.join("jobs")).is_empty() {
        for dir in ["bin", "pipelines", "scripts"] {
            doomed.extend(files(layout.root.join(dir)));
        }
    }
    let mut freed = Vec::new();
    for path in doomed {
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        if !dry_run {
            std::fs::remove_file(&path)?;
        }
        freed.push((path, bytes));
    }
    Ok(freed)
}

/// How the driver's command line varied the pipeline: workers vary it the same way.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub profile: Option<String>,
    pub set: Vec<String>,
    pub sweep: Vec<String>,
}

/// The worker command line for `plan`: its binary and pipeline file copied under the
/// results folder (when `install`; a dry run only names them), absolute paths.
pub fn worker_command(
    plan: &Plan,
    layout: &Layout,
    results: &Path,
    invocation: &Invocation,
    install: bool,
) -> Result<WorkerCommand, String> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let exe = std::env::current_exe().map_err(|e| format!("cannot find runner's binary: {e}"))?;
    let binary_bytes =
        std::fs::read(&exe).map_err(|e| format!("reading {}: {e}", exe.display()))?;
    let binary = layout.snapshot_path("bin", "runner", "", &binary_bytes);
    let file = layout.snapshot_path("pipelines", &plan.name, ".yaml", plan.source.as_bytes());
    if install {
        for (path, bytes, mode) in [
            (&binary, &binary_bytes[..], 0o755),
            (&file, plan.source.as_bytes(), 0o644),
        ] {
            if path.exists() {
                continue;
            }
            let dir = path.parent().expect("snapshots are in a folder");
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            crate::artifacts::replace(path, bytes)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(WorkerCommand {
        binary: absolute(&binary)?,
        results: absolute(results)?,
        file: absolute(&file)?,
        profile: invocation.profile.clone(),
        set: invocation.set.clone(),
        sweep: invocation.sweep.clone(),
        workdir: std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?,
    })
}

/// One submission as the driver groups them: stages of one kind, resources, device and
/// `--force`, ready together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    kind: &'static str,
    options: Vec<String>,
    device: String,
    force: bool,
}

impl GroupKey {
    /// The group of `node`'s job: its resources as sbatch options, and the run's device
    /// only when the job gets GPUs (the CPU otherwise).
    fn of(
        plan: &Plan,
        node: &crate::pipeline::StageNode,
        run_device: &str,
        force: bool,
    ) -> GroupKey {
        let resources = plan.resources.for_stage(node.kind(), &node.id);
        GroupKey {
            kind: node.kind().name(),
            device: if resources.has_gpus() {
                run_device.to_string()
            } else {
                "cpu".into()
            },
            options: resources.sbatch_options(),
            force,
        }
    }
}

/// A submission's job name: the stage key for one stage, the kind and count for an array.
fn job_name(kind: &str, keys: &[&str]) -> String {
    match keys {
        [key] => format!("runner-{}", &key[..12]),
        _ => format!("runner-{kind}-x{}-{}", keys.len(), &keys[0][..12]),
    }
}

/// The scripts a run of `plan` would submit, wave by wave (a wave's inputs are the
/// waves before it): what `runner plan --executor slurm` prints.
pub fn dry_run(
    plan: &Plan,
    cache: &Cache,
    command: &WorkerCommand,
    run_device: &str,
    force: &[String],
) -> Vec<(usize, String)> {
    let layout = Layout::new(cache);
    let mut wave: HashMap<petgraph::graph::NodeIndex, usize> = HashMap::new();
    let mut groups: BTreeMap<(usize, GroupKey), Vec<Task>> = BTreeMap::new();
    for &ix in &plan.order {
        let node = &plan.graph[ix];
        let forced = force.contains(&node.id);
        if !forced && cache.is_cached(&node.key) {
            continue;
        }
        let w = plan
            .graph
            .neighbors_directed(ix, Direction::Incoming)
            .filter_map(|i| wave.get(&i))
            .max()
            .map_or(1, |w| w + 1);
        wave.insert(ix, w);
        groups
            .entry((w, GroupKey::of(plan, node, run_device, forced)))
            .or_default()
            .push(Task {
                key: node.key.clone(),
                label: node.name(),
                log: layout.log(&node.name(), &node.key),
            });
    }
    let limit = plan.slurm.array_limit();
    let mut scripts = Vec::new();
    for ((w, group), tasks) in groups {
        for chunk in tasks.chunks(MAX_ARRAY) {
            let keys: Vec<&str> = chunk.iter().map(|t| t.key.as_str()).collect();
            let name = job_name(group.kind, &keys);
            scripts.push((
                w,
                script::script(
                    command,
                    &name,
                    &group.options,
                    &group.device,
                    group.force,
                    chunk,
                    limit,
                ),
            ));
        }
    }
    scripts
}

/// A stage's job the driver follows.
struct Active<'p> {
    job: Job<'p>,
    task: JobRef,
    submitted: Instant,
    /// Slurm has reported it at least once.
    seen: bool,
    running: bool,
    /// Submitted by an earlier driver of the same results folder.
    adopted: bool,
    preemptions: u32,
}

impl Active<'_> {
    /// The array's (or job's) id, which `sacct -j` and `scancel` take.
    fn base(&self) -> &str {
        self.task.id.split('_').next().unwrap_or_default()
    }
}

/// Runs stages as Slurm jobs (see the module's comment).
pub struct SlurmExecutor<'p> {
    plan: &'p Plan,
    cache: &'p Cache,
    progress: &'p Progress,
    layout: Layout,
    records: Records,
    command: WorkerCommand,
    run_device: String,
    settings: SlurmSettings,
    source: Source,
    /// Offered and not yet submitted (with the times each was preempted).
    queued: Vec<(Job<'p>, u32)>,
    active: Vec<Active<'p>>,
    done: VecDeque<Finished>,
    next_poll: Instant,
    poll_failures: u32,
    /// sbatch calls made (the benchmark reads it).
    pub submissions: usize,
}

impl<'p> SlurmExecutor<'p> {
    pub fn new(
        plan: &'p Plan,
        cache: &'p Cache,
        progress: &'p Progress,
        command: WorkerCommand,
        run_device: String,
    ) -> SlurmExecutor<'p> {
        let layout = Layout::new(cache);
        // Jobs of an earlier driver may predate this one: look back a day.
        let since = chrono::Local::now() - chrono::Duration::days(1);
        SlurmExecutor {
            plan,
            cache,
            progress,
            records: layout.records(),
            layout,
            command,
            run_device,
            settings: plan.slurm,
            source: Source::Accounting {
                since: since.format("%Y-%m-%dT%H:%M:%S").to_string(),
            },
            queued: Vec::new(),
            active: Vec::new(),
            done: VecDeque::new(),
            next_poll: Instant::now(),
            poll_failures: 0,
            submissions: 0,
        }
    }

    fn finish(&mut self, job: &Job<'p>, status: Status, seconds: f64, task: Option<JobRef>) {
        if task.is_some() {
            self.records.remove(&job.node.key);
        }
        self.done.push_back(Finished {
            ix: job.ix,
            status,
            seconds,
            job: task,
        });
    }

    /// Submits what is queued, one array per group.
    fn flush(&mut self) {
        let mut groups: BTreeMap<GroupKey, Vec<(Job<'p>, u32)>> = BTreeMap::new();
        for (job, preemptions) in std::mem::take(&mut self.queued) {
            let key = GroupKey::of(self.plan, job.node, &self.run_device, job.force);
            groups.entry(key).or_default().push((job, preemptions));
        }
        for (group, mut jobs) in groups {
            while !jobs.is_empty() {
                let rest = jobs.split_off(jobs.len().min(MAX_ARRAY));
                let chunk = std::mem::replace(&mut jobs, rest);
                self.submit_array(&group, chunk);
            }
        }
    }

    fn submit_array(&mut self, group: &GroupKey, jobs: Vec<(Job<'p>, u32)>) {
        let tasks: Vec<Task> = jobs
            .iter()
            .map(|(job, _)| Task {
                key: job.node.key.clone(),
                label: job.node.name(),
                log: self.layout.log(&job.node.name(), &job.node.key),
            })
            .collect();
        let keys: Vec<&str> = tasks.iter().map(|t| t.key.as_str()).collect();
        let text = script::script(
            &self.command,
            &job_name(group.kind, &keys),
            &group.options,
            &group.device,
            group.force,
            &tasks,
            self.settings.array_limit(),
        );
        let path = self
            .layout
            .snapshot_path("scripts", group.kind, ".sh", text.as_bytes());
        let submitted = std::fs::create_dir_all(self.layout.scripts())
            .and_then(|()| std::fs::create_dir_all(self.layout.logs()))
            .map_err(|e| format!("creating {}: {e}", self.layout.root.display()))
            .and_then(|()| {
                crate::artifacts::replace(&path, text.as_bytes())
                    .map_err(|e| format!("writing {}: {e}", path.display()))
            })
            .and_then(|()| queue::sbatch(&path));
        self.submissions += 1;
        let id = match submitted {
            Ok(id) => id,
            Err(why) => {
                for (job, _) in jobs {
                    self.finish(&job, Status::Failed(why.clone()), 0.0, None);
                }
                return;
            }
        };
        let array = tasks.len() > 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (i, ((job, preemptions), task)) in jobs.into_iter().zip(tasks).enumerate() {
            let task = JobRef {
                id: if array {
                    format!("{id}_{i}")
                } else {
                    id.clone()
                },
                log: task.log,
            };
            let record = Record {
                job: task.clone(),
                stage: job.node.name(),
                submitted_unix: now,
            };
            if let Err(e) = self.records.put(&job.node.key, &record) {
                self.progress.println(&format!(
                    "warning: cannot record job {} in {}: {e}; a driver started after this one is stopped would submit the stage again",
                    task.id,
                    self.records.dir().display()
                ));
            }
            self.progress.println(&format!(
                "  {:<20} submitted as job {}",
                job.node.name(),
                task.id
            ));
            self.active.push(Active {
                job,
                task,
                submitted: Instant::now(),
                seen: false,
                running: false,
                adopted: false,
                preemptions,
            });
        }
    }

    /// Asks Slurm how the jobs are doing and finishes those that ended.
    fn poll(&mut self) {
        let ids = self.job_ids();
        let states = match queue::states(&mut self.source, &ids) {
            Ok(states) => {
                self.poll_failures = 0;
                states
            }
            Err(why) => {
                self.poll_failures += 1;
                self.progress
                    .println(&format!("warning: {why}; asking again"));
                if self.poll_failures >= POLL_FAILURES {
                    for a in std::mem::take(&mut self.active) {
                        let message = format!("lost track of job {}: {why}", a.task.id);
                        self.finish(&a.job, Status::Failed(message), 0.0, Some(a.task));
                    }
                }
                return;
            }
        };
        for mut a in std::mem::take(&mut self.active) {
            let Some(report) = states.get(&a.task.id) else {
                self.missing(a);
                continue;
            };
            match queue::phase(&report.state) {
                Phase::Waiting => {
                    if a.adopted && !a.seen {
                        self.progress.println(&format!(
                            "  {:<20} following job {} (submitted by an earlier run, {})",
                            a.job.node.name(),
                            a.task.id,
                            report.state.to_lowercase()
                        ));
                    }
                    a.seen = true;
                    self.active.push(a);
                }
                Phase::Running => {
                    if !a.running {
                        let on = report
                            .node
                            .as_ref()
                            .map_or(String::new(), |n| format!(" on {n}"));
                        self.progress.println(&format!(
                            "  {:<20} running as job {}{on}",
                            a.job.node.name(),
                            a.task.id
                        ));
                    }
                    (a.seen, a.running) = (true, true);
                    self.active.push(a);
                }
                Phase::Completed => self.completed(a),
                Phase::Preempted if a.preemptions < MAX_PREEMPTIONS => {
                    self.progress.println(&format!(
                        "  {:<20} job {} was preempted: submitting it again",
                        a.job.node.name(),
                        a.task.id
                    ));
                    self.records.remove(&a.job.node.key);
                    self.queued.push((a.job, a.preemptions + 1));
                }
                Phase::Preempted => {
                    let why = format!("the job was preempted {} times", a.preemptions + 1);
                    self.failed(a, &why, report);
                }
                Phase::Failed(why) => self.failed(a, &why, report),
            }
        }
    }

    /// A job Slurm did not report.
    fn missing(&mut self, a: Active<'p>) {
        let cached = self.cache.is_cached(&a.job.node.key);
        if a.adopted && !a.seen {
            // An earlier run's job that has ended and left the queue.
            if cached {
                self.finish(&a.job, Status::Cached, 0.0, Some(a.task));
            } else {
                self.records.remove(&a.job.node.key);
                self.queued.push((a.job, a.preemptions));
            }
        } else if a.seen {
            // It left the queue between two polls: its entry says how it ended.
            if cached {
                self.completed(a);
            } else {
                let why = format!(
                    "job {} left Slurm's queue without committing its stage (its end state is unknown: accounting is disabled and the job is gone from squeue){}",
                    a.task.id,
                    log_tail(&a.task.log)
                );
                self.finish(&a.job, Status::Failed(why), 0.0, Some(a.task));
            }
        } else if a.submitted.elapsed() > APPEAR_WITHIN {
            let why = format!(
                "Slurm has not reported job {} in {} s since it was submitted",
                a.task.id,
                APPEAR_WITHIN.as_secs()
            );
            self.finish(&a.job, Status::Failed(why), 0.0, Some(a.task));
        } else {
            self.active.push(a);
        }
    }

    fn completed(&mut self, a: Active<'p>) {
        match self.cache.manifest(&a.job.node.key) {
            Ok(Some(manifest)) => {
                // The worker's last line says whether it computed or found the entry.
                let log = std::fs::read_to_string(&a.task.log).unwrap_or_default();
                let cached = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .is_some_and(|l| l.starts_with("cached "));
                let (status, seconds) = if cached {
                    (Status::Cached, 0.0)
                } else {
                    (Status::Computed, manifest.seconds)
                };
                self.finish(&a.job, status, seconds, Some(a.task));
            }
            _ => {
                let why = format!(
                    "job {} ended COMPLETED but its stage is not in the cache (is results/ on a filesystem every node shares?){}",
                    a.task.id,
                    log_tail(&a.task.log)
                );
                self.finish(&a.job, Status::Failed(why), 0.0, Some(a.task));
            }
        }
    }

    fn failed(&mut self, a: Active<'p>, why: &str, report: &Report) {
        let exit = report
            .exit
            .as_ref()
            .filter(|e| e.as_str() != "0:0")
            .map_or(String::new(), |e| format!(", exit code {e}"));
        let message = format!(
            "{why} (Slurm job {}, {}{exit}){}",
            a.task.id,
            report.state,
            log_tail(&a.task.log)
        );
        self.finish(&a.job, Status::Failed(message), 0.0, Some(a.task));
    }

    /// The user stopped the run: cancel every job, wait until Slurm has ended them.
    fn cancel_all(&mut self) {
        for (job, _) in std::mem::take(&mut self.queued) {
            self.finish(&job, Status::Cancelled("not submitted".into()), 0.0, None);
        }
        let ids = self.job_ids();
        if !ids.is_empty() {
            eprintln!(
                "cancelling {} Slurm job{} of this run: scancel {}",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                ids.join(" ")
            );
            if let Err(why) = queue::scancel(&ids) {
                eprintln!("warning: {why}; cancel them by hand");
            }
            // Until Slurm says they ended, a worker may still commit (harmless: the
            // cache stays consistent), but the user expects an empty queue.
            let until = Instant::now() + Duration::from_secs(120);
            while Instant::now() < until {
                let alive = queue::states(&mut self.source, &ids).map(|states| {
                    states
                        .values()
                        .any(|r| matches!(queue::phase(&r.state), Phase::Waiting | Phase::Running))
                });
                if let Ok(false) = alive {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            eprintln!("cancelled: {}", ids.join(" "));
        }
        for a in std::mem::take(&mut self.active) {
            let status = if self.cache.is_cached(&a.job.node.key) {
                Status::Computed
            } else {
                Status::Cancelled(format!("job {} cancelled", a.task.id))
            };
            self.finish(&a.job, status, 0.0, Some(a.task));
        }
    }
}

/// The last lines of a job's log, for a failure's message.
fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            format!(
                "; log {}, last lines:\n{}",
                log.display(),
                tail.iter()
                    .map(|l| format!("    | {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        }
        Err(_) => format!(
            "; no log at {} (do the nodes see the results folder?)",
            log.display()
        ),
    }
}

impl<'p> Executor<'p> for SlurmExecutor<'p> {
    fn submit(&mut self, job: Job<'p>) -> Result<(), Job<'p>> {
        let key = &job.node.key;
        if !job.force && self.cache.is_cached(key) {
            self.finish(&job, Status::Cached, 0.0, None);
            return Ok(());
        }
        if !job.force
            && let Some(record) = self.records.get(key)
        {
            self.active.push(Active {
                job,
                task: record.job,
                submitted: Instant::now(),
                seen: false,
                running: false,
                adopted: true,
                preemptions: 0,
            });
            self.next_poll = Instant::now();
            return Ok(());
        }
        self.queued.push((job, 0));
        Ok(())
    }

    fn wait(&mut self) -> Finished {
        loop {
            if let Some(finished) = self.done.pop_front() {
                return finished;
            }
            if crate::interrupt::requested() && (!self.queued.is_empty() || !self.active.is_empty())
            {
                self.cancel_all();
                continue;
            }
            if !self.queued.is_empty() {
                // Adopted jobs are looked at first: those that are gone are queued.
                if self.active.iter().any(|a| a.adopted && !a.seen) {
                    self.poll();
                }
                self.flush();
                self.next_poll = Instant::now() + self.poll_interval();
                continue;
            }
            if Instant::now() >= self.next_poll {
                self.poll();
                self.next_poll = Instant::now() + self.poll_interval();
                continue;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl SlurmExecutor<'_> {
    /// The jobs followed, by the id `sacct -j` and `scancel` take (an array's for its tasks).
    fn job_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.active.iter().map(|a| a.base().to_string()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.settings.poll_seconds())
    }
}
