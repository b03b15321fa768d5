//! The engine's error type. Every failure a user can see is a `FlintError` whose
//! message names the problem and, where there is one, what to do about it.

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = FlintError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum FlintError {
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The cluster could not be reached, or refused: says which and why.
    #[error("{0}")]
    Cluster(String),

    #[error(
        "invalid master URL '{url}': {reason}. Use local, local[N], local[*] or local[N,F] (threads in this process), local-cluster[N,C,M] (a cluster in this process), or flint://host:port (a standalone Master)"
    )]
    MasterUrl { url: String, reason: String },

    #[error("{op} '{path}': {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Encoding or decoding; a decoding reason says whether the input is
    /// corrupt.
    #[error("{what} could not be encoded or decoded: {reason}")]
    Codec { what: &'static str, reason: String },

    /// The executor refused a task because it was built into another binary.
    #[error(
        "executor binary build id {executor:032x} differs from driver {driver:032x}; task {type_name} was not run. Start executors from the same application binary as the driver"
    )]
    BuildMismatch {
        executor: u128,
        driver: u128,
        type_name: String,
    },

    #[error("task deserialization refused: {0}")]
    BadTask(String),

    /// A user function returned an error inside a task.
    #[error("{0}")]
    User(String),

    /// A task panicked (Spark's ExceptionFailure): the panic's message, and
    /// the backtrace where it happened when one could be captured.
    #[error("{message}")]
    TaskPanicked {
        message: String,
        backtrace: Option<String>,
    },

    /// A task's result is over `flint.driver.maxResultSize` on its own:
    /// running it again cannot help, so its task set is aborted at once.
    #[error("{0}")]
    ResultTooLarge(String),

    #[error(
        "Job {job_id} aborted due to stage failure: Task {partition} in stage {stage_id}.{stage_attempt} failed {attempts} times, most recent failure: {message}"
    )]
    JobAborted {
        job_id: usize,
        stage_id: usize,
        stage_attempt: usize,
        partition: usize,
        attempts: usize,
        message: String,
        /// The failed task's backtrace (from its executor), if it panicked.
        backtrace: Option<String>,
    },

    #[error("Job {job_id} cancelled: {reason}")]
    JobCancelled { job_id: usize, reason: String },

    #[error(
        "shuffle {shuffle_id} output for map {map_id} is missing or unreadable ({reason}); the map stage must be recomputed"
    )]
    FetchFailed {
        shuffle_id: usize,
        map_id: usize,
        /// The executor whose output could not be read (None when no output was
        /// registered): only that executor's outputs are forgotten.
        executor: Option<String>,
        reason: String,
    },

    #[error(
        "RDD transformations and actions can only be invoked by the driver, not inside of other transformations (as in Spark's SPARK-5063)"
    )]
    NotOnDriver,

    #[error("the context has been stopped; create a new FlintContext")]
    Stopped,

    #[error("{0}")]
    InvalidArgument(String),

    #[error("output directory {0} already exists; choose another path or delete it first")]
    OutputExists(PathBuf),
}

impl FlintError {
    /// Where a failed task panicked, when the failure came from a panic.
    pub fn backtrace(&self) -> Option<&str> {
        match self {
            FlintError::TaskPanicked { backtrace, .. }
            | FlintError::JobAborted { backtrace, .. } => backtrace.as_deref(),
            _ => None,
        }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FlintError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
