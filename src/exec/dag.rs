//! The DAG loop: stages in dependency order, each handed to an [`Executor`] once its
//! inputs are committed; a failing stage fails only itself and its dependents; every
//! outcome is printed as it arrives and returned in plan order.

use std::collections::HashMap;

use candle_core::Device;
use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::compute::input_entries;
use super::executor::{Executor, Job, JobRef, Status};
use super::local::LocalExecutor;
use crate::cache::Cache;
use crate::pipeline::graph::Plan;
use crate::progress::Progress;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Concurrent stages at most.
    pub jobs: usize,
    /// Stage ids to recompute even when cached.
    pub force: Vec<String>,
    /// Where stages compute (see [`super::device`]).
    pub device: Device,
}

/// A stage's result in this run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub node: NodeIndex,
    /// The node's name: stage id, with its sweep label when forked.
    pub name: String,
    pub status: Status,
    /// Time this run spent on the stage (0 when cached).
    pub seconds: f64,
    /// The cluster job that ran it, when one did.
    pub job: Option<JobRef>,
}

/// What the cache holds for every stage, without running anything (for `runner report`).
pub fn from_cache(plan: &Plan, cache: &Cache) -> Vec<Outcome> {
    plan.order
        .iter()
        .map(|&ix| {
            let node = &plan.graph[ix];
            let status = if cache.is_cached(&node.key) {
                Status::Cached
            } else {
                Status::Missing
            };
            Outcome {
                node: ix,
                name: node.name(),
                status,
                seconds: 0.0,
                job: None,
            }
        })
        .collect()
}

/// Runs every stage of the plan that is not cached on this machine's threads (the
/// local executor); returns outcomes in plan order.
pub fn execute(
    plan: &Plan,
    cache: &Cache,
    options: &RunOptions,
    progress: &Progress,
) -> Vec<Outcome> {
    std::thread::scope(|scope| {
        let mut local = LocalExecutor::new(scope, cache, progress, &options.device, options.jobs);
        run(plan, cache, &options.force, &mut local, progress)
    })
}

/// Runs every stage of the plan that is not cached through `executor`; returns
/// outcomes in plan order. Ready stages are offered in plan order; one the executor
/// hands back is offered again after the next completion.
pub fn run<'p>(
    plan: &'p Plan,
    cache: &Cache,
    force: &[String],
    executor: &mut dyn Executor<'p>,
    progress: &Progress,
) -> Vec<Outcome> {
    let graph = &plan.graph;
    let position: HashMap<NodeIndex, usize> = plan
        .order
        .iter()
        .enumerate()
        .map(|(i, &ix)| (ix, i))
        .collect();
    let mut waiting: HashMap<NodeIndex, usize> = plan
        .order
        .iter()
        .map(|&ix| {
            (
                ix,
                graph.neighbors_directed(ix, Direction::Incoming).count(),
            )
        })
        .collect();
    let mut results: HashMap<NodeIndex, Outcome> = HashMap::new();
    let mut ready: Vec<NodeIndex> = plan
        .order
        .iter()
        .copied()
        .filter(|ix| waiting[ix] == 0)
        .collect();
    // Jobs the executor handed back, kept with their inputs for the next offer.
    let mut pending: Vec<Job<'p>> = Vec::new();
    let mut running = 0usize;
    loop {
        // Stages released by a skipped input are looked at in the next round.
        let mut deferred = Vec::new();
        for ix in std::mem::take(&mut ready) {
            let node = &graph[ix];
            // Stopping: nothing new starts.
            if crate::interrupt::requested() {
                results.insert(
                    ix,
                    Outcome {
                        node: ix,
                        name: node.name(),
                        status: Status::Cancelled("not started".into()),
                        seconds: 0.0,
                        job: None,
                    },
                );
                release(plan, ix, &mut waiting, &mut deferred);
                continue;
            }
            // An input that did not succeed means this stage cannot run.
            let blocked = graph
                .neighbors_directed(ix, Direction::Incoming)
                .find(|i| !results[i].status.ok())
                .map(|i| graph[i].name());
            if let Some(input) = blocked {
                progress.println(&format!(
                    "- {:<20} skipped: input `{input}` did not complete",
                    node.name()
                ));
                let outcome = Outcome {
                    node: ix,
                    name: node.name(),
                    status: Status::Skipped(input),
                    seconds: 0.0,
                    job: None,
                };
                results.insert(ix, outcome);
                release(plan, ix, &mut waiting, &mut deferred);
                continue;
            }
            pending.push(Job {
                ix,
                node,
                inputs: input_entries(plan, cache, node),
                force: force.contains(&node.id),
            });
        }
        pending.sort_by_key(|job| position[&job.ix]);
        if crate::interrupt::requested() {
            // Held back by the executor before the stop: they do not start either.
            for job in std::mem::take(&mut pending) {
                let outcome = Outcome {
                    node: job.ix,
                    name: job.node.name(),
                    status: Status::Cancelled("not started".into()),
                    seconds: 0.0,
                    job: None,
                };
                results.insert(job.ix, outcome);
                release(plan, job.ix, &mut waiting, &mut deferred);
            }
        }
        for job in std::mem::take(&mut pending) {
            match executor.submit(job) {
                Ok(()) => running += 1,
                Err(job) => pending.push(job),
            }
        }
        deferred.sort_by_key(|ix| position[ix]);
        ready = deferred;
        if running == 0 {
            if ready.is_empty() && pending.is_empty() {
                break;
            }
            continue;
        }
        let finished = executor.wait();
        running -= 1;
        let ix = finished.ix;
        let node = &graph[ix];
        let outcome = Outcome {
            node: ix,
            name: node.name(),
            status: finished.status,
            seconds: finished.seconds,
            job: finished.job,
        };
        match &outcome.status {
            Status::Cached => progress.println(&format!(
                "  {:<20} cached ({}) [{}]",
                outcome.name,
                &node.key[..12],
                progress.stage_done()
            )),
            Status::Computed => progress.println(&format!(
                "  {:<20} computed in {:.1}s ({}{}) [{}]",
                outcome.name,
                outcome.seconds,
                &node.key[..12],
                job_of(&outcome.job),
                progress.stage_done()
            )),
            Status::Failed(message) => progress.println(&format!(
                "x {:<20} FAILED{}: {message}",
                outcome.name,
                outcome
                    .job
                    .as_ref()
                    .map_or(String::new(), |j| format!(" (job {})", j.id))
            )),
            Status::Cancelled(message) => {
                progress.println(&format!("- {:<20} cancelled: {message}", outcome.name))
            }
            Status::Skipped(_) | Status::Missing => {}
        }
        results.insert(ix, outcome);
        release(plan, ix, &mut waiting, &mut ready);
        ready.sort_by_key(|ix| position[ix]);
    }
    plan.order
        .iter()
        .map(|ix| results.remove(ix).expect("every stage has an outcome"))
        .collect()
}

