//! The local executor: stages on threads of this process, at most `--jobs` at once,
//! sharing the machine's cores by one rule (below).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::thread::Scope;
use std::time::Instant;

use candle_core::Device;
use petgraph::graph::NodeIndex;

use super::compute::compute;
use super::executor::{Executor, Finished, Job, Status};
use crate::cache::Cache;
use crate::progress::Progress;
use crate::stages::StageKind;

/// Stages that keep every core busy on their own (training, sampling, the classifier,
/// evaluation through the networks): the local executor runs one of them at a time so
/// they do not oversubscribe the machine (a classifier beside a U-Net training took
/// 76 s instead of 50 and slowed the training by half while they shared two cores).
/// On a GPU too: three U-Net trainings sharing an H100 ran at 156 img/s each,
/// one alone at 740 img/s (candle's CUDA path is bound by kernel launches).
fn uses_all_cores(kind: StageKind) -> bool {
    matches!(
        kind,
        StageKind::Train | StageKind::Sample | StageKind::Classifier | StageKind::Evaluate
    )
}

/// Each stage runs on its own thread, at most `jobs` at once, while the tensor code
/// inside stages shares rayon's global pool. (Stages are not rayon tasks: a worker
/// waiting inside a parallel matmul may pick up queued tasks, and a stage picked up
/// that way while another holds a cache lock can deadlock two processes.) Stages that
/// use every core run one at a time; lighter ones fill the other slots.
pub struct LocalExecutor<'scope, 'env: 'scope> {
    scope: &'scope Scope<'scope, 'env>,
    cache: &'env Cache,
    progress: &'env Progress,
    device: &'env Device,
    jobs: usize,
    running: usize,
    heavy_running: Option<NodeIndex>,
    /// Whether a stage needs the whole machine, decided once (a held stage is
    /// offered again after every completion; the cache check is a file lookup).
    heavy_of: HashMap<NodeIndex, bool>,
    tx: mpsc::Sender<Finished>,
    rx: mpsc::Receiver<Finished>,
}

impl<'scope, 'env> LocalExecutor<'scope, 'env> {
    pub fn new(
        scope: &'scope Scope<'scope, 'env>,
        cache: &'env Cache,
        progress: &'env Progress,
        device: &'env Device,
        jobs: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        LocalExecutor {
            scope,
            cache,
            progress,
            device,
            jobs: jobs.max(1),
            running: 0,
            heavy_running: None,
            heavy_of: HashMap::new(),
            tx,
            rx,
        }
    }
}

impl<'scope, 'env> Executor<'env> for LocalExecutor<'scope, 'env> {
    fn submit(&mut self, job: Job<'env>) -> Result<(), Job<'env>> {
        let (jobs, cache) = (self.jobs, self.cache);
        let heavy = *self.heavy_of.entry(job.ix).or_insert_with(|| {
            jobs > 1
                && uses_all_cores(job.node.kind())
                && (job.force || !cache.is_cached(&job.node.key))
        });
        if self.running >= self.jobs || (heavy && self.heavy_running.is_some()) {
            return Err(job);
        }
        if heavy {
            self.heavy_running = Some(job.ix);
        }
        self.running += 1;
        let (tx, progress, device) = (self.tx.clone(), self.progress, self.device);
        std::thread::Builder::new()
            .name(format!("stage {}", job.node.id))
            .spawn_scoped(self.scope, move || {
                let started = Instant::now();
                let Job {
                    ix,
                    node,
                    inputs,
                    force,
                } = job;
                let status = match catch_unwind(AssertUnwindSafe(|| {
                    compute(node, inputs, cache, force, progress, device)
                })) {
                    Ok(Ok(status)) => status,
                    Ok(Err(e)) if crate::interrupt::requested() => Status::Cancelled(e.to_string()),
                    Ok(Err(e)) => Status::Failed(e.to_string()),
                    Err(panic) => {
                        Status::Failed(format!("internal error: {}", panic_message(&panic)))
                    }
                };
                let seconds = if status == Status::Computed {
                    started.elapsed().as_secs_f64()
                } else {
                    0.0
                };
                let _ = tx.send(Finished {
                    ix,
                    status,
                    seconds,
                    job: None,
                });
            })
            .expect("the OS starts a thread");
        Ok(())
    }

    fn wait(&mut self) -> Finished {
        let finished = self.rx.recv().expect("a running stage always reports");
        self.running -= 1;
        if self.heavy_running == Some(finished.ix) {
            self.heavy_running = None;
        }
        finished
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a stage panicked".into())
}
