//! The driver ↔ executor protocol.

use flint_core::FlintError;
use flint_core::cleaner::CleanupTask;
use flint_core::metrics::TaskMetrics;
use flint_core::ship::Shipped;
use flint_core::shuffle::MapStatus;
use flint_core::task::{TaskDescription, TaskEnd, TaskOutput};
use flint_rpc::RpcAddress;
use serde::{Deserialize, Serialize};

pub const DRIVER_ENDPOINT: &str = "CoarseGrainedScheduler";
pub const EXECUTOR_ENDPOINT: &str = "Executor";

/// What the driver endpoint receives.
#[derive(Debug, Serialize, Deserialize)]
pub enum DriverMsg {
    /// Ask; answered with `Result<(), String>`.
    RegisterExecutor {
        executor_id: String,
        host: String,
        port: u16,
        cores: usize,
    },
    /// Ask; answered with the application's configuration.
    GetConf,
    StatusUpdate {
        executor_id: String,
        task_id: u64,
        end: WireTaskEnd,
        duration_ms: u64,
        metrics: TaskMetrics,
    },
    /// Ask; answered with `ReduceSegments`: where one reduce partition's
    /// input is.
    GetSegments { shuffle_id: usize, reduce: usize },
    /// Ask; answered with `Result<Vec<u8>, String>`: an encoded parallelized slice.
    GetSlice { rdd: usize, slice: usize },
    /// Ask; answered with `Result<Vec<u8>, String>`: an encoded broadcast value.
    GetBroadcast { id: usize },
    /// Ask; answered with `Result<Shipped, String>`: a stage binary the
    /// driver sent by id (`WireBinary::Fetch`), signed; an error once its
    /// stage has ended.
    GetTaskBinary { id: u64 },
    /// Ask; answered with `Option<(String, RpcAddress, [u8; 32])>`: another
    /// executor that holds broadcast `id` and serves it (Spark's
    /// TorrentBroadcast spreads the load the same way), with the SHA-256 of
    /// the value's encoding to check its copy against; or none: ask the
    /// driver.
    GetBroadcastLocation { id: usize },
    /// An executor now holds broadcast `id` and serves it to the others.
    BroadcastHeld { executor_id: String, id: usize },
    /// Ask, every `flint.executor.heartbeatInterval`; answered with `true`
    /// while the driver still counts the executor as its own (`false`: it
    /// was declared lost and must exit).
    /// It carries the metrics of the executor's running tasks.
    Heartbeat {
        executor_id: String,
        tasks: Vec<(u64, TaskMetrics)>,
    },
    /// Ask; answered with `Option<(String, RpcAddress)>`: another executor
    /// that caches partition `split` of RDD `rdd`.
    GetBlockLocation { rdd: usize, split: usize },
    /// The RDD partitions an executor started or stopped caching (rdd, split).
    BlocksUpdated {
        executor_id: String,
        added: Vec<(usize, usize)>,
        removed: Vec<(usize, usize)>,
    },
    // Internal variants stay last (see flint-deploy's messages).
    /// Internal: make offers now.
    #[serde(skip_deserializing)]
    Revive,
    /// Internal: kill a task wherever it runs.
    #[serde(skip_deserializing)]
    Kill { task_id: u64 },
    /// Internal: forget every executor (the context stops).
    #[serde(skip_deserializing)]
    StopExecutors,
    /// Internal: tell the forgotten executors to stop; the reply comes once
    /// their connections have closed.
    #[serde(skip_deserializing)]
    AwaitExecutorsGone,
    /// Internal: the Master says an executor is gone.
    #[serde(skip_deserializing)]
    Lost {
        executor_id: String,
        reason: String,
        /// Whether the application may have caused it (see
        /// `TaskScheduler::executor_lost`): not when its Worker died.
        caused_by_app: bool,
    },
    /// Internal timer: declare executors silent past `flint.network.timeout` lost.
    #[serde(skip_deserializing)]
    ExpireDeadExecutors,
    /// Internal timer (`flint.starvation.timeout`): warn while tasks wait
    /// and none has been launched for that long.
    #[serde(skip_deserializing)]
    CheckStarvation,
    /// Internal: the bytes of an indirect result arrived (or could not).
    #[serde(skip_deserializing)]
    ResultFetched {
        executor_id: String,
        task_id: u64,
        size: u64,
        result: std::result::Result<Vec<u8>, String>,
        acc: Vec<(usize, Vec<u8>)>,
        duration_ms: u64,
        metrics: TaskMetrics,
    },
    /// Internal: the context cleaner removed something; every executor must too.
    #[serde(skip_deserializing)]
    Cleanup(CleanupTask),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReduceSegments {
    /// The non-empty segments in map order, or why the partition cannot be
    /// read (a map output is missing: the fetch failure to report).
    pub segments: std::result::Result<Vec<WireSegment>, WireFetchFailure>,
    /// Where each executor named in `segments` serves them.
    pub executors: Vec<(String, RpcAddress)>,
}

/// One map output's segment of a reduce partition (no path: the executor
/// that wrote it resolves its own file).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireSegment {
    pub map_id: usize,
    pub executor_id: String,
    /// The map task attempt whose output file holds it (the file is
    /// `shuffle_{shuffle}_{map}_{attempt}.data`): executors on the same host
    /// read it from disk.
    pub attempt: Option<u64>,
    pub start: u64,
    pub len: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireFetchFailure {
    pub map_id: usize,
    pub executor: Option<String>,
    pub reason: String,
}

/// What an executor receives.
#[derive(Debug, Serialize, Deserialize)]
pub enum ExecutorMsg {
    LaunchTask(WireTask),
    KillTask {
        task_id: u64,
    },
    StopExecutor,
    /// Ask (from another executor); answered with `Result<Vec<u8>, String>`.
    FetchSegment {
        shuffle_id: usize,
        map_id: usize,
        /// The map task attempt whose output is wanted.
        attempt: u64,
        reduce: usize,
        offset: u64,
        len: u64,
    },
    /// Remove a shuffle's files, an RDD's cached blocks or a broadcast's copy
    /// (the driver's context cleaner dropped them).
    Cleanup(CleanupTask),
    /// Ask (from the driver); answered with `Result<Vec<u8>, String>`: part of
    /// a result too large for one frame. The last part frees it.
    FetchResult {
        task_id: u64,
        offset: u64,
        len: u64,
    },
    /// The driver will not fetch this result.
    DropResult {
        task_id: u64,
    },
    /// Ask (from another executor of the application); answered with
    /// `Result<Vec<u8>, String>`: a cached partition as frames.
    FetchBlock {
        rdd: usize,
        split: usize,
    },
    /// Ask (from another executor of the application); answered with
    /// `Result<Vec<u8>, String>`: an encoded broadcast value this executor
    /// holds.
    FetchBroadcast {
        id: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireTask {
    pub task_id: u64,
    pub stage_id: usize,
    pub stage_attempt: usize,
    pub partition: usize,
    pub index: usize,
    pub attempt: usize,
    pub binary: WireBinary,
    /// Parallelized slices the task reads, shipped with it when small
    /// (rdd, slice, encoded values); others the executor fetches.
    pub slices: Vec<(usize, usize, serde_bytes::ByteBuf)>,
}

impl WireTask {
    /// The task with its stage binary as it travels (signed by the caller).
    pub fn from_desc(d: &TaskDescription, binary: WireBinary) -> Self {
        WireTask {
            task_id: d.task_id,
            stage_id: d.stage_id,
            stage_attempt: d.stage_attempt,
            partition: d.partition,
            index: d.index,
            attempt: d.attempt,
            binary,
            slices: Vec::new(),
        }
    }

    /// The task to run, its stage binary got by `binary` (inline, or fetched
    /// by the executor).
    pub fn into_desc<E>(
        self,
        binary: impl FnOnce(WireBinary) -> Result<std::sync::Arc<Shipped>, E>,
    ) -> Result<TaskDescription, E> {
        let binary = binary(self.binary)?;
        Ok(TaskDescription {
            task_id: self.task_id,
            stage_id: self.stage_id,
            stage_attempt: self.stage_attempt,
            partition: self.partition,
            index: self.index,
            attempt: self.attempt,
            binary,
            driver_blocks: Vec::new(),
        })
    }
}

/// A stage binary (the closure chain every task of a stage runs) as a task
/// carries it. Spark broadcasts every task binary; here a small one travels
/// inside each task (no round trip), and a large one is sent to each executor
/// once: its tasks name it, and the executor fetches it from the driver with
/// `DriverMsg::GetTaskBinary` and keeps it for the stage's other tasks. One
/// offer round can so send a task to every core of an executor without
/// queueing a copy of a large closure per core.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireBinary {
    Inline(Shipped),
    /// Fetch binary `id` (`size` bytes of payload) from the driver.
    Fetch {
        id: u64,
        size: u64,
    },
}

/// A task's end as it crosses the wire (`FlintError` is not serde: a fetch
/// failure keeps its fields, other failures their message).
#[derive(Debug, Serialize, Deserialize)]
pub enum WireTaskEnd {
    // Bytes, not a sequence of u8s: far faster to encode and decode.
    Value(
        #[serde(with = "serde_bytes")] Vec<u8>,
        Vec<(usize, Vec<u8>)>,
    ),
    Map(MapStatus, Vec<(usize, Vec<u8>)>),
    FetchFailed {
        shuffle_id: usize,
        map_id: usize,
        executor: Option<String>,
        reason: String,
    },
    Failed(WireFailure),
    Killed,
    /// A value too large for one frame: it stays on the executor, which
    /// serves it to the driver in parts (Spark's IndirectTaskResult).
    Indirect {
        size: u64,
        acc: Vec<(usize, Vec<u8>)>,
    },
}

/// Why a task failed, kept typed across the wire so the driver's scheduler
/// decides on the kind (a result over the limit aborts at once; a panic
/// keeps its backtrace; a build mismatch names both builds), not on text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireFailure {
    /// An error a user function returned.
    User(String),
    /// A panic (Spark's ExceptionFailure), with its backtrace if captured.
    Panicked {
        message: String,
        backtrace: Option<String>,
    },
    BuildMismatch {
        executor: u128,
        driver: u128,
        type_name: String,
    },
    BadTask(String),
    ResultTooLarge(String),
    /// Any other engine error, as its message.
    Other(String),
}

impl WireFailure {
    pub fn from_error(e: FlintError) -> Self {
        match e {
            FlintError::User(m) => WireFailure::User(m),
            FlintError::TaskPanicked { message, backtrace } => {
                WireFailure::Panicked { message, backtrace }
            }
            FlintError::BuildMismatch {
                executor,
                driver,
                type_name,
            } => WireFailure::BuildMismatch {
                executor,
                driver,
                type_name,
            },
            FlintError::BadTask(m) => WireFailure::BadTask(m),
            FlintError::ResultTooLarge(m) => WireFailure::ResultTooLarge(m),
            other => WireFailure::Other(other.to_string()),
        }
    }

