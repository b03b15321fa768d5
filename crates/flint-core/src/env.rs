//! What a running task can reach on its executor: configuration, the local
//! directory for shuffle and spill files, the map-output tracker, the block store,
//! and its share of execution memory. In local mode the driver and the executor
//! share one `TaskEnv`; on a cluster each executor process builds its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::conf::FlintConf;
use crate::error::{FlintError, Result};
use crate::shuffle::MapOutputTracker;
use crate::storage::BlockStore;

/// Compression of shuffle and spill files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
}

pub struct TaskEnv {
    pub conf: FlintConf,
    pub executor_id: String,
    local_dir: PathBuf,
    pub map_outputs: Arc<MapOutputTracker>,
    pub blocks: Arc<BlockStore>,
    /// Bytes of execution memory (aggregation and sort buffers) one task may hold.
    pub task_memory: u64,
    pub compression: Compression,
    /// `flint.shuffle.sync`: sync each map output before it is registered.
    pub shuffle_sync: bool,
    next_file: AtomicU64,
    /// Sorted runs spilled to disk by tasks on this executor (for metrics and tests).
    pub spill_count: AtomicU64,
    /// On a cluster executor: how to learn map outputs from the driver and
    /// fetch segments other executors wrote (set by the executor backend).
    pub shuffle_client: std::sync::OnceLock<Arc<dyn ShuffleClient>>,
    /// Keys the last map-side aggregation of each shuffle held here, so the
    /// next map task of that shuffle sizes its table once instead of
    /// rehashing as it grows (a WordCount's 32 map tasks each rebuilt a
    /// 50,000-key table).
    agg_hints: std::sync::Mutex<std::collections::HashMap<usize, usize>>,
}

/// The remote half of shuffle reading, implemented by the cluster crate.
pub trait ShuffleClient: Send + Sync {
    /// Where reduce partition `reduce` of a shuffle is, one non-empty segment
    /// per map output in map order, as the driver knows it now (a recomputed
    /// output moves, so this is asked afresh for each task). Only the
    /// segments of one partition cross the wire: O(maps) per reduce task.
    fn segments(
        &self,
        shuffle_id: usize,
        reduce: usize,
    ) -> Result<Vec<crate::shuffle::SegmentLocation>>;
    /// `len` bytes at `offset` of `seg`, the segment for `reduce` of a map
    /// output of `shuffle_id` on another executor.
    fn fetch(
        &self,
        shuffle_id: usize,
        reduce: usize,
        seg: &crate::shuffle::SegmentLocation,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>>;
    /// The encoded values of slice `slice` of parallelized collection `rdd`,
    /// from the driver.
    fn slice(&self, rdd: usize, slice: usize) -> Result<Vec<u8>>;
    /// The encoded value of broadcast `id`, from the driver.
    /// Shared, not copied: the executor keeps the same bytes to serve.
    fn broadcast(&self, id: usize) -> Result<Arc<Vec<u8>>>;
    /// Partition `split` of RDD `rdd` as frames, from another executor that
    /// caches it (None: nobody does, or it could not be fetched; the caller
    /// computes it instead).
    fn cached_block(&self, _rdd: usize, _split: usize) -> Option<Vec<u8>> {
        None
    }
}

/// A parallelized slice or a broadcast value as the driver keeps it on a
/// cluster: encoded once, served to whichever executor needs it (Spark ships a
/// slice inside its task and a broadcast through its block manager).
pub struct EncodedBlock(pub Vec<u8>);

impl TaskEnv {
    pub fn new(
        conf: FlintConf,
        executor_id: String,
        local_dir: PathBuf,
        map_outputs: Arc<MapOutputTracker>,
        blocks: Arc<BlockStore>,
        cores: usize,
    ) -> Result<Self> {
        let executor_memory = conf.get_bytes("flint.executor.memory", 1 << 30)?;
        let fraction = conf.get_f64("flint.memory.fraction", 0.6)?;
        if !(0.0..=1.0).contains(&fraction) {
            return Err(FlintError::Config(format!(
                "flint.memory.fraction={fraction} must be between 0 and 1"
            )));
        }
        // Spark gives each of N running tasks between 1/2N and 1/N of the pool; a
        // fixed 1/N share keeps spills predictable without a shared arbiter.
        let task_memory =
            ((executor_memory as f64 * fraction) as u64 / cores.max(1) as u64).max(1 << 20);
        let compression = if conf.get_bool("flint.shuffle.compress", true)? {
            match conf.get_or("flint.io.compression.codec", "lz4") {
                "lz4" => Compression::Lz4,
                other => {
                    return Err(FlintError::Config(format!(
                        "flint.io.compression.codec={other} is not supported; use lz4 (or set flint.shuffle.compress=false)"
                    )));
                }
            }
        } else {
            Compression::None
        };
        let shuffle_sync = conf.get_bool("flint.shuffle.sync", false)?;
        Ok(TaskEnv {
            shuffle_sync,
            conf,
            executor_id,
            local_dir,
            map_outputs,
            blocks,
            task_memory,
            compression,
            next_file: AtomicU64::new(0),
            spill_count: AtomicU64::new(0),
            shuffle_client: std::sync::OnceLock::new(),
            agg_hints: std::sync::Mutex::default(),
        })
    }

