//! User-facing errors, one enum per layer, so every message says what went wrong
//! and what the user can do about it (no stack traces reach the terminal).

use std::path::PathBuf;

/// Where in a pipeline file something is, so the user can jump straight to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A pipeline file that cannot be turned into a valid DAG.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}{}: {message}", fmt_loc(.location))]
    Invalid {
        path: PathBuf,
        location: Option<Location>,
        message: String,
    },
    /// A command-line change that does not apply: `assignment` is a `--set`'s
    /// `PATH=VALUE`, or a whole flag (`--profile cpu`, `--sweep ...`).
    #[error("{}: {message}", flag(.assignment))]
    Override { assignment: String, message: String },
    /// More than one error in a file, in the order they are written.
    #[error("{}", several(.0))]
    Several(Vec<SpecError>),
}

impl SpecError {
    /// The one error, or all of them together in the order the file has them.
    pub fn all(mut errors: Vec<SpecError>) -> SpecError {
        errors.sort_by_key(|e| match e {
            SpecError::Invalid {
                location: Some(l), ..
            } => (l.line, l.column),
            _ => (usize::MAX, 0),
        });
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            SpecError::Several(errors)
        }
    }

    /// `Ok` when `errors` is empty, else [`SpecError::all`].
    pub fn gathered(errors: Vec<SpecError>) -> Result<(), SpecError> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SpecError::all(errors))
        }
    }
}

/// One error per line, each after the first with its own `error: `, as `main` prints
/// the first; past [`SHOWN`] (a sweep can repeat one mistake at every point), a count.
fn several(errors: &[SpecError]) -> String {
    let lines: Vec<String> = errors.iter().take(SHOWN).map(|e| e.to_string()).collect();
    let more = match errors.len().saturating_sub(SHOWN) {
        0 => String::new(),
        n => format!(", {n} more not shown"),
    };
    format!(
        "{}\n({} errors{more})",
        lines.join("\nerror: "),
        errors.len()
    )
}

/// The most errors of one file printed.
const SHOWN: usize = 20;

/// `--set PATH=VALUE` for an assignment, a flag as it is.
fn flag(assignment: &str) -> String {
    if assignment.starts_with("--") {
        assignment.to_string()
    } else {
        format!("--set {assignment}")
    }
}

fn fmt_loc(location: &Option<Location>) -> String {
    location
        .as_ref()
        .map(|l| format!(":{}:{}", l.line, l.column))
        .unwrap_or_default()
}

/// Failures of the content-addressed cache (I/O on the results directory).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cache entry {path} has a malformed manifest: {message}; delete the directory to recompute it"
    )]
    Manifest { path: PathBuf, message: String },
}

impl CacheError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CacheError {
        let path = path.into();
        move |source| CacheError::Io { path, source }
    }
}

/// Why one stage failed; the DAG loop attaches the stage id when reporting it.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    Failed(String),
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("input {path} is not valid: {message}")]
    BadInput { path: PathBuf, message: String },
}

impl StageError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StageError {
        let path = path.into();
        move |source| StageError::Io { path, source }
    }
}

/// Convenience for stage code.
pub type StageResult<T> = std::result::Result<T, StageError>;

/// Top-level error of a command: what `main` prints before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{0}")]
    Report(String),
    #[error("{failed} of {total} stages failed (see above); the other results are cached")]
    StagesFailed { failed: usize, total: usize },
    #[error("{0}")]
    Usage(String),
    /// `runner worker` was asked for a stage it cannot compute: no stage of the plan
    /// has that key, or an input is not in the cache yet (exit code 3).
    #[error("{0}")]
    NotRunnable(String),
    /// `runner run --check`: claims of `expect:` were not reproduced (exit code 3).
    #[error("{failed} of {total} claims not reproduced (see above); every result is cached")]
    ClaimsFailed { failed: usize, total: usize },
    /// The one stage `runner worker` computed failed (exit code 1).
    #[error("stage {stage} failed: {message}")]
    StageFailed { stage: String, message: String },
    /// `verify` found damaged entries (exit 1, like failed stages).
    #[error("{0}")]
    Damaged(String),
    /// The run stopped at the user's interrupt (exit 128 + the signal).
    #[error("{message}")]
    Interrupted { signal: i32, message: String },
}