    pub fn into_error(self) -> FlintError {
        match self {
            WireFailure::User(m) | WireFailure::Other(m) => FlintError::User(m),
            WireFailure::Panicked { message, backtrace } => {
                FlintError::TaskPanicked { message, backtrace }
            }
            WireFailure::BuildMismatch {
                executor,
                driver,
                type_name,
            } => FlintError::BuildMismatch {
                executor,
                driver,
                type_name,
            },
            WireFailure::BadTask(m) => FlintError::BadTask(m),
            WireFailure::ResultTooLarge(m) => FlintError::ResultTooLarge(m),
        }
    }
}

impl WireTaskEnd {
    pub fn from_end(end: TaskEnd) -> Self {
        match end {
            TaskEnd::Success(TaskOutput::Value(v), acc) => WireTaskEnd::Value(v, acc),
            TaskEnd::Success(TaskOutput::Map(s), acc) => WireTaskEnd::Map(s, acc),
            TaskEnd::Failed(FlintError::FetchFailed {
                shuffle_id,
                map_id,
                executor,
                reason,
            }) => WireTaskEnd::FetchFailed {
                shuffle_id,
                map_id,
                executor,
                reason,
            },
            TaskEnd::Failed(e) => WireTaskEnd::Failed(WireFailure::from_error(e)),
            TaskEnd::Killed => WireTaskEnd::Killed,
        }
    }