    /// Keys the last map-side aggregation of `shuffle` held (0 if none yet).
    pub fn agg_hint(&self, shuffle: usize) -> usize {
        self.agg_hints
            .lock()
            .map(|h| h.get(&shuffle).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn set_agg_hint(&self, shuffle: usize, keys: usize) {
        if let Ok(mut h) = self.agg_hints.lock() {
            // Old shuffles' hints are a few bytes each; keep the map bounded anyway.
            if h.len() >= 4096 && !h.contains_key(&shuffle) {
                h.clear();
            }
            h.insert(shuffle, keys);
        }
    }

    pub fn local_dir(&self) -> &Path {
        &self.local_dir
    }

    /// A fresh path for a temporary file (spills, in-progress shuffle output).
    pub fn temp_file(&self, prefix: &str) -> PathBuf {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        self.local_dir.join(format!("{prefix}-{n}.tmp"))
    }
}

/// Per-attempt state of one running task.
pub struct TaskContext {
    pub stage_id: usize,
    pub stage_attempt: usize,
    pub partition: usize,
    pub attempt: usize,
    pub task_id: u64,
    pub env: Arc<TaskEnv>,
    killed: Arc<AtomicBool>,
    errors: ErrorSink,
    /// What this attempt reads, writes and spends (reported to the driver).
    pub metrics: Arc<crate::metrics::LiveMetrics>,
}

/// A task's error slot, clonable into the `'static` iterators a task builds.
/// Iterators cannot return a `Result` per item, so they record the error here and
/// stop; the task runner turns it into a task failure before any output counts.
#[derive(Clone, Default)]
pub struct ErrorSink(Arc<Mutex<Option<FlintError>>>);

impl ErrorSink {
    pub fn fail(&self, e: FlintError) {
        let mut slot = self.0.lock();
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

impl TaskContext {
    pub fn new(
        desc: &crate::task::TaskDescription,
        env: Arc<TaskEnv>,
        killed: Arc<AtomicBool>,
        metrics: Arc<crate::metrics::LiveMetrics>,
    ) -> Self {
        TaskContext {
            stage_id: desc.stage_id,
            stage_attempt: desc.stage_attempt,
            partition: desc.partition,
            attempt: desc.attempt,
            task_id: desc.task_id,
            env,
            killed,
            errors: ErrorSink::default(),
            metrics,
        }
    }

    pub fn fail(&self, e: FlintError) {
        self.errors.fail(e)
    }

    pub fn errors(&self) -> ErrorSink {
        self.errors.clone()
    }

    pub fn has_error(&self) -> bool {
        self.errors.0.lock().is_some()
    }

    pub fn take_error(&self) -> Option<FlintError> {
        self.errors.0.lock().take()
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    pub fn kill_flag(&self) -> Arc<AtomicBool> {
        self.killed.clone()
    }
}
