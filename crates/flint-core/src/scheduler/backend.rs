//! Scheduler backends: how the task scheduler reaches executors. Local mode runs
//! an executor's thread pool in this process; a cluster backend (later) talks to
//! executor processes over RPC. Only this layer differs between the two.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, unbounded};
use parking_lot::Mutex;

use super::task_scheduler::TaskScheduler;
use crate::env::TaskEnv;
use crate::task::{TaskDescription, TaskEnd, run_task};

/// Free cores on one executor.
#[derive(Clone, Debug)]
pub struct WorkerOffer {
    pub executor_id: String,
    pub host: String,
    pub cores: usize,
}

pub trait SchedulerBackend: Send + Sync {
    /// Ask for offers now (new tasks or freed cores).
    fn revive_offers(&self);
    fn kill_task(&self, task_id: u64);
    fn default_parallelism(&self) -> usize;
    fn stop(&self);
    /// Removes what the driver's cleaner removed from the executors too
    /// (local mode's executor is the driver's environment: nothing to do).
    fn cleanup(&self, _task: crate::cleaner::CleanupTask) {}
    /// Where a cached block is (Spark's BlockManagerMaster), for locality;
    /// local mode answers from its one store instead.
    fn block_locations(
        &self,
        _id: crate::storage::BlockId,
    ) -> Vec<super::task_scheduler::TaskLocation> {
        Vec::new()
    }
}

enum Msg {
    Revive,
    Finished {
        tid: u64,
        end: TaskEnd,
        started: Instant,
        metrics: crate::metrics::TaskMetrics,
    },
    Kill(u64),
    Stop,
}

/// Local mode: one in-process executor with `cores` task threads. A single
/// endpoint thread owns the free-core count and serialises scheduler calls, as
/// Spark's LocalEndpoint does.
pub struct LocalBackend {
    tx: Sender<Msg>,
    cores: usize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl LocalBackend {
    pub fn start(
        scheduler: Arc<TaskScheduler>,
        env: Arc<TaskEnv>,
        cores: usize,
    ) -> crate::error::Result<Arc<Self>> {
        let (tx, rx) = unbounded::<Msg>();
        let pool = TaskThreads::new(env, tx.clone());
        let endpoint = {
            let scheduler = scheduler.clone();
            std::thread::Builder::new()
                .name("flint-local-endpoint".into())
                .spawn(move || endpoint_loop(rx, pool, scheduler, cores))
                .map_err(|e| {
                    crate::error::FlintError::io("cannot start thread", "flint-local-endpoint", e)
                })?
        };
        let backend = Arc::new(LocalBackend {
            tx,
            cores,
            threads: Mutex::new(vec![endpoint]),
        });
        scheduler.set_backend(backend.clone());
        Ok(backend)
    }
}

/// The executor's task threads, started on demand: never more than the most
/// tasks that ran at once, so `local[100000]` costs nothing until a job needs
/// the threads, and a system that refuses threads is reported, not a crash.
/// Threads end when the endpoint drops the work queue.
struct TaskThreads {
    env: Arc<TaskEnv>,
    done: Sender<Msg>,
    work_tx: Sender<(TaskDescription, Arc<AtomicBool>)>,
    work_rx: Receiver<(TaskDescription, Arc<AtomicBool>)>,
    spawned: usize,
    warned: bool,
}

impl TaskThreads {
    fn new(env: Arc<TaskEnv>, done: Sender<Msg>) -> Self {
        let (work_tx, work_rx) = unbounded();
        TaskThreads {
            env,
            done,
            work_tx,
            work_rx,
            spawned: 0,
            warned: false,
        }
    }

    /// Queues a task, first starting a thread if fewer than `running` exist.
    /// Fails only if no thread exists and none can be started.
    fn run(
        &mut self,
        desc: TaskDescription,
        killed: Arc<AtomicBool>,
        running: usize,
    ) -> std::result::Result<(), (TaskDescription, std::io::Error)> {
        if self.spawned < running {
            let (work_rx, tx, env) = (self.work_rx.clone(), self.done.clone(), self.env.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("flint-task-{}", self.spawned))
                .spawn(move || {
                    while let Ok((desc, killed)) = work_rx.recv() {
                        let started = Instant::now();
                        let metrics = Arc::default();
                        let end = run_task(&desc, &env, killed, &metrics);
                        let tid = desc.task_id;
                        let metrics = metrics.snapshot();
                        let done = Msg::Finished {
                            tid,
                            end,
                            started,
                            metrics,
                        };
                        if tx.send(done).is_err() {
                            break;
                        }
                    }
                });
            match spawned {
                Ok(_) => self.spawned += 1,
                Err(e) if self.spawned == 0 => return Err((desc, e)),
                Err(e) => {
                    // Tasks still run, on the threads that exist.
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!(
                            "cannot start more than {} task threads ({e}); tasks queue for them. Lower N in local[N]",
                            self.spawned
                        );
                    }
                }
            }
        }
        let _ = self.work_tx.send((desc, killed));
        Ok(())
    }
}

