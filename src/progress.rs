//! Progress: a bar per running stage on a terminal, plain periodic lines otherwise
//! (logs, CI), always prefixed by the stage so concurrent stages stay readable.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seconds between plain progress lines when not on a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);

/// Shared by all stages of a run.
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn detect() -> Progress {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi }
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
                    "{prefix:>20} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
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
        }
    }
}

/// Progress of one stage.
pub struct StageProgress {
    label: String,
    bar: Option<ProgressBar>,
    last_line: Mutex<Option<Instant>>,
}

impl StageProgress {
    /// Reports nothing: for library use and tests.
    pub fn hidden() -> StageProgress {
        StageProgress {
            label: String::new(),
            bar: Some(ProgressBar::hidden()),
            last_line: Mutex::new(None),
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
            eprintln!("[{}] {done}/{total} {message}", self.label);
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

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
