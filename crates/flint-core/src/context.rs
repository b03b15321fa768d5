//! The driver's entry point (Spark's SparkContext): creates the schedulers and
//! backend for the master URL, makes RDDs from data, and runs jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, unbounded};
use parking_lot::Mutex;

use crate::conf::{FlintConf, MasterUrl};
use crate::env::TaskEnv;
use crate::error::{FlintError, Result};
use crate::func::Data;
use crate::listener::{ConsoleProgressBar, Listener, ListenerBus};
use crate::rdd::{
    BinaryRecordsRdd, ParallelCollectionRdd, RangeRdd, Rdd, RddBase, TextFileRdd,
    WholeTextFilesRdd, compute_splits, list_files, slice_vec,
};
use crate::scheduler::dag::BlockLocator;
use crate::scheduler::pool::{PoolConf, parse_allocations};
use crate::scheduler::task_scheduler::{SpeculationConf, TaskLocation};
use crate::scheduler::{
    DagEvent, DagScheduler, LocalBackend, SchedulerBackend, SchedulingMode, TaskScheduler,
};
use crate::shared_vars::{
    AccumRegistry, Accumulator, AccumulatorKind, Broadcast, Collect, DoubleSum, LongSum,
};
use crate::ship::Shipped;
use crate::shuffle::MapOutputTracker;
use crate::storage::{BlockId, BlockStore};

#[derive(Clone, Default)]
struct LocalProps {
    group: Option<String>,
    pool: Option<String>,
}

/// A handle on a running application; cheap to clone.
#[derive(Clone)]
pub struct FlintContext {
    inner: Arc<Inner>,
}

struct Inner {
    conf: FlintConf,
    /// Tasks run in other processes (a cluster master).
    cluster: bool,
    app_name: String,
    next_rdd_id: AtomicUsize,
    next_shuffle_id: AtomicUsize,
    next_job_id: AtomicUsize,
    env: Arc<TaskEnv>,
    dag_tx: Sender<DagEvent>,
    backend: Arc<dyn SchedulerBackend>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopped: Arc<AtomicBool>,
    /// Per-thread job group and scheduler pool (Spark's local properties).
    local_props: Mutex<std::collections::HashMap<std::thread::ThreadId, LocalProps>>,
    bus: ListenerBus,
    accums: Arc<AccumRegistry>,
    cleaner: crate::cleaner::Cleaner,
    checkpoint_dir: Mutex<Option<std::path::PathBuf>>,
    next_shared_id: AtomicUsize,
    _local_dir: crate::exit_cleanup::ExitCleanedDir,
}