fn endpoint_loop(
    rx: Receiver<Msg>,
    mut pool: TaskThreads,
    scheduler: Arc<TaskScheduler>,
    cores: usize,
) {
    let mut free = cores;
    // Each task takes `flint.task.cpus` of the free cores.
    let cpus = scheduler.cpus_per_task();
    let mut kill_flags: HashMap<u64, Arc<AtomicBool>> = HashMap::new();
    let mut offer = |free: &mut usize, kill_flags: &mut HashMap<u64, Arc<AtomicBool>>| {
        if *free < cpus {
            return;
        }
        let offers = [WorkerOffer {
            executor_id: "driver".into(),
            host: "localhost".into(),
            cores: *free,
        }];
        for (_, desc) in scheduler.resource_offers(&offers) {
            *free -= cpus;
            let flag = Arc::new(AtomicBool::new(false));
            let tid = desc.task_id;
            match pool.run(desc, flag.clone(), (cores - *free) / cpus) {
                Ok(()) => {
                    kill_flags.insert(tid, flag);
                }
                Err((_, e)) => {
                    *free += cpus;
                    scheduler.status_update(
                        tid,
                        TaskEnd::Failed(crate::error::FlintError::User(format!(
                            "cannot start a task thread: {e}. The system refuses new threads; lower N in local[N] or raise the process's thread limit"
                        ))),
                        std::time::Duration::ZERO,
                    );
                }
            }
        }
    };
    // Offers are also made periodically so delay scheduling can relax its
    // locality level without waiting for an event (Spark's revive interval).
    let revive_every = std::time::Duration::from_secs(1);
    loop {
        let msg = match rx.recv_timeout(revive_every) {
            Ok(m) => m,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Msg::Revive,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            Msg::Revive => {
                // Coalesce a burst of revives into one round of offers.
                let mut stop = false;
                let mut pending = Vec::new();
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Revive => {}
                        Msg::Stop => {
                            stop = true;
                            break;
                        }
                        other => pending.push(other),
                    }
                }
                for m in pending {
                    handle(m, &mut free, &mut kill_flags, &scheduler);
                }
                if stop {
                    break;
                }
                offer(&mut free, &mut kill_flags);
            }
            Msg::Stop => break,
            m => {
                handle(m, &mut free, &mut kill_flags, &scheduler);
                offer(&mut free, &mut kill_flags);
            }
        }
    }
    for f in kill_flags.values() {
        f.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn handle(
    msg: Msg,
    free: &mut usize,
    kill_flags: &mut HashMap<u64, Arc<AtomicBool>>,
    scheduler: &TaskScheduler,
) {
    match msg {
        Msg::Finished {
            tid,
            end,
            started,
            metrics,
        } => {
            *free += scheduler.cpus_per_task();
            kill_flags.remove(&tid);
            scheduler.status_update_with_metrics(tid, end, started.elapsed(), metrics);
        }
        Msg::Kill(tid) => {
            if let Some(f) = kill_flags.get(&tid) {
                f.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Msg::Revive | Msg::Stop => {}
    }
}

impl SchedulerBackend for LocalBackend {
    fn revive_offers(&self) {
        let _ = self.tx.send(Msg::Revive);
    }
    fn kill_task(&self, task_id: u64) {
        let _ = self.tx.send(Msg::Kill(task_id));
    }
    fn default_parallelism(&self) -> usize {
        self.cores
    }
    fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me && t.thread().name() == Some("flint-local-endpoint") {
                let _ = t.join();
            }
        }
    }
}

/// What a cluster backend gets to start with.
pub struct ClusterStart {
    pub conf: crate::conf::FlintConf,
    /// The master URL: `flint://...` or `local-cluster[N,C,M]`.
    pub master: String,
    pub app_name: String,
    pub scheduler: Arc<TaskScheduler>,
    /// The driver's environment (its tracker serves map outputs to executors).
    pub env: Arc<TaskEnv>,
    /// The application's secret: executors authenticate with it and tasks are
    /// signed with it.
    pub app_secret: Vec<u8>,
}

/// Builds the backend for cluster master URLs. flint-core has no sockets, so
/// the cluster crate registers one (the `flint` facade does, in `flint::init()`).
pub type ClusterBackendFactory =
    fn(ClusterStart) -> crate::error::Result<Arc<dyn SchedulerBackend>>;

static CLUSTER_FACTORY: std::sync::OnceLock<ClusterBackendFactory> = std::sync::OnceLock::new();

/// Registers the cluster backend (first registration wins).
pub fn register_cluster_backend(f: ClusterBackendFactory) {
    let _ = CLUSTER_FACTORY.set(f);
}

pub(crate) fn cluster_backend_factory() -> Option<ClusterBackendFactory> {
    CLUSTER_FACTORY.get().copied()
}