    pub fn into_end(self) -> TaskEnd {
        match self {
            WireTaskEnd::Value(v, acc) => TaskEnd::Success(TaskOutput::Value(v), acc),
            WireTaskEnd::Map(s, acc) => TaskEnd::Success(TaskOutput::Map(s), acc),
            WireTaskEnd::FetchFailed {
                shuffle_id,
                map_id,
                executor,
                reason,
            } => TaskEnd::Failed(FlintError::FetchFailed {
                shuffle_id,
                map_id,
                executor,
                reason,
            }),
            WireTaskEnd::Failed(f) => TaskEnd::Failed(f.into_error()),
            WireTaskEnd::Killed => TaskEnd::Killed,
            // The driver fetches the bytes first; reaching here is a bug.
            WireTaskEnd::Indirect { size, .. } => TaskEnd::Failed(FlintError::User(format!(
                "an indirect result of {size} bytes was not fetched"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid encodings of the messages executors and drivers exchange.
    fn samples() -> Vec<Vec<u8>> {
        fn d(_: &[u8]) -> std::result::Result<Box<dyn std::any::Any + Send>, String> {
            Ok(Box::new(()))
        }
        let shipped = Shipped::new("t", d, vec![1, 2, 3]);
        let metrics = TaskMetrics {
            run_ms: 5,
            shuffle_read_records: 9,
            ..TaskMetrics::default()
        };
        vec![
            postcard::to_stdvec(&DriverMsg::StatusUpdate {
                executor_id: "1".into(),
                task_id: 7,
                end: WireTaskEnd::Failed(WireFailure::Panicked {
                    message: "boom".into(),
                    backtrace: Some("at x.rs:1".into()),
                }),
                duration_ms: 3,
                metrics,
            })
            .unwrap(),
            postcard::to_stdvec(&DriverMsg::Heartbeat {
                executor_id: "1".into(),
                tasks: vec![(7, metrics)],
            })
            .unwrap(),
            postcard::to_stdvec(&ExecutorMsg::LaunchTask(WireTask {
                task_id: 1,
                stage_id: 2,
                stage_attempt: 0,
                partition: 3,
                index: 3,
                attempt: 0,
                binary: WireBinary::Inline(shipped),
                slices: vec![(1, 0, serde_bytes::ByteBuf::from(vec![9u8; 8]))],
            }))
            .unwrap(),
            postcard::to_stdvec(&ReduceSegments {
                segments: Ok(vec![WireSegment {
                    map_id: 1,
                    executor_id: "2".into(),
                    attempt: Some(4),
                    start: 0,
                    len: 10,
                }]),
                executors: vec![("2".into(), RpcAddress::new("127.0.0.1", 9))],
            })
            .unwrap(),
            postcard::to_stdvec(&ExecutorMsg::FetchSegment {
                shuffle_id: 1,
                map_id: 2,
                attempt: 9,
                reduce: 3,
                offset: 0,
                len: 1 << 20,
            })
            .unwrap(),
            postcard::to_stdvec(&ExecutorMsg::LaunchTask(WireTask {
                task_id: 2,
                stage_id: 2,
                stage_attempt: 1,
                partition: 0,
                index: 0,
                attempt: 1,
                binary: WireBinary::Fetch {
                    id: 4,
                    size: 1 << 20,
                },
                slices: Vec::new(),
            }))
            .unwrap(),
            postcard::to_stdvec(&DriverMsg::GetTaskBinary { id: 4 }).unwrap(),
        ]
    }

    fn decode_all(b: &[u8]) {
        let _ = postcard::from_bytes::<DriverMsg>(b);
        let _ = postcard::from_bytes::<ExecutorMsg>(b);
        let _ = postcard::from_bytes::<ReduceSegments>(b);
        let _ = postcard::from_bytes::<WireTaskEnd>(b);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(flint_core::util::fuzz_cases(512)))]
        /// Driver and executor messages arrive from the network: random and
        /// mutated valid encodings decode to a message or an error, never a
        /// panic.
        #[test]
        fn cluster_messages_from_bytes_never_panic(
            random in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            pick in 0usize..7,
            flips in proptest::collection::vec((0usize..4096, 1u8..=255), 0..6),
            cut in proptest::option::of(0usize..4096),
        ) {
            decode_all(&random);
            let mut b = samples()[pick].clone();
            let n = b.len();
            for (at, x) in flips {
                b[at % n] ^= x;
            }
            if let Some(c) = cut {
                b.truncate(c % (n + 1));
            }
            decode_all(&b);
        }
    }

    #[test]
    fn samples_round_trip_and_internal_messages_cannot_come_from_the_wire() {
        for s in samples() {
            assert!(
                postcard::from_bytes::<DriverMsg>(&s).is_ok()
                    || postcard::from_bytes::<ExecutorMsg>(&s).is_ok()
                    || postcard::from_bytes::<ReduceSegments>(&s).is_ok()
            );
        }
        for internal in [
            DriverMsg::Revive,
            DriverMsg::Kill { task_id: 1 },
            DriverMsg::StopExecutors,
            DriverMsg::AwaitExecutorsGone,
            DriverMsg::Lost {
                executor_id: "1".into(),
                reason: "r".into(),
                caused_by_app: true,
            },
            DriverMsg::ExpireDeadExecutors,
            DriverMsg::CheckStarvation,
            DriverMsg::Cleanup(CleanupTask::Rdd(1)),
        ] {
            let b = postcard::to_stdvec(&internal).unwrap();
            assert!(
                postcard::from_bytes::<DriverMsg>(&b).is_err(),
                "{internal:?} decoded from bytes"
            );
        }
    }
}
