//! Running jobs on a cluster (Spark's CoarseGrainedSchedulerBackend and
//! CoarseGrainedExecutorBackend, standalone flavour).
//!
//! - [`driver`]: the driver's scheduler backend. It registers the application
//!   with the Master (for `local-cluster[N,C,M]` it first starts an in-process
//!   Master and N Workers), whose Workers start executors: this same binary in
//!   executor mode. Executors register with the driver endpoint, which turns
//!   their free cores into offers for the task scheduler and sends them tasks.
//! - [`executor`]: the executor backend. It registers, runs tasks on plain
//!   threads, reports their ends, and serves the shuffle segments it wrote to
//!   the other executors.
//! - [`messages`]: what the two say to each other.
//! - [`submit`]: `flint submit`, in client and cluster deploy modes.
//!
//! Security: each application has its own secret (flint-core makes one per
//! context). Executors' and the driver's application-facing RPC use it, so
//! only the application's own processes connect. Every task envelope is signed
//! with it, and executors take tasks only over the connection they dialed to
//! their driver. Executors read the secret from their environment, never from
//! argv.

pub mod driver;

/// Counters of this process's cluster drivers (for tests and tools).
pub mod metrics {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub(crate) static SLICES_SERVED: AtomicU64 = AtomicU64::new(0);

    /// Parallelized slices executors had to fetch from the driver (those not
    /// shipped inside their tasks).
    pub fn slices_served() -> u64 {
        SLICES_SERVED.load(Ordering::Relaxed)
    }

    pub(crate) static BROADCASTS_SERVED: AtomicU64 = AtomicU64::new(0);

    /// Broadcast values the driver sent to executors itself (the others came
    /// from executors that already held them).
    pub fn broadcasts_served() -> u64 {
        BROADCASTS_SERVED.load(Ordering::Relaxed)
    }

    pub(crate) static TASK_BINARIES_SERVED: AtomicU64 = AtomicU64::new(0);

    /// Stage binaries executors fetched from the driver (those too large to
    /// travel inside every task).
    pub fn task_binaries_served() -> u64 {
        TASK_BINARIES_SERVED.load(Ordering::Relaxed)
    }

    pub(crate) static RESULTS_DEFERRED: AtomicU64 = AtomicU64::new(0);

    /// Indirect results whose fetch waited for others to finish, to keep the
    /// bytes being fetched within `flint.driver.maxResultSize`.
    pub fn results_deferred() -> u64 {
        RESULTS_DEFERRED.load(Ordering::Relaxed)
    }
}
pub mod executor;
pub mod messages;
pub mod submit;

/// Installs the cluster backend in flint-core (`flint::init()` calls this).
pub fn register() {
    flint_core::scheduler::backend::register_cluster_backend(driver::start);
}

/// The tokio runtime of a driver's or an executor's RPC: one thread. Its
/// tasks (endpoint, connection readers and writers) hand each message to the
/// next, and with a second thread every hand-off woke it (a futex and a
/// context switch): 20% more CPU per task in the cluster throughput
/// benchmark. Handlers never wait; file reads and large replies go to
/// `spawn_blocking` (what remains inline, such as decoding a large direct
/// result, delays the other connections).
pub(crate) fn rpc_runtime(thread_name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(thread_name)
        .enable_all()
        .build()
}

/// Environment of an executor process.
pub const DRIVER_URL_VAR: &str = "FLINT_DRIVER_URL";
pub const EXECUTOR_ID_VAR: &str = "FLINT_EXECUTOR_ID";
pub const EXECUTOR_CORES_VAR: &str = "FLINT_EXECUTOR_CORES";
pub const EXECUTOR_HOST_VAR: &str = "FLINT_EXECUTOR_HOST";
/// The application's local dir on the Worker (Spark's SPARK_EXECUTOR_DIRS):
/// set by the Worker, which deletes it when the application finishes.
pub const EXECUTOR_DIRS_VAR: &str = "FLINT_EXECUTOR_DIRS";
pub const APP_SECRET_VAR: &str = "FLINT_APP_SECRET";
/// The application's RPC frame limit in bytes (`flint.rpc.message.maxSize`):
/// the executor's connections must agree with the driver's.
pub const MAX_MESSAGE_VAR: &str = "FLINT_RPC_MAX_MESSAGE_SIZE";
/// The application's `flint.rpc.maxQueuedBytes`, for the executor's
/// connections.
pub const MAX_QUEUED_VAR: &str = "FLINT_RPC_MAX_QUEUED_BYTES";

/// `flint.rpc.maxQueuedBytes` when the application sets none: the RPC
/// default, raised to two frames of its `flint.rpc.message.maxSize`.
pub(crate) fn default_max_queued(max_message_size: usize) -> usize {
    flint_rpc::RpcConf::default()
        .max_queued_bytes
        .max(2 * max_message_size)
}

/// Largest part of an indirect result asked for at once.
pub(crate) const RESULT_CHUNK: u64 = 16 << 20;

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
