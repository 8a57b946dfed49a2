//! The command line: a thin layer over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cache::Cache;
use crate::error::RunnerError;
use crate::exec::progress::Progress;
use crate::exec::scheduler::{RunOptions, Status, execute};
use crate::pipeline::{self, Plan, history};
use crate::{catalog, report};

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline: compute what is not cached, then write the report.
    Run {
        /// The pipeline file (YAML).
        file: PathBuf,
        /// Override a value: STAGE.params.KEY=VALUE (repeatable).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
        /// Stages run concurrently at most (default: number of cores).
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Recompute this stage even if it is cached (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Show what would run, run nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show every stage with its key and whether it is cached or why it must run.
    Plan {
        file: PathBuf,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
    },
    /// Print the stage graph in Graphviz DOT.
    Graph {
        file: PathBuf,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
    },
    /// List stage kinds, datasets, schedules, models, samplers and metrics with their
    /// parameters and defaults.
    List,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunnerError::StagesFailed { failed, total }) => {
            eprintln!("error: {failed} of {total} stages failed; every other result is cached");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: &Cli) -> Result<(), RunnerError> {
    match &cli.command {
        Command::Run { file, set, jobs, force, dry_run } => {
            let plan = pipeline::load(file, set)?;
            for id in force {
                if plan.node(id).is_none() {
                    let ids: Vec<&str> = plan.nodes().map(|n| n.id.as_str()).collect();
                    return Err(RunnerError::Usage(format!("--force {id}: no such stage; stages are: {}", ids.join(", "))));
                }
            }
            if *dry_run {
                return print_plan(&plan, &cli.results);
            }
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            run(&plan, &cli.results, &RunOptions { jobs, force: force.clone() })
        }
        Command::Plan { file, set } => print_plan(&pipeline::load(file, set)?, &cli.results),
        Command::Graph { file, set } => {
            print!("{}", pipeline::graph::to_dot(&pipeline::load(file, set)?));
            Ok(())
        }
        Command::List => {
            print!("{}", catalog::describe());
            Ok(())
        }
    }
}

fn run(plan: &Plan, results: &Path, options: &RunOptions) -> Result<(), RunnerError> {
    let cache = Cache::open(results)?;
    let progress = Progress::detect();
    eprintln!("pipeline {} ({} stages, {} jobs)", plan.name, plan.order.len(), options.jobs);
    let outcomes = execute(plan, &cache, options, &progress);
    let count = |f: &dyn Fn(&Status) -> bool| outcomes.iter().filter(|o| f(&o.status)).count();
    let (computed, cached) = (count(&|s| *s == Status::Computed), count(&|s| *s == Status::Cached));
    let failed = count(&|s| matches!(s, Status::Failed(_)));
    let skipped = count(&|s| matches!(s, Status::Skipped(_)));
    let dir = results.join(&plan.name);
    std::fs::create_dir_all(&dir).map_err(|e| RunnerError::Report(format!("creating {}: {e}", dir.display())))?;
    // Two runs of one pipeline may finish together: one writes the folder at a time.
    let _report_lock = crate::cache::lock::KeyLock::acquire(&dir.join(".report.lock"))?;
    history::save(&dir, plan).map_err(|e| RunnerError::Report(format!("writing {}: {e}", dir.display())))?;
    let report = report::build(plan, &cache, &outcomes, results)?;
    if cached == outcomes.len() {
        eprintln!("all {} stages cached: nothing to compute; report rebuilt", outcomes.len());
    } else {
        eprintln!("{computed} computed, {cached} cached, {failed} failed, {skipped} skipped");
    }
    eprintln!("report: {}", report.display());
    if failed + skipped > 0 {
        for o in &outcomes {
            match &o.status {
                Status::Failed(m) => eprintln!("  failed  {}: {m}", o.id),
                Status::Skipped(input) => eprintln!("  skipped {}: input `{input}` did not complete", o.id),
                _ => {}
            }
        }
        return Err(RunnerError::StagesFailed { failed: failed + skipped, total: outcomes.len() });
    }
    Ok(())
}

fn print_plan(plan: &Plan, results: &Path) -> Result<(), RunnerError> {
    let cache = Cache::open(results)?;
    let history = history::load(&results.join(&plan.name));
    println!("pipeline {} ({} stages)", plan.name, plan.order.len());
    let mut to_run = 0;
    for node in plan.nodes() {
        let reason = history::reason(plan, node, &cache, &history);
        if reason != "cached" {
            to_run += 1;
        }
        println!("  {:<20} {:<9} {}  {}", node.id, node.kind().name(), &node.key[..12], reason);
    }
    println!("{to_run} to run, {} cached", plan.order.len() - to_run);
    Ok(())
}