impl FlintContext {
    pub fn new(conf: FlintConf) -> Result<Self> {
        if let Some(hook) = ON_NEW_CONTEXT.get() {
            hook();
        }
        if std::env::var(crate::executor::ROLE_VAR).as_deref() == Ok("executor") {
            // Else a Worker's executor would run the application's main as a
            // second driver.
            return Err(FlintError::Config(
                "this process was started as a Flint executor, but its main did not call flint::init() first: call it first thing in main".into(),
            ));
        }
        let mut conf = conf.with_submitted_defaults()?;
        let master = match conf.get("flint.master") {
            Some(m) => m.to_string(),
            None => std::env::var("FLINT_MASTER").unwrap_or_else(|_| "local[*]".into()),
        };
        let parsed = MasterUrl::parse(&master)?;
        // `spark://` comes back as `flint://`: the backend parses that.
        let master = match &parsed {
            MasterUrl::Cluster { url } => url.clone(),
            MasterUrl::Local { .. } => master,
        };
        conf.set_mut("flint.master", master.clone());
        let (threads, mut max_failures, cluster) = match parsed {
            MasterUrl::Local {
                threads,
                max_failures,
            } => (threads, max_failures, false),
            // Spark's default outside local mode: 4 attempts per task.
            MasterUrl::Cluster { .. } => (1, 4, true),
        };
        if let Some(v) = conf.get("flint.task.maxFailures")
            && (cluster || !master.contains(','))
        {
            // Spark: local[N] ignores spark.task.maxFailures; keep that, except
            // that an explicit setting is honoured so tests can exercise retries.
            max_failures = v.parse().map_err(|_| {
                FlintError::Config(format!("flint.task.maxFailures={v} is not a whole number"))
            })?;
        }
        if max_failures == 0 {
            return Err(FlintError::Config(
                "flint.task.maxFailures must be at least 1".into(),
            ));
        }
        if !cluster && conf.get("flint.shuffle.compress").is_none() {
            // In local mode shuffle files never cross a network and mostly
            // stay in the page cache: compressing them costs more CPU than it
            // saves (Sort 10M: 3.0-3.2 s without, 3.5-3.8 s with lz4). Spark
            // compresses everywhere; on a cluster so does Flint.
            conf.set_mut("flint.shuffle.compress", "false");
        }
        let app_name = conf.get_or("flint.app.name", "flint-app").to_string();
        let base = match conf.get("flint.local.dir") {
            Some(d) => std::path::PathBuf::from(d),
            None => std::env::temp_dir(),
        };
        std::fs::create_dir_all(&base)
            .map_err(|e| FlintError::io("cannot create local dir", &base, e))?;
        let local_dir = tempfile::Builder::new()
            .prefix("flint-local-")
            .tempdir_in(&base)
            .map_err(|e| FlintError::io("cannot create local dir in", &base, e))?;
        let local_dir = crate::exit_cleanup::ExitCleanedDir::new(local_dir);

        let tracker = Arc::new(MapOutputTracker::default());
        let executor_memory = conf.get_bytes("flint.executor.memory", 1 << 30)?;
        let storage_memory = conf.get_bytes("flint.storage.memory", executor_memory * 3 / 10)?;
        let block_dir = local_dir.path().join("blocks");
        std::fs::create_dir_all(&block_dir)
            .map_err(|e| FlintError::io("cannot create", &block_dir, e))?;
        let compression = if conf.get_bool("flint.shuffle.compress", true)? {
            crate::env::Compression::Lz4
        } else {
            crate::env::Compression::None
        };
        let env = Arc::new(TaskEnv::new(
            conf.clone(),
            "driver".into(),
            local_dir.path().to_path_buf(),
            tracker.clone(),
            Arc::new(BlockStore::new(
                storage_memory,
                Some(block_dir),
                compression,
            )),
            threads,
        )?);

        let mode = SchedulingMode::parse(conf.get_or("flint.scheduler.mode", "FIFO"))?;
        let mut pools = std::collections::HashMap::new();
        if let Some(path) = conf.get("flint.scheduler.allocation.file") {
            let xml = std::fs::read_to_string(path)
                .map_err(|e| FlintError::io("cannot read allocation file", path, e))?;
            pools = parse_allocations(&xml)?;
        }
        pools
            .entry("default".to_string())
            .or_insert_with(|| PoolConf::default_named("default"));
        let speculation = SpeculationConf {
            enabled: conf.get_bool("flint.speculation", false)?,
            quantile: conf.get_f64("flint.speculation.quantile", 0.9)?,
            multiplier: conf.get_f64("flint.speculation.multiplier", 3.0)?,
            min_runtime: conf.get_duration(
                "flint.speculation.minTaskRuntime",
                Duration::from_millis(100),
            )?,
            interval: conf
                .get_duration("flint.speculation.interval", Duration::from_millis(100))?,
        };

        let max_stage_attempts = conf.get_usize(
            "flint.stage.maxConsecutiveAttempts",
            crate::scheduler::dag::DEFAULT_MAX_CONSECUTIVE_ATTEMPTS,
        )?;
        if max_stage_attempts == 0 {
            return Err(FlintError::Config(
                "flint.stage.maxConsecutiveAttempts must be at least 1".into(),
            ));
        }
        let bus = ListenerBus::start();
        if let Some(bar) =
            ConsoleProgressBar::for_stderr(conf.get_bool("flint.ui.showConsoleProgress", true)?)
        {
            bus.add_listener(Box::new(bar));
        }
        let (dag_tx, dag_rx) = unbounded();
        let cpus_per_task = conf.get_usize("flint.task.cpus", 1)?;
        if cpus_per_task == 0 || cpus_per_task > threads {
            return Err(FlintError::Config(format!(
                "flint.task.cpus={cpus_per_task} must be between 1 and the {threads} cores of {master}"
            )));
        }
        let scheduler = TaskScheduler::new(
            dag_tx.clone(),
            max_failures,
            mode,
            pools,
            speculation.clone(),
            conf.get_duration("flint.locality.wait", Duration::from_secs(3))?,
            bus.clone(),
        )
        .with_cpus_per_task(cpus_per_task);
        let backend: Arc<dyn SchedulerBackend> = if cluster {
            let factory = crate::scheduler::backend::cluster_backend_factory().ok_or_else(|| {
                FlintError::Config(format!(
                    "master {master} needs the cluster backend: call flint::init() first thing in main"
                ))
            })?;
            // The application's secret: its executors authenticate with it and
            // the backend signs every task it sends with it (per context, so
            // two applications in one process do not sign with each other's).
            let app_secret = crate::ship::generate_task_key()?;
            factory(crate::scheduler::backend::ClusterStart {
                conf: conf.clone(),
                master: master.clone(),
                app_name: app_name.clone(),
                scheduler: scheduler.clone(),
                env: env.clone(),
                app_secret,
            })?
        } else {
            LocalBackend::start(scheduler.clone(), env.clone(), threads)?
        };
        let accums = Arc::new(AccumRegistry::default());
        let blocks = env.blocks.clone();
        // Local mode has one executor: a cached block is on it. On a cluster
        // the backend knows what each executor reported.
        let located = backend.clone();
        let locate: BlockLocator = Arc::new(move |id| {
            if cluster {
                located.block_locations(id)
            } else if blocks.contains(id) {
                vec![TaskLocation {
                    host: "localhost".into(),
                    executor: Some("driver".into()),
                }]
            } else {
                Vec::new()
            }
        });
        let dag = DagScheduler::new(
            scheduler.clone(),
            max_stage_attempts,
            tracker,
            accums.clone(),
            bus.clone(),
            locate,
        )
        .with_max_result_size(conf.get_bytes("flint.driver.maxResultSize", 1 << 30)?);
        let mut handles = vec![
            std::thread::Builder::new()
                .name("flint-dag-scheduler".into())
                .spawn(move || dag.run(dag_rx))
                .map_err(|e| FlintError::io("cannot start thread", "dag-scheduler", e))?,
        ];
        let (cleaner, cleaner_thread) =
            crate::cleaner::Cleaner::start(env.clone(), backend.clone())
                .map_err(|e| FlintError::io("cannot start thread", "context-cleaner", e))?;
        handles.push(cleaner_thread);
        let stopped = Arc::new(AtomicBool::new(false));
        if speculation.enabled {
            let s = scheduler.clone();
            let stop = stopped.clone();
            handles.push(
                std::thread::Builder::new()
                    .name("flint-speculation".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(s.speculation().interval);
                            s.check_speculatable();
                        }
                    })
                    .map_err(|e| FlintError::io("cannot start thread", "speculation", e))?,
            );
        }
        tracing::info!("Running Flint application {app_name} with master {master}");
        Ok(FlintContext {
            inner: Arc::new(Inner {
                conf,
                cluster,
                app_name,
                next_rdd_id: AtomicUsize::new(0),
                next_shuffle_id: AtomicUsize::new(0),
                next_job_id: AtomicUsize::new(0),
                env,
                dag_tx,
                backend,
                threads: Mutex::new(handles),
                stopped,
                local_props: Mutex::default(),
                bus,
                accums,
                cleaner,
                checkpoint_dir: Mutex::default(),
                next_shared_id: AtomicUsize::new(0),
                _local_dir: local_dir,
            }),
        })
    }

    pub fn conf(&self) -> &FlintConf {
        &self.inner.conf
    }

    pub fn app_name(&self) -> &str {
        &self.inner.app_name
    }

    pub fn env(&self) -> &Arc<TaskEnv> {
        &self.inner.env
    }

    pub fn default_parallelism(&self) -> usize {
        self.inner
            .conf
            .get("flint.default.parallelism")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| self.inner.backend.default_parallelism())
    }

    pub(crate) fn new_rdd_id(&self) -> usize {
        self.inner.next_rdd_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn new_shuffle_id(&self) -> usize {
        self.inner.next_shuffle_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Jobs started from this thread after this call belong to `group` and can be
    /// cancelled together.
    pub fn set_job_group(&self, group: Option<&str>) {
        let id = std::thread::current().id();
        self.inner.local_props.lock().entry(id).or_default().group = group.map(str::to_string);
    }

    /// The FAIR scheduling pool for jobs submitted after this call.
    pub fn set_scheduler_pool(&self, pool: &str) {
        let id = std::thread::current().id();
        self.inner.local_props.lock().entry(id).or_default().pool = Some(pool.to_string());
    }

    pub fn cancel_job_group(&self, group: &str) {
        let _ = self.inner.dag_tx.send(DagEvent::CancelJobGroup {
            group: group.into(),
        });
    }

    pub fn cancel_job(&self, job_id: usize) {
        let _ = self.inner.dag_tx.send(DagEvent::CancelJob {
            job_id,
            reason: "cancelled by user".into(),
        });
    }

    /// Runs a job and blocks until every partition's result is in.
    pub(crate) fn run_job(
        &self,
        rdd: Arc<dyn RddBase>,
        binary: Arc<Shipped>,
        partitions: Vec<usize>,
    ) -> Result<Vec<Vec<u8>>> {
        if self.inner.stopped.load(Ordering::Relaxed) {
            return Err(FlintError::Stopped);
        }
        check_job_partitions(&partitions, rdd.num_partitions())?;
        let job_id = self.inner.next_job_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let props = self
            .inner
            .local_props
            .lock()
            .get(&std::thread::current().id())
            .cloned()
            .unwrap_or_default();
        self.inner
            .dag_tx
            .send(DagEvent::JobSubmitted {
                job_id,
                rdd,
                binary,
                partitions,
                group: props.group,
                pool: props.pool.unwrap_or_else(|| "default".into()),
                reply: tx,
            })
            .map_err(|_| FlintError::Stopped)?;
        rx.recv().map_err(|_| FlintError::Stopped)?
    }

    // ---- sources ----

    /// Distributes a local collection into `slices` partitions.
    pub fn parallelize<T: Data>(&self, data: Vec<T>, slices: usize) -> Rdd<T> {
        let slices = slices.max(1);
        let id = self.new_rdd_id();
        for (i, s) in slice_vec(data, slices).into_iter().enumerate() {
            self.put_shared(BlockId::ParallelSlice { rdd: id, slice: i }, Arc::new(s));
        }
        Rdd::from_node(
            self,
            ParallelCollectionRdd::<T> {
                id,
                slices,
                _p: Default::default(),
            },
        )
    }

    /// An RDD with no partitions and no elements (Spark's `emptyRDD`).
    pub fn empty_rdd<T: Data>(&self) -> Rdd<T> {
        self.union(&[])
    }

    /// The elements of all of `rdds`, their partitions one after another
    /// (Spark's `SparkContext.union`; RDDs without partitions are left out).
    pub fn union<T: Data>(&self, rdds: &[Rdd<T>]) -> Rdd<T> {
        Rdd::from_node(
            self,
            crate::rdd::UnionRdd {
                id: self.new_rdd_id(),
                parents: rdds
                    .iter()
                    .filter(|r| r.num_partitions() > 0)
                    .cloned()
                    .collect(),
            },
        )
    }

    /// The numbers `start, start+step, ...` below `end` (above it for a negative step).
    pub fn range(&self, start: i64, end: i64, step: i64, slices: usize) -> Result<Rdd<i64>> {
        if step == 0 {
            return Err(FlintError::InvalidArgument("range step cannot be 0".into()));
        }
        Ok(Rdd::from_node(
            self,
            RangeRdd {
                id: self.new_rdd_id(),
                start,
                end,
                step,
                slices: slices.max(1),
            },
        ))
    }

    /// Lines of a file, a directory of files, or a glob, or of several of
    /// them separated by commas. Files named `.gz`, `.bz2` or `.deflate` are
    /// decompressed, each read whole by one task (as Hadoop's codecs, they
    /// cannot be split); `.zst`, `.lz4` and `.snappy` files are refused.
    pub fn text_file(&self, path: &str, min_partitions: usize) -> Result<Rdd<String>> {
        self.text_source(path, min_partitions, false)
    }

    /// The same text as [`text_file`](Self::text_file), as runs of whole
    /// lines (about 64 KiB each, line ends kept) instead of one record per
    /// line: for jobs that split text into words and need no line
    /// boundaries (`flat_map(Fn!(|c: String| flint::text::Words::new(c)))`),
    /// which then pay no per-line cost. Every line lies in exactly one
    /// record, the one of the split it starts in, as with `text_file`.
    pub fn text_file_chunks(&self, path: &str, min_partitions: usize) -> Result<Rdd<String>> {
        self.text_source(path, min_partitions, true)
    }

    fn text_source(&self, path: &str, min_partitions: usize, chunks: bool) -> Result<Rdd<String>> {
        let files = list_files(path)?;
        let splits = compute_splits(&files, min_partitions.max(1), 1, true)?;
        Ok(Rdd::from_node(
            self,
            TextFileRdd {
                id: self.new_rdd_id(),
                splits,
                chunks,
            },
        ))
    }

    /// `(path, contents)` per file.
    pub fn whole_text_files(
        &self,
        path: &str,
        min_partitions: usize,
    ) -> Result<Rdd<(String, String)>> {
        let files = list_files(path)?;
        for f in &files {
            crate::rdd::sources::Codec::of(f)?;
        }
        let n = min_partitions.max(1).min(files.len().max(1));
        let mut groups = vec![Vec::new(); n];
        for (i, f) in files.into_iter().enumerate() {
            groups[i % n].push(f);
        }
        Ok(Rdd::from_node(
            self,
            WholeTextFilesRdd {
                id: self.new_rdd_id(),
                groups,
            },
        ))
    }

    /// Fixed-length records of `record_len` bytes.
    pub fn binary_records(
        &self,
        path: &str,
        record_len: usize,
        min_partitions: usize,
    ) -> Result<Rdd<crate::Bytes>> {
        if record_len == 0 {
            return Err(FlintError::InvalidArgument(
                "record length must be positive".into(),
            ));
        }
        let files = list_files(path)?;
        for f in &files {
            let len = std::fs::metadata(f)
                .map_err(|e| FlintError::io("cannot stat", f, e))?
                .len();
            if len % record_len as u64 != 0 {
                return Err(FlintError::InvalidArgument(format!(
                    "{}: size {len} is not a multiple of the record length {record_len}",
                    f.display()
                )));
            }
        }
        let splits = compute_splits(&files, min_partitions.max(1), record_len as u64, false)?;
        Ok(Rdd::from_node(
            self,
            BinaryRecordsRdd {
                id: self.new_rdd_id(),
                record_len,
                splits,
            },
        ))
    }

    /// Registers a listener for scheduler events (job, stage and task starts and ends).
    pub fn add_listener(&self, l: Box<dyn Listener>) {
        self.inner.bus.add_listener(l);
    }

    /// A read-only value shipped once per executor rather than with every task.
    pub fn broadcast<T: Data>(&self, value: T) -> Broadcast<T> {
        let id = self.inner.next_shared_id.fetch_add(1, Ordering::Relaxed);
        let value = Arc::new(value);
        self.put_shared(BlockId::Broadcast { id }, value.clone());
        let guard = self
            .inner
            .cleaner
            .guard(crate::cleaner::CleanupTask::Broadcast(id));
        Broadcast::new(id, value, guard)
    }

    /// Keeps a driver value that tasks read by id (a parallelized slice, a
    /// broadcast): as is in local mode; encoded on a cluster, where executors
    /// fetch it by id. A value that cannot be encoded fails, with the reason,
    /// the tasks that need it.
    fn put_shared<V: serde::Serialize + Send + Sync + 'static>(
        &self,
        block: BlockId,
        value: Arc<V>,
    ) {
        let blocks = &self.inner.env.blocks;
        if !self.inner.cluster {
            blocks.put(block, value);
            return;
        }
        match crate::codec::encode("a value shipped to executors", &*value) {
            Ok(bytes) => blocks.put(block, Arc::new(crate::env::EncodedBlock(bytes))),
            Err(e) => tracing::warn!("{block:?} cannot be shipped to executors: {e}"),
        }
    }

    /// Removes a broadcast's copies, here and on the executors (Spark's
    /// `Broadcast.destroy`): using it afterwards, in a task or on the
    /// driver, panics ("Attempted to use Broadcast(N) after it was
    /// destroyed"; a task that does fails).
    pub fn destroy_broadcast<T: Data>(&self, b: &Broadcast<T>) {
        let id = b.id();
        b.mark_destroyed();
        self.inner
            .env
            .blocks
            .remove_where(|k| matches!(k, BlockId::Broadcast { id: i } if *i == id));
        self.inner
            .backend
            .cleanup(crate::cleaner::CleanupTask::Broadcast(id));
    }

    /// An accumulator of kind `K` (`LongSum`, `DoubleSum`, `Collect<T>`).
    pub fn accumulator<K: AccumulatorKind>(&self, name: &str) -> Accumulator<K> {
        let id = self.inner.next_shared_id.fetch_add(1, Ordering::Relaxed);
        Accumulator::register(&self.inner.accums, id, name)
    }

    pub fn long_accumulator(&self, name: &str) -> Accumulator<LongSum> {
        self.accumulator(name)
    }

    pub fn double_accumulator(&self, name: &str) -> Accumulator<DoubleSum> {
        self.accumulator(name)
    }

    pub fn collection_accumulator<T: Data>(&self, name: &str) -> Accumulator<Collect<T>> {
        self.accumulator(name)
    }

    /// Where `Rdd::checkpoint` writes: a new directory inside `dir` for this
    /// application (Spark's `setCheckpointDir`). Checkpoint files outlive the
    /// application; delete them when no longer needed.
    pub fn set_checkpoint_dir(&self, dir: impl AsRef<std::path::Path>) -> Result<()> {
        let dir = &crate::rdd::sources::absolute(dir.as_ref())?;
        std::fs::create_dir_all(dir)
            .map_err(|e| FlintError::io("cannot create checkpoint directory", dir, e))?;
        let own = tempfile::Builder::new()
            .prefix(&format!(
                "{}-",
                self.inner
                    .app_name
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
            ))
            .tempdir_in(dir)
            .map_err(|e| FlintError::io("cannot create checkpoint directory in", dir, e))?
            .keep();
        *self.inner.checkpoint_dir.lock() = Some(own);
        Ok(())
    }

    pub fn checkpoint_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.checkpoint_dir.lock().clone()
    }

    /// Drops an RDD's cached blocks on every executor (`unpersist`).
    pub(crate) fn unpersist_on_executors(&self, rdd: usize) {
        self.inner
            .backend
            .cleanup(crate::cleaner::CleanupTask::Rdd(rdd));
    }

    pub(crate) fn cleaner(&self) -> &crate::cleaner::Cleaner {
        &self.inner.cleaner
    }

    /// Waits until the blocks, shuffle files and map-output entries of RDDs,
    /// shuffles and broadcasts whose last handle was dropped have been removed
    /// (the context cleaner does this in the background; tests and tools that
    /// measure resources call this first).
    pub fn wait_for_cleanup(&self) {
        self.inner.cleaner.flush();
    }

    /// Number of sorted runs tasks have spilled to disk so far.
    pub fn spill_count(&self) -> u64 {
        self.inner.env.spill_count.load(Ordering::Relaxed)
    }

    /// Stops the schedulers; later jobs fail with a clear error. Also happens when
    /// the last handle (including RDDs) is dropped.
    pub fn stop(&self) {
        self.inner.stop();
    }
}

