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
}

enum Msg {
    Revive,
    Finished {
        tid: u64,
        end: TaskEnd,
        started: Instant,
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
    pub fn start(scheduler: Arc<TaskScheduler>, env: Arc<TaskEnv>, cores: usize) -> Arc<Self> {
        let (tx, rx) = unbounded::<Msg>();
        let (work_tx, work_rx) = unbounded::<(TaskDescription, Arc<AtomicBool>)>();
        let mut threads = Vec::new();
        for i in 0..cores {
            let work_rx = work_rx.clone();
            let tx = tx.clone();
            let env = env.clone();
            let h = std::thread::Builder::new()
                .name(format!("flint-task-{i}"))
                .spawn(move || {
                    while let Ok((desc, killed)) = work_rx.recv() {
                        let started = Instant::now();
                        let end = run_task(&desc, &env, killed);
                        if tx
                            .send(Msg::Finished {
                                tid: desc.task_id,
                                end,
                                started,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                })
                .expect("spawning a task thread");
            threads.push(h);
        }
        let endpoint = {
            let scheduler = scheduler.clone();
            std::thread::Builder::new()
                .name("flint-local-endpoint".into())
                .spawn(move || endpoint_loop(rx, work_tx, scheduler, cores))
                .expect("spawning the local endpoint thread")
        };
        threads.push(endpoint);
        let backend = Arc::new(LocalBackend {
            tx,
            cores,
            threads: Mutex::new(threads),
        });
        scheduler.set_backend(backend.clone());
        backend
    }
}

fn endpoint_loop(
    rx: Receiver<Msg>,
    work_tx: Sender<(TaskDescription, Arc<AtomicBool>)>,
    scheduler: Arc<TaskScheduler>,
    cores: usize,
) {
    let mut free = cores;
    let mut kill_flags: HashMap<u64, Arc<AtomicBool>> = HashMap::new();
    let offer = |free: &mut usize, kill_flags: &mut HashMap<u64, Arc<AtomicBool>>| {
        if *free == 0 {
            return;
        }
        let offers = [WorkerOffer {
            executor_id: "driver".into(),
            host: "localhost".into(),
            cores: *free,
        }];
        for (_, desc) in scheduler.resource_offers(&offers) {
            *free -= 1;
            let flag = Arc::new(AtomicBool::new(false));
            kill_flags.insert(desc.task_id, flag.clone());
            let _ = work_tx.send((desc, flag));
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
        Msg::Finished { tid, end, started } => {
            *free += 1;
            kill_flags.remove(&tid);
            scheduler.status_update(tid, end, started.elapsed());
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
