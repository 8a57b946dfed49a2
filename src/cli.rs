//! The command line: a thin layer over the library.

/// `println!` that ends the process quietly when stdout is closed (`runner plan | head`),
/// as command-line tools do, instead of panicking on the broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::cache::{Cache, live, maintenance};
use crate::error::RunnerError;
use crate::exec::device::DeviceChoice;
use crate::exec::slurm;
use crate::exec::worker::{self, exit_code};
use crate::exec::{Outcome, RunOptions, Status, execute, from_cache};
use crate::pipeline::cluster::ExecutorName;
use crate::pipeline::{self, Plan, history};
use crate::progress::Progress;
use crate::stages::StageKind;
use crate::{catalog, report, runs};

/// Diffusion-model experiments as cached, content-hashed pipelines.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about)]
pub struct Cli {
    /// Where results and the cache live.
    #[arg(long, global = true, default_value = "results")]
    pub results: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// A pipeline file and how to vary it from the command line.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// The pipeline file (YAML).
    pub file: PathBuf,
    /// Override a value: STAGE.params.KEY=VALUE (repeatable); a swept value set this
    /// way leaves the sweep.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Sweep a value: STAGE.params.KEY=V1,V2,... (repeatable; adds an axis).
    #[arg(long = "sweep", value_name = "PATH=V1,V2")]
    pub sweep: Vec<String>,
    /// Apply a profile the pipeline file defines under `profiles:` (e.g. `cpu`).
    #[arg(long)]
    pub profile: Option<String>,
}

impl PipelineArgs {
    /// How this run was asked for, for its record.
    fn invocation(&self) -> runs::Invocation {
        runs::Invocation {
            file: self.file.display().to_string(),
            profile: self.profile.clone(),
            set: self.set.clone(),
            sweep: self.sweep.clone(),
        }
    }

    fn load(&self) -> Result<Plan, RunnerError> {
        Ok(pipeline::load(
            &self.file,
            self.profile.as_deref(),
            &self.set,
            &self.sweep,
        )?)
    }
}

/// How a pipeline runs, beyond what it is: `run` and `plan` take the same.
#[derive(Debug, Args)]
pub struct RunFlags {
    /// Stages run concurrently at most (default: number of cores).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Recompute this stage even if it is cached (repeatable).
    #[arg(long, value_name = "STAGE")]
    force: Vec<String>,
    /// Exit with code 3 when a claim of the pipeline's `expect:` section is not
    /// reproduced (or not measured).
    #[arg(long)]
    check: bool,
    /// Where stages compute: `cuda` needs a build with `--features cuda`. With
    /// `--executor slurm`, what the stages given GPUs in `resources:` run on.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Where stages run: `local` (this machine's threads) or `slurm` (a job per stage,
    /// see README "Cluster"); default: the profile's `executor:`, else local.
    #[arg(long, value_parser = parse_executor)]
    executor: Option<ExecutorName>,
}

fn parse_executor(text: &str) -> Result<ExecutorName, String> {
    ExecutorName::ALL
        .iter()
        .copied()
        .find(|e| e.name() == text)
        .ok_or_else(|| {
            format!(
                "`{text}` is not an executor; choose {}",
                ExecutorName::NAMES.join(" or ")
            )
        })
}

impl RunFlags {
    /// The executor asked for: the flag, else the profile's, else local.
    fn executor(&self, plan: &Plan) -> ExecutorName {
        self.executor
            .or(plan.executor)
            .unwrap_or(ExecutorName::Local)
    }

    /// `--device` as the worker's command line writes it.
    fn device_name(&self) -> String {
        use clap::ValueEnum;
        self.device
            .to_possible_value()
            .map_or("auto".into(), |v| v.get_name().to_string())
    }