/// `, job 123_4` when a cluster job ran the stage.
fn job_of(job: &Option<JobRef>) -> String {
    job.as_ref()
        .map_or(String::new(), |j| format!(", job {}", j.id))
}

/// Marks `ix` done for its dependents and queues the ones with no inputs left.
fn release(
    plan: &Plan,
    ix: NodeIndex,
    waiting: &mut HashMap<NodeIndex, usize>,
    ready: &mut Vec<NodeIndex>,
) {
    for next in plan.graph.neighbors_directed(ix, Direction::Outgoing) {
        let left = waiting.get_mut(&next).expect("every node is counted");
        *left -= 1;
        if *left == 0 {
            ready.push(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::exec::executor::Finished;
    use crate::pipeline::graph::plan_of_text;

    /// Two trainings off shared inputs, a sample stage after each.
    const PIPELINE: &str = "name: d
stages:
  data: { kind: dataset, params: { name: gmm } }
  lin: { kind: schedule, params: { type: linear } }
  mlp: { kind: model, params: { arch: mlp } }
  a: { kind: train, needs: { data: data, schedule: lin, model: mlp }, params: { objective: eps } }
  b: { kind: train, needs: { data: data, schedule: lin, model: mlp }, params: { objective: dsm } }
  a_s: { kind: sample, needs: { train: a }, params: { sampler: ancestral } }
  b_s: { kind: sample, needs: { train: b }, params: { sampler: ancestral } }
";

    /// Takes one stage at a time and finishes them in submission order; `fail`
    /// fails, the rest compute. Records what it was offered and what it took.
    struct OneAtATime<'p> {
        fail: &'static str,
        queue: VecDeque<Job<'p>>,
        offered: Vec<String>,
        taken: Vec<String>,
    }

    impl<'p> Executor<'p> for OneAtATime<'p> {
        fn submit(&mut self, job: Job<'p>) -> Result<(), Job<'p>> {
            self.offered.push(job.node.id.clone());
            if !self.queue.is_empty() {
                return Err(job);
            }
            self.taken.push(job.node.id.clone());
            self.queue.push_back(job);
            Ok(())
        }

        fn wait(&mut self) -> Finished {
            let job = self.queue.pop_front().expect("a stage is running");
            let status = if job.node.id == self.fail {
                Status::Failed("boom".into())
            } else {
                Status::Computed
            };
            Finished {
                ix: job.ix,
                status,
                seconds: 1.0,
                job: None,
            }
        }
    }

    #[test]
    fn the_loop_offers_ready_stages_again_and_skips_what_a_failure_blocks() {
        let plan = plan_of_text(PIPELINE);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut executor = OneAtATime {
            fail: "a",
            queue: VecDeque::new(),
            offered: Vec::new(),
            taken: Vec::new(),
        };
        let outcomes = run(&plan, &cache, &[], &mut executor, &Progress::detect());
        let status = |id: &str| {
            outcomes
                .iter()
                .find(|o| o.name == id)
                .map(|o| o.status.clone())
                .unwrap()
        };
        assert_eq!(status("a"), Status::Failed("boom".into()));
        assert_eq!(status("a_s"), Status::Skipped("a".into()));
        for id in ["data", "lin", "mlp", "b", "b_s"] {
            assert_eq!(status(id), Status::Computed, "{id}");
        }
        // Every stage but the skipped one was taken once, after its inputs.
        assert_eq!(executor.taken.len(), 6);
        let at = |id: &str| executor.taken.iter().position(|t| t == id).unwrap();
        assert!(at("data") < at("a") && at("lin") < at("b") && at("b") < at("b_s"));
        // Stages handed back were offered again.
        assert!(executor.offered.len() > executor.taken.len());
        // Outcomes come back in plan order.
        let names: Vec<String> = outcomes.iter().map(|o| o.name.clone()).collect();
        let order: Vec<String> = plan.nodes().map(|n| n.name()).collect();
        assert_eq!(names, order);
    }
}