impl Inner {
    fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.dag_tx.send(DagEvent::Stop);
        self.backend.stop();
        self.cleaner.stop();
        let handles: Vec<_> = std::mem::take(&mut *self.threads.lock());
        for h in handles {
            let _ = h.join();
        }
        self.bus.stop();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

static ON_NEW_CONTEXT: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what runs as each context is created (the first setting stays):
/// `flint::init` installs its default logging there, so that a subscriber the
/// application installs after `init` and before its context comes first.
pub fn on_new_context(hook: fn()) {
    let _ = ON_NEW_CONTEXT.set(hook);
}

/// Refuses a job over partitions the RDD does not have (or one listed twice)
/// before anything is submitted, rather than failing inside a task.
fn check_job_partitions(partitions: &[usize], total: usize) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(partitions.len());
    for &p in partitions {
        if p >= total {
            return Err(FlintError::InvalidArgument(format!(
                "Attempting to access a non-existent partition: {p}. Total number of partitions: {total}"
            )));
        }
        if !seen.insert(p) {
            return Err(FlintError::InvalidArgument(format!(
                "partition {p} is listed twice in the job's partitions; list each partition once"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run in a child process with FLINT_ROLE=executor (the parent test
    /// below): a context there is refused with the fix, not created.
    #[test]
    fn a_context_in_an_executor_process_is_refused() {
        if std::env::var("FLINT_TEST_ROLE_CHILD").is_ok() {
            let err = FlintContext::new(FlintConf::new().master("local[1]"))
                .err()
                .expect("a context in executor mode")
                .to_string();
            assert!(err.contains("did not call flint::init()"), "{err}");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "context::tests::a_context_in_an_executor_process_is_refused",
                "--nocapture",
            ])
            .env(crate::executor::ROLE_VAR, "executor")
            .env("FLINT_TEST_ROLE_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
