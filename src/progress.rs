//! Progress: a bar per running stage on a terminal, plain periodic lines otherwise
//! (logs, CI), always prefixed by the stage so concurrent stages stay readable.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seconds between plain progress lines when not on a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);

/// Shared by all stages of a run.
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    /// The whole run: stages finished of all (a bar on a terminal).
    overall: Option<ProgressBar>,
    done: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn detect() -> Progress {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            multi,
            overall: None,
            done: Arc::default(),
            total: Arc::default(),
        }
    }

    /// Starts the run's own progress: `total` stages (a bar with the run's ETA).
    pub fn run(mut self, total: usize) -> Progress {
        self.total.store(total, Ordering::SeqCst);
        self.overall = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(total as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>20} [{bar:30}] {pos}/{len} stages ({elapsed}, about {eta} left)",
                )
                .expect("valid template")
                .progress_chars("## "),
            );
            bar.set_prefix("run");
            bar
        });
        self
    }

    /// Takes the run's bar off the terminal once every stage has ended.
    pub fn end_run(&self) {
        if let Some(bar) = &self.overall {
            bar.finish_and_clear();
        }
    }

    /// Counts a finished stage; returns `done/total` for its line.
    pub fn stage_done(&self) -> String {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(bar) = &self.overall {
            bar.set_position(done as u64);
        }
        format!("{done}/{}", self.total.load(Ordering::SeqCst))
    }

    /// Prints a message without tearing the bars.
    pub fn println(&self, message: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(message);
            }
            None => eprintln!("{message}"),
        }
    }

    pub fn stage(&self, label: &str) -> StageProgress {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(1));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>20} [{bar:30}] {pos}/{len} {msg} ({elapsed}, about {eta} left)",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        StageProgress {
            label: label.to_string(),
            bar,
            last_line: Mutex::new(None),
            started: Instant::now(),
        }
    }
}

/// Progress of one stage.
pub struct StageProgress {
    label: String,
    bar: Option<ProgressBar>,
    last_line: Mutex<Option<Instant>>,
    started: Instant,
}

impl StageProgress {
    /// Reports nothing: for library use and tests.
    pub fn hidden() -> StageProgress {
        StageProgress {
            label: String::new(),
            bar: Some(ProgressBar::hidden()),
            last_line: Mutex::new(None),
            started: Instant::now(),
        }
    }

    pub fn update(&self, done: usize, total: usize, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(message.to_string());
            return;
        }
        let mut last = self.last_line.lock().expect("progress lock");
        let due = last.map(|t| t.elapsed() >= LINE_INTERVAL).unwrap_or(true);
        if due || done == total {
            eprintln!(
                "[{}] {done}/{total} {message}{}",
                self.label,
                eta(self.started.elapsed(), done, total)
            );
            *last = Some(Instant::now());
        }
    }

    /// A message the user should see (e.g. a skipped file), above the bars.
    pub fn warn(&self, message: &str) {
        let line = format!("[{}] warning: {message}", self.label);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Seconds since the stage started, for rates (images/s, particles/s).
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `, about 2m 10s left` from the pace so far (nothing before the first step or once
/// done).
fn eta(elapsed: Duration, done: usize, total: usize) -> String {
    if done == 0 || done >= total {
        return String::new();
    }
    let left = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
    let left = left.round() as u64;
    if left >= 60 {
        format!(", about {}m {}s left", left / 60, left % 60)
    } else {
        format!(", about {left}s left")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_follows_the_pace() {
        assert_eq!(eta(Duration::from_secs(10), 1, 4), ", about 30s left");
        assert_eq!(eta(Duration::from_secs(60), 1, 4), ", about 3m 0s left");
        assert_eq!(eta(Duration::from_secs(10), 0, 4), "");
        assert_eq!(eta(Duration::from_secs(10), 4, 4), "");
    }

    #[test]
    fn finished_stages_are_counted_of_the_run() {
        let progress = Progress::detect().run(3);
        assert_eq!(progress.stage_done(), "1/3");
        assert_eq!(progress.clone().stage_done(), "2/3");
    }
}