    /// Refuses a `--force` that names no stage of `plan`.
    fn check_force(&self, plan: &Plan) -> Result<(), RunnerError> {
        for id in &self.force {
            if !plan.has_stage(id) {
                return Err(RunnerError::Usage(format!(
                    "--force {id}: no such stage; stages are: {}{}",
                    plan.stages.join(", "),
                    crate::choices::suggestion(id, plan.stages.iter().map(String::as_str))
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline: compute what is not cached, then write the report.
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[command(flatten)]
        flags: RunFlags,
        /// Show what would run, run nothing (the same as `plan`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Show every stage, in the file's order, with its key and whether it is cached or
    /// why it must run; writes nothing. Takes `run`'s flags, so a run's command line
    /// can be planned as it is.
    Plan {
        #[command(flatten)]
        pipeline: PipelineArgs,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Print the stage graph in Graphviz DOT.
    Graph {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Rebuild a report from the cache, running nothing: the latest run's (of FILE's
    /// pipeline, or of all), a recorded run's (`--run`), or FILE with the overrides
    /// given. Refuses when stages the report needs are not in the cache.
    Report {
        /// The pipeline file; without it, the latest recorded run.
        file: Option<PathBuf>,
        /// Override a value (a configuration of its own, not a recorded run's).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
        /// Sweep a value (a configuration of its own).
        #[arg(long = "sweep", value_name = "PATH=V1,V2")]
        sweep: Vec<String>,
        /// Apply a profile (a configuration of its own).
        #[arg(long)]
        profile: Option<String>,
        /// The recorded run to rebuild (an id, a unique prefix, or a pipeline name).
        #[arg(long, value_name = "RUN")]
        run: Option<String>,
    },
    /// List recorded runs (of pipeline NAME): id, date, status, stages, a headline
    /// metric and the command.
    Runs {
        /// A pipeline name (default: every pipeline).
        name: Option<String>,
    },
    /// Print a run's metrics as tables: one per evaluate stage, samples and models apart.
    Show {
        /// A run id (or a unique prefix) or a pipeline name; default: the latest run.
        run: Option<String>,
        /// JSON for scripts.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// CSV in long form (one value per row).
        #[arg(long)]
        csv: bool,
    },
    /// What changed in parameters and metrics between two runs (default: the latest
    /// two; with one run, it against the run before it of the same pipeline).
    Diff {
        /// Runs (ids, unique prefixes or pipeline names).
        runs: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete cache entries that no pipeline and no recorded run reaches (pipelines in
    /// pipelines/, or FILES).
    Gc {
        /// Pipelines whose stages (and last runs) to keep; default: pipelines/*.yaml.
        files: Vec<PathBuf>,
        /// Show what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep only the N latest recorded runs of each pipeline (and what they reach);
        /// older run records are deleted.
        #[arg(long, value_name = "N")]
        keep_runs: Option<usize>,
    },
    /// Check every cache entry's files against its manifest (sizes and sha256).
    Verify {
        /// Delete damaged entries, so the next run recomputes them.
        #[arg(long)]
        remove: bool,
    },
    /// List stage kinds, datasets, schedules, models, samplers and metrics with their
    /// parameters and defaults.
    List,
    /// Print the JSON Schema of pipeline files, for an editor's YAML support (e.g.
    /// `runner schema > pipeline.schema.json`; see README).
    Schema,
    /// Print a shell completion script (e.g. `runner completions bash >
    /// ~/.local/share/bash-completion/completions/runner`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Compute exactly one stage of a planned pipeline, found by its key, into the
    /// cache (what an executor's jobs run). Exit 0: the stage is in the cache; 1: it
    /// failed; 2: invalid command line or pipeline; 3: no stage has the key, or an
    /// input is not in the cache yet.
    #[command(hide = true)]
    Worker {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The stage's full key (64 hex digits).
        #[arg(long)]
        key: String,
        /// Recompute it even if it is cached.
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
}

/// Whether the command can stop gracefully (a run): set before it starts computing.
static GRACEFUL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn signal_name(signal: i32) -> &'static str {
    use signal_hook::consts::{SIGINT, SIGTERM};
    match signal {
        SIGINT => "SIGINT (Ctrl-C)",
        SIGTERM => "SIGTERM",
        _ => "SIGHUP",
    }
}

/// SIGINT, SIGTERM and SIGHUP. During a run the first asks it to stop at the next
/// step ([`crate::interrupt`]): trainings save a checkpoint there, nothing new starts,
/// and the report is written for what finished; a second signal, or any signal to
/// another command, ends the process at once with 128 + the signal. Nothing needs
/// undoing then either: entries appear by an atomic rename, a stage cut short leaves
/// only its staging directory (which `gc` deletes), and the OS drops the locks.
fn handle_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let name = signal_name(signal);
            if GRACEFUL.load(std::sync::atomic::Ordering::SeqCst) && !crate::interrupt::requested()
            {
                crate::interrupt::request(signal);
                eprintln!(
                    "\n{name}: stopping at the next step (a training saves a checkpoint there) and writing the report for what finished; press Ctrl-C again to quit at once"
                );
                continue;
            }
            eprintln!(
                "\ninterrupted by {name}: finished stages are cached, stages in progress are dropped (trainings keep their last checkpoint); run the same command to go on"
            );
            std::process::exit(128 + signal);
        }
    });
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::alloc::keep_freed_memory();
    let cli = Cli::parse();
    if let Some(message) = crate::nn::kernels::cpu::environment_error() {
        eprintln!("error: {message}");
        return ExitCode::from(exit_code::INVALID);
    }
    handle_signals();
    match dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunnerError::StagesFailed { failed, total }) => {
            eprintln!("error: {failed} of {total} stages failed; every other result is cached");
            ExitCode::from(1)
        }
        Err(RunnerError::Damaged(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Err(RunnerError::Interrupted { signal, message }) => {
            eprintln!("{message}");
            ExitCode::from((128 + signal).clamp(0, 255) as u8)
        }
        // Not the user's input: the machine (a full disk, a permission) failed it.
        Err(e @ (RunnerError::Report(_) | RunnerError::Cache(_))) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e @ RunnerError::StageFailed { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code::FAILED)
        }
        Err(e @ RunnerError::ClaimsFailed { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
        Err(RunnerError::NotRunnable(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(exit_code::NOT_RUNNABLE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code::INVALID)
        }
    }
}

fn dispatch(cli: &Cli) -> Result<(), RunnerError> {
    crate::cache::digests::remember_in(&cli.results.join(".cache").join("file-digests.json"));
    match &cli.command {
        Command::Run {
            pipeline,
            flags,
            dry_run,
        } => {
            let plan = pipeline.load()?;
            flags.check_force(&plan)?;
            if *dry_run {
                return print_plan(&plan, &cli.results, flags, pipeline);
            }
            let jobs = flags.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            let placement = match flags.executor(&plan) {
                ExecutorName::Local => Placement::Local {
                    device: crate::exec::device::open(flags.device).map_err(RunnerError::Usage)?,
                },
                ExecutorName::Slurm => Placement::Slurm {
                    device: flags.device_name(),
                    invocation: slurm::Invocation {
                        profile: pipeline.profile.clone(),
                        set: pipeline.set.clone(),
                        sweep: pipeline.sweep.clone(),
                    },
                },
            };
            run(
                &plan,
                &cli.results,
                jobs,
                &flags.force,
                &placement,
                flags.check,
                pipeline.invocation(),
            )
        }
        Command::Plan { pipeline, flags } => {
            let plan = pipeline.load()?;
            flags.check_force(&plan)?;
            print_plan(&plan, &cli.results, flags, pipeline)
        }
        Command::Graph { pipeline } => {
            print!("{}", pipeline::graph::to_dot(&pipeline.load()?));
            Ok(())
        }
        Command::Report {
            file,
            set,
            sweep,
            profile,
            run,
        } => rebuild_report(
            file.as_deref(),
            set,
            sweep,
            profile.as_deref(),
            run.as_deref(),
            &cli.results,
        ),
        Command::Runs { name } => list_runs(&cli.results, name.as_deref()),
        Command::Show { run, json, csv } => {
            let record = runs::find(&cli.results, run.as_deref())?;
            if *json {
                out!("{}", runs::show::json(&record));
            } else if *csv {
                print!("{}", runs::show::csv(&record).map_err(RunnerError::Report)?);
            } else {
                let width = terminal_width();
                print!("{}", runs::show::text(&record, width));
            }
            Ok(())
        }
        Command::Diff { runs: names, json } => {
            let (a, b) = pick_two(&cli.results, names)?;
            let d = runs::diff::diff(&a, &b);
            if *json {
                out!(
                    "{}",
                    serde_json::to_string_pretty(&d).expect("diffs serialize")
                );
            } else {
                print!("{}", runs::diff::text(&d));
            }
            Ok(())
        }
        Command::Gc {
            files,
            dry_run,
            keep_runs,
        } => gc(files, &cli.results, *dry_run, *keep_runs),
        Command::Verify { remove } => verify(&cli.results, *remove),
        Command::Schema => {
            out!("{}", pipeline::spec::schema());
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "runner",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::List => {
            print!("{}", catalog::describe());
            Ok(())
        }
        Command::Worker {
            pipeline,
            key,
            force,
            device,
        } => {
            let plan = pipeline.load()?;
            let cache = Cache::open(&cli.results)?;
            let _live = register(&cache, &plan)?;
            let device = crate::exec::device::open(*device).map_err(RunnerError::Usage)?;
            let status = worker::work(&plan, &cache, key, *force, &Progress::detect(), &device)?;
            // The driver reads this line; the exit code alone already says it is done.
            out!("{} {key}", status.label());
            Ok(())
        }
    }
}

/// Writes history and report under the pipeline's report lock, and keeps the report
/// as run `keep`'s while still holding it (so a run finishing at the same time cannot
/// replace the figures being kept).
fn write_report(
    plan: &Plan,
    cache: &Cache,
    outcomes: &[Outcome],
    results: &Path,
    save_history: bool,
    header: &report::Header,
    keep: Option<&mut runs::Run>,
) -> Result<report::Built, RunnerError> {
    let dir = results.join(&plan.name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| RunnerError::Report(format!("creating {}: {e}", dir.display())))?;
    // Two runs of one pipeline may finish together: one writes the folder at a time.
    let _report_lock = crate::cache::lock::KeyLock::acquire(&dir.join(".report.lock"))?;
    if save_history {
        history::save(&dir, plan)
            .map_err(|e| RunnerError::Report(format!("writing {}: {e}", dir.display())))?;
    }
    let built = report::build(plan, cache, outcomes, results, header)?;
    if let Some(run) = keep {
        run.keep_report(plan, cache, &dir, &built)?;
    }
    Ok(built)
}

/// The terminal's width, for tables that wrap to fit (none when not a terminal).
fn terminal_width() -> Option<u16> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .or(Some(120))
}

/// The two runs `diff` compares: the two named, one named and the run of its pipeline
/// before it, or the latest two.
fn pick_two(
    results: &Path,
    names: &[String],
) -> Result<(runs::RunRecord, runs::RunRecord), RunnerError> {
    let before = |b: &runs::RunRecord| {
        runs::list(results, Some(&b.pipeline))
            .into_iter()
            .rev()
            .find(|r| r.id < b.id)
            .ok_or_else(|| {
                RunnerError::Usage(format!(
                    "run {} is the first of pipeline {}: name another run to compare it with",
                    b.id, b.pipeline
                ))
            })
    };
    match names {
        [] => {
            let b = runs::find(results, None)?;
            Ok((before(&b)?, b))
        }
        [one] => {
            let b = runs::find(results, Some(one))?;
            Ok((before(&b)?, b))
        }
        [a, b] => Ok((runs::find(results, Some(a))?, runs::find(results, Some(b))?)),
        _ => Err(RunnerError::Usage(
            "`diff` compares two runs: give at most two".into(),
        )),
    }
}

/// `runner runs`: one line per run, oldest first.
fn list_runs(results: &Path, name: Option<&str>) -> Result<(), RunnerError> {
    let all = runs::list(results, name);
    if all.is_empty() {
        out!("no runs recorded under {}", results.display());
        return Ok(());
    }
    let header = [
        "id", "date", "pipeline", "status", "stages", "headline", "command",
    ];
    let mut grid = runs::show::grid(header.map(String::from).to_vec(), 7, terminal_width());
    for r in &all {
        let count = |s: &str| r.stages.iter().filter(|x| x.status == s).count();
        let stages = format!(
            "{} computed, {} cached{}",
            count("computed"),
            count("cached"),
            match count("failed") + count("skipped") {
                0 => String::new(),
                n => format!(", {n} failed"),
            }
        );
        let headline = r
            .metrics
            .first()
            .map(|m| format!("{} {}={}", m.stage, m.metric, runs::show::number(m.value)))
            .unwrap_or_default();
        let date = r.started.get(..16).unwrap_or(&r.started).replace('T', " ");
        grid.add_row([
            r.id.clone(),
            date,
            r.pipeline.clone(),
            r.status.clone(),
            stages,
            headline,
            r.command_line(),
        ]);
    }
    out!("{grid}");
    Ok(())
}

/// Prints each claim's verdict; returns how many were not reproduced (or measured).
fn print_claims(claims: &[report::claims::Verdict]) -> usize {
    if claims.is_empty() {
        return 0;
    }
    let failed = claims
        .iter()
        .filter(|c| c.outcome != report::claims::Outcome::Reproduced)
        .count();
    eprintln!(
        "claims: {} of {} reproduced",
        claims.len() - failed,
        claims.len()
    );
    for c in claims {
        eprintln!("  {:<15} {}: {}", c.label, c.claim, c.measured.join(", "));
    }
    failed
}

/// Registers a command that reads the cache for `plan`, so `gc` keeps what it reaches.
fn register(cache: &Cache, plan: &Plan) -> Result<live::LiveRun, RunnerError> {
    Ok(live::register(cache, plan.nodes().map(|n| n.key.as_str()))?)
}

/// Where a run's stages compute.
enum Placement {
    Local {
        device: candle_core::Device,
    },
    /// Slurm jobs; `device` is `--device` for the stages given GPUs.
    Slurm {
        device: String,
        invocation: slurm::Invocation,
    },
}

fn run(
    plan: &Plan,
    results: &Path,
    jobs: usize,
    force: &[String],
    placement: &Placement,
    check: bool,
    invocation: runs::Invocation,
) -> Result<(), RunnerError> {
    let cache = Cache::open(results)?;
    let _live = register(&cache, plan)?;
    let device = match placement {
        Placement::Local { device } => crate::exec::device::name(device),
        Placement::Slurm { device, .. } => format!("slurm, --device {device} where GPUs are given"),
    };
    let mut record = runs::Run::begin(results, plan, invocation, &device)?;
    GRACEFUL.store(true, std::sync::atomic::Ordering::SeqCst);
    let progress = Progress::detect().run(plan.order.len());
    let points = if plan.sweep.is_empty() {
        String::new()
    } else {
        format!("{} sweep points, ", plan.points.len())
    };
    let jobs_text = match placement {
        Placement::Local { .. } => format!("{jobs} jobs, "),
        Placement::Slurm { .. } => String::new(),
    };
    eprintln!(
        "pipeline {} ({points}{} stages, {jobs_text}{device}), run {}",
        plan.name,
        plan.order.len(),
        record.record.id
    );
    let outcomes = match placement {
        Placement::Local { device } => {
            let options = RunOptions {
                jobs,
                force: force.to_vec(),
                device: device.clone(),
            };
            execute(plan, &cache, &options, &progress)
        }
        Placement::Slurm { device, invocation } => {
            let layout = slurm::Layout::new(&cache);
            let command = slurm::worker_command(plan, &layout, results, invocation, true)
                .map_err(RunnerError::Usage)?;
            let mut executor =
                slurm::SlurmExecutor::new(plan, &cache, &progress, command, device.clone());
            crate::exec::dag::run(plan, &cache, force, &mut executor, &progress)
        }
    };
    progress.end_run();
    let count = |f: &dyn Fn(&Status) -> bool| outcomes.iter().filter(|o| f(&o.status)).count();
    let (computed, cached) = (
        count(&|s| *s == Status::Computed),
        count(&|s| *s == Status::Cached),
    );
    let failed = count(&|s| matches!(s, Status::Failed(_)));
    let skipped = count(&|s| matches!(s, Status::Skipped(_)));
    let cancelled = count(&|s| matches!(s, Status::Cancelled(_)));
    // The summary comes first: a report that cannot be written (a full disk) must
    // not hide what the stages did.
    if cached == outcomes.len() {
        eprintln!("all {} stages cached: nothing to compute", outcomes.len());
    } else {
        let cancelled = match cancelled {
            0 => String::new(),
            n => format!(", {n} cancelled"),
        };
        eprintln!(
            "{computed} computed, {cached} cached, {failed} failed, {skipped} skipped{cancelled}"
        );
    }
    for o in &outcomes {
        match &o.status {
            Status::Failed(m) => eprintln!("  failed  {}: {m}", o.name),
            Status::Skipped(input) => {
                eprintln!("  skipped {}: input `{input}` did not complete", o.name)
            }
            _ => {}
        }
    }
    let status = if cancelled > 0 || crate::interrupt::requested() {
        "interrupted"
    } else if failed + skipped > 0 {
        "failed"
    } else {
        "succeeded"
    };
    record.end(plan, &outcomes, status)?;
    let header = record.header();
    let report = write_report(
        plan,
        &cache,
        &outcomes,
        results,
        true,
        &header,
        Some(&mut record),
    )
    .map_err(|e| {
            RunnerError::Report(format!(
                "{e}; every completed stage is cached, and `runner report --run {}` writes the report once there is room",
                record.record.id
            ))
        })?;
    eprintln!("report: {}", report.path.display());
    let unmet = print_claims(&report.claims);
    if let Some(signal) = crate::interrupt::signal() {
        return Err(RunnerError::Interrupted {
            signal,
            message: format!(
                "interrupted by {}: {computed} stages computed and {cached} cached are kept, {cancelled} stopped or not started; `{}` goes on from there (trainings from their checkpoint)",
                signal_name(signal),
                record.record.command_line()
            ),
        });
    }
    if failed + skipped > 0 {
        return Err(RunnerError::StagesFailed {
            failed: failed + skipped,
            total: outcomes.len(),
        });
    }
    if check && unmet > 0 {
        return Err(RunnerError::ClaimsFailed {
            failed: unmet,
            total: report.claims.len(),
        });
    }
    Ok(())
}

/// `runner report`: the configuration to rebuild (a recorded run's, or FILE's with the
/// overrides given), then the report, refused when it would lack stages the run had.
fn rebuild_report(
    file: Option<&Path>,
    set: &[String],
    sweep: &[String],
    profile: Option<&str>,
    run: Option<&str>,
    results: &Path,
) -> Result<(), RunnerError> {
    let explicit = !set.is_empty() || !sweep.is_empty() || profile.is_some();
    let recorded = match (run, file) {
        (Some(run), _) => Some(runs::find(results, Some(run))?),
        (None, Some(_)) if explicit => None,
        (None, Some(file)) => {
            let name = pipeline::graph::name_of(file);
            name.and_then(|n| runs::list(results, Some(&n)).pop())
        }
        (None, None) => Some(runs::find(results, None)?),
    };
    let plan = match (&recorded, file) {
        // The run's own file as it read it, with its overrides: exactly that configuration.
        (Some(r), _) => {
            let source = r.dir(results).join("pipeline.yaml");
            let i = &r.invocation;
            eprintln!("rebuilding run {} ({})", r.id, r.command_line());
            pipeline::load(&source, i.profile.as_deref(), &i.set, &i.sweep)?
        }
        (None, Some(file)) => pipeline::load(file, profile, set, sweep)?,
        (None, None) => unreachable!("no file means a recorded run"),
    };
    let cache = Cache::open(results)?;
    let _live = register(&cache, &plan)?;
    let outcomes = from_cache(&plan, &cache);
    // What the run had (every stage it computed or found cached) must still be there.
    let had = |name: &str| {
        recorded.as_ref().is_none_or(|r| {
            r.stages
                .iter()
                .any(|s| s.name == name && (s.status == "computed" || s.status == "cached"))
        })
    };
    let missing: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.status == Status::Missing && had(&o.name))
        .map(|o| o.name.as_str())
        .collect();
    if !missing.is_empty() {
        let again = match &recorded {
            Some(r) => r.command_line(),
            None => "runner run FILE with the same flags".into(),
        };
        return Err(RunnerError::Report(format!(
            "the report would lack {} of {} stages, not in the cache ({}{}); `{again}` computes them, then `runner report` writes the whole report",
            missing.len(),
            outcomes.len(),
            missing
                .iter()
                .take(8)
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            if missing.len() > 8 { ", ..." } else { "" }
        )));
    }
    let header = match &recorded {
        Some(r) => r.header(),
        None => report::Header {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            overrides: runs::Invocation {
                file: String::new(),
                profile: profile.map(String::from),
                set: set.to_vec(),
                sweep: sweep.to_vec(),
            }
            .overrides(),
            date: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            machine: crate::machine::Machine::this().line(),
            device: "rebuilt from the cache".into(),
            ..Default::default()
        },
    };
    let report = write_report(&plan, &cache, &outcomes, results, false, &header, None)?;
    eprintln!("all {} stages cached", outcomes.len());
    eprintln!("report: {}", report.path.display());
    print_claims(&report.claims);
    Ok(())
}

/// Stages estimated to take longer than this get their time in `plan`.
const LONG_STAGE_SECONDS: f64 = 3600.0;

fn print_plan(
    plan: &Plan,
    results: &Path,
    flags: &RunFlags,
    pipeline: &PipelineArgs,
) -> Result<(), RunnerError> {
    let force = flags.force.as_slice();
    let cache = Cache::reading(results);
    let history = history::load(&results.join(&plan.name));
    if plan.sweep.is_empty() {
        out!("pipeline {} ({} stages)", plan.name, plan.order.len());
    } else {
        // Zipped axes vary together: one factor of the product.
        let mut axes: Vec<String> = Vec::new();
        for (g, &size) in plan.sweep.group_sizes.iter().enumerate() {
            let names: Vec<&str> = plan
                .sweep
                .axes
                .iter()
                .filter(|a| a.group == g)
                .map(|a| a.name.as_str())
                .collect();
            axes.push(if names.len() == 1 {
                format!("{} ({size})", names[0])
            } else {
                format!("zip({}) ({size})", names.join(", "))
            });
        }
        out!(
            "pipeline {}: {} sweep points over {}; {} distinct stages",
            plan.name,
            plan.points.len(),
            axes.join(" x "),
            plan.order.len()
        );
    }
    let mut to_run: BTreeMap<&str, usize> = BTreeMap::new();
    let rate = crate::machine::flops_per_second();
    let mut long = 0.0;
    for node in plan.nodes_in_file_order() {
        let mut reason = if force.contains(&node.id) {
            "forced (--force): recomputed even though cached".to_string()
        } else {
            history::reason(plan, node, &cache, &history)
        };
        if reason != "cached" {
            *to_run.entry(node.kind().name()).or_default() += 1;
            // Only what takes long is worth a rough figure: the rest is noise.
            let seconds = node.cost.flops / rate;
            if seconds >= LONG_STAGE_SECONDS {
                long += seconds;
                reason.push_str(&format!(
                    "; about {} here ({})",
                    crate::machine::human_seconds(seconds),
                    node.cost.work
                ));
            }
        }
        out!(
            "  {:<20} {:<9} {}  {}",
            node.name(),
            node.kind().name(),
            &node.key[..12],
            reason
        );
    }
    let total: usize = to_run.values().sum();
    let by_kind: Vec<String> = StageKind::ALL
        .iter()
        .filter_map(|k| to_run.get(k.name()).map(|n| format!("{n} {}", k.name())))
        .collect();
    let by_kind = if by_kind.is_empty() {
        String::new()
    } else {
        format!(" (work left: {})", by_kind.join(", "))
    };
    out!(
        "{total} to run, {} cached{by_kind}",
        plan.order.len() - total
    );
    if long > 0.0 {
        out!(
            "the long stages above take about {} on this machine (a rough estimate from their sizes)",
            crate::machine::human_seconds(long)
        );
    }
    if flags.executor(plan) == ExecutorName::Slurm {
        let invocation = slurm::Invocation {
            profile: pipeline.profile.clone(),
            set: pipeline.set.clone(),
            sweep: pipeline.sweep.clone(),
        };
        let layout = slurm::Layout::new(&cache);
        let command = slurm::worker_command(plan, &layout, results, &invocation, false)
            .map_err(RunnerError::Usage)?;
        let scripts = slurm::dry_run(plan, &cache, &command, &flags.device_name(), force);
        out!(
            "\n--executor slurm: {} sbatch submission{} (a wave is submitted once the waves before it are in the cache; nothing is submitted now)",
            scripts.len(),
            if scripts.len() == 1 { "" } else { "s" }
        );
        for (wave, script) in scripts {
            out!("\n# wave {wave}\n{script}");
        }
    }
    Ok(())
}

/// Pipelines `gc` keeps: the files given, or every pipeline in `pipelines/`.
fn gc_roots(files: &[PathBuf]) -> Result<Vec<PathBuf>, RunnerError> {
    if !files.is_empty() {
        return Ok(files.to_vec());
    }
    let dir = Path::new("pipelines");
    let entries = std::fs::read_dir(dir).map_err(|e| {
        RunnerError::Usage(format!("cannot read {}: {e}; run gc from the repository root or name the pipeline files to keep", dir.display()))
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

fn gc(
    files: &[PathBuf],
    results: &Path,
    dry_run: bool,
    keep_runs: Option<usize>,
) -> Result<(), RunnerError> {
    let cache = Cache::open(results)?;
    let mut reachable = HashSet::new();
    // What every recorded run reached stays, so each run's report can be rebuilt.
    let (kept, older) = runs::split(results, keep_runs);
    for record in &kept {
        reachable.extend(record.keys().map(String::from));
    }
    for file in gc_roots(files)? {
        let name = match pipeline::load(&file, None, &[], &[]) {
            Ok(plan) => {
                reachable.extend(plan.nodes().map(|n| n.key.clone()));
                plan.name
            }
            // A pipeline that does not plan here (its data is not on this machine) must
            // not stop the collection of the others; what its last run reached stays.
            Err(e) if files.is_empty() => {
                let Some(name) = pipeline::graph::name_of(&file) else {
                    // Not even its name: it might keep anything, so delete nothing.
                    return Err(e.into());
                };
                eprintln!(
                    "warning: {} does not plan ({e}); kept what its last run reached",
                    file.display()
                );
                name
            }
            Err(e) => return Err(e.into()),
        };
        let last = history::load(&results.join(&name));
        reachable.extend(history::keys(&last).map(String::from));
    }
    // Only once every pipeline has loaded: a refused gc deletes nothing.
    if let Some(keep) = keep_runs {
        let verb = if dry_run { "would delete" } else { "deleted" };
        if !dry_run {
            runs::remove(results, &older)?;
        }
        out!(
            "{verb} {} run records (kept the latest {keep} of each pipeline)",
            older.len()
        );
    }
    let report = maintenance::gc(&cache, &reachable, dry_run)?;
    let verb = if dry_run { "would free" } else { "freed" };
    for f in &report.freed {
        out!(
            "{verb} {:>10}  {}  {}",
            crate::machine::human_bytes(f.bytes as f64),
            &f.name[..f.name.len().min(16)],
            f.what
        );
    }
    for key in &report.busy {
        out!("busy          {}  (being computed; left alone)", &key[..16]);
    }
    let collected: HashSet<String> = report.freed.iter().map(|f| f.name.clone()).collect();
    let slurm_files = slurm::prune(&cache, &collected, dry_run).map_err(|e| {
        RunnerError::Cache(crate::error::CacheError::Io {
            path: cache.root().join(".slurm"),
            source: e,
        })
    })?;
    if !slurm_files.is_empty() {
        out!(
            "{verb} {:>10}  in {} files of Slurm runs (logs of stages not in the cache; copies of runner, pipelines and scripts, which no job in flight uses)",
            crate::machine::human_bytes(slurm_files.iter().map(|f| f.1).sum::<u64>() as f64),
            slurm_files.len()
        );
    }
    let total: u64 = report.freed.iter().map(|f| f.bytes).sum();
    let live = if report.live > 0 {
        format!(" ({} only for runs in progress)", report.live)
    } else {
        String::new()
    };
    out!(
        "{verb} {} in {} entries; kept {}{live}",
        crate::machine::human_bytes(total as f64),
        report.freed.len(),
        report.kept
    );
    Ok(())
}

fn verify(results: &Path, remove: bool) -> Result<(), RunnerError> {
    let cache = Cache::open(results)?;
    let (damaged, checked) = maintenance::verify(&cache)?;
    for d in &damaged {
        out!(
            "damaged {} ({})",
            &d.key[..16],
            d.stage.as_deref().unwrap_or("unknown stage")
        );
        for p in &d.problems {
            out!("  {p}");
        }
        if remove {
            match cache.try_lock(&d.key)? {
                Some(_lock) => {
                    cache.remove(&d.key)?;
                    out!("  removed: the next run recomputes it");
                }
                None => out!("  being recomputed by another process: left to it"),
            }
        }
    }
    out!("checked {checked} entries: {} damaged", damaged.len());
    // Damage found is exit 1 even once removed: a script must learn its cache was bad.
    match (damaged.len(), remove) {
        (0, _) => Ok(()),
        (n, true) => Err(RunnerError::Damaged(format!(
            "{n} damaged cache entries removed; the next run recomputes them"
        ))),
        (n, false) => Err(RunnerError::Damaged(format!(
            "{n} damaged cache entries; `runner verify --remove` deletes them so the next run recomputes them"
        ))),
    }
}
