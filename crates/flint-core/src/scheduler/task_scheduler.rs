//! The task scheduler (Spark's TaskSchedulerImpl + TaskSetManager): one manager per
//! stage attempt, with per-task failure counts, pools, and speculative copies of
//! stragglers. It never sees records: tasks are shipped bytes plus indices.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::backend::{SchedulerBackend, WorkerOffer};
use super::dag::DagEvent;
use super::pool::{PoolConf, SchedulingMode, fair_cmp};
use crate::error::FlintError;
use crate::listener::{Event, ListenerBus};
use crate::metrics::TaskMetrics;
use crate::ship::Shipped;
use crate::task::{TaskDescription, TaskEnd};

/// The tasks of one stage attempt.
pub struct TaskSet {
    pub stage_id: usize,
    pub stage_attempt: usize,
    /// The first job's id: lower runs first under FIFO.
    pub priority: usize,
    pub pool: String,
    pub partitions: Vec<usize>,
    /// Preferred locations per task (empty: no preference).
    pub locations: Vec<Vec<TaskLocation>>,
    pub binary: Arc<Shipped>,
    /// Driver-held blocks each task reads (empty: none).
    pub driver_blocks: Vec<Vec<crate::storage::BlockId>>,
}

/// Where a task would rather run: on an executor holding its cached input
/// (process-local) or on a host holding its data (node-local).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskLocation {
    pub host: String,
    pub executor: Option<String>,
}

/// Spark's TaskLocality, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Locality {
    ProcessLocal,
    NodeLocal,
    NoPref,
    Any,
}

#[derive(Clone, Debug)]
pub struct SpeculationConf {
    pub enabled: bool,
    pub quantile: f64,
    pub multiplier: f64,
    pub min_runtime: Duration,
    pub interval: Duration,
}

struct RunningCopy {
    index: usize,
    started: Instant,
    speculative: bool,
    /// Where it runs: a speculative copy goes to another host.
    host: String,
    executor: String,
    /// The attempt number (Spark's "task 3.1": partition 3, attempt 1).
    attempt: usize,
}

struct TaskSetManager {
    set: TaskSet,
    /// Every pending task, in index order (the ANY level).
    pending: VecDeque<usize>,
    pending_for_executor: HashMap<String, Vec<usize>>,
    pending_for_host: HashMap<String, Vec<usize>>,
    pending_no_prefs: Vec<usize>,
    levels: Vec<Locality>,
    level_index: usize,
    last_launch: Instant,
    speculatable: VecDeque<usize>,
    successful: Vec<bool>,
    num_success: usize,
    failures: Vec<usize>,
    attempts: Vec<usize>,
    copies: Vec<usize>,
    running: HashMap<u64, RunningCopy>,
    durations: Vec<Duration>,
    zombie: bool,
}

impl TaskSetManager {
    fn new(set: TaskSet) -> Self {
        let n = set.partitions.len();
        let mut t = TaskSetManager {
            pending: VecDeque::new(),
            pending_for_executor: HashMap::new(),
            pending_for_host: HashMap::new(),
            pending_no_prefs: Vec::new(),
            levels: Vec::new(),
            level_index: 0,
            last_launch: Instant::now(),
            speculatable: VecDeque::new(),
            successful: vec![false; n],
            num_success: 0,
            failures: vec![0; n],
            attempts: vec![0; n],
            copies: vec![0; n],
            running: HashMap::new(),
            durations: Vec::new(),
            zombie: false,
            set,
        };
        for i in (0..n).rev() {
            t.add_pending(i, false);
        }
        t.pending = (0..n).collect();
        let mut levels = Vec::new();
        if !t.pending_for_executor.is_empty() {
            levels.push(Locality::ProcessLocal);
        }
        if !t.pending_for_host.is_empty() {
            levels.push(Locality::NodeLocal);
        }
        if !t.pending_no_prefs.is_empty() {
            levels.push(Locality::NoPref);
        }
        levels.push(Locality::Any);
        t.levels = levels;
        t
    }

    /// Queues task `i` in every list its preferences put it in.
    fn add_pending(&mut self, i: usize, front: bool) {
        let locs = &self.set.locations;
        let prefs = locs.get(i).map(Vec::as_slice).unwrap_or(&[]);
        if prefs.is_empty() {
            self.pending_no_prefs.push(i);
        }
        for l in prefs {
            if let Some(e) = &l.executor {
                self.pending_for_executor
                    .entry(e.clone())
                    .or_default()
                    .push(i);
            }
            self.pending_for_host
                .entry(l.host.clone())
                .or_default()
                .push(i);
        }
        if front {
            self.pending.push_front(i);
        }
    }

    fn launchable(&self, i: usize) -> bool {
        !self.successful[i] && self.copies[i] == 0
    }

    fn pop_from(list: &mut Vec<usize>, ok: impl Fn(usize) -> bool) -> Option<usize> {
        while let Some(i) = list.pop() {
            if ok(i) {
                return Some(i);
            }
        }
        None
    }

    /// Spark's getAllowedLocalityLevel: wait `wait` at each level with pending
    /// tasks before allowing a worse one.
    fn allowed_level(&mut self, now: Instant, wait: Duration) -> Locality {
        while self.level_index + 1 < self.levels.len() {
            let has_tasks = match self.levels[self.level_index] {
                Locality::ProcessLocal => self
                    .pending_for_executor
                    .values()
                    .any(|v| v.iter().any(|&i| self.launchable(i))),
                Locality::NodeLocal => self
                    .pending_for_host
                    .values()
                    .any(|v| v.iter().any(|&i| self.launchable(i))),
                Locality::NoPref => self.pending_no_prefs.iter().any(|&i| self.launchable(i)),
                Locality::Any => true,
            };
            if !has_tasks {
                self.level_index += 1;
                self.last_launch = now;
            } else if now.saturating_duration_since(self.last_launch) >= wait {
                self.last_launch += wait;
                self.level_index += 1;
            } else {
                break;
            }
        }
        self.levels[self.level_index]
    }

    /// The next task to run on `executor`@`host`, respecting delay scheduling.
    fn next_for(
        &mut self,
        executor: &str,
        host: &str,
        now: Instant,
        wait: Duration,
    ) -> Option<(usize, bool)> {
        let max = self.allowed_level(now, wait);
        let successful = &self.successful;
        let copies = &self.copies;
        let ok = |i: usize| !successful[i] && copies[i] == 0;
        let mut found = None;
        if let Some(list) = self.pending_for_executor.get_mut(executor) {
            found = Self::pop_from(list, ok).map(|i| (i, Locality::ProcessLocal));
        }
        if found.is_none()
            && max >= Locality::NodeLocal
            && let Some(list) = self.pending_for_host.get_mut(host)
        {
            found = Self::pop_from(list, ok).map(|i| (i, Locality::NodeLocal));
        }
        if found.is_none() && max >= Locality::NoPref {
            found = Self::pop_from(&mut self.pending_no_prefs, ok).map(|i| (i, Locality::NoPref));
        }
        if found.is_none() && max >= Locality::Any {
            while let Some(i) = self.pending.pop_front() {
                if ok(i) {
                    found = Some((i, Locality::Any));
                    break;
                }
            }
        }
        if let Some((i, level)) = found {
            // Launching at a level resets the wait there (Spark).
            if let Some(pos) = self.levels.iter().position(|l| *l >= level) {
                self.level_index = pos;
            }
            self.last_launch = now;
            return Some((i, false));
        }
        self.next_speculative(host)
    }

    /// A speculatable task to copy onto `host`: never one already running
    /// there (as Spark: a copy on the same host would share its trouble, so
    /// `local[N]`, one host, never speculates). Others stay queued for an
    /// offer from another host.
    fn next_speculative(&mut self, host: &str) -> Option<(usize, bool)> {
        let (successful, copies) = (&self.successful, &self.copies);
        self.speculatable
            .retain(|&i| !successful[i] && copies[i] == 1);
        let running = &self.running;
        let pos = self
            .speculatable
            .iter()
            .position(|&i| !running.values().any(|c| c.index == i && c.host == host))?;
        self.speculatable.remove(pos).map(|i| (i, true))
    }

    fn is_done(&self) -> bool {
        (self.zombie || self.num_success == self.successful.len()) && self.running.is_empty()
    }
}

struct State {
    sets: HashMap<(usize, usize), TaskSetManager>,
    tid_to_set: HashMap<u64, (usize, usize)>,
    next_tid: u64,
    pools: HashMap<String, PoolConf>,
    running_per_pool: HashMap<String, usize>,
    rng: crate::util::SplitMix64,
}

/// What the DAG scheduler needs of a task scheduler (Spark's `TaskScheduler`
/// trait): a seam so the DAG scheduler can be driven by scripted events in tests.
pub trait TaskScheduling: Send + Sync {
    /// Adds a stage attempt's tasks; older attempts of the stage become zombies.
    fn submit_tasks(&self, set: TaskSet);
    /// Kills the running tasks of a stage and drops its task sets.
    fn cancel_stage(&self, stage_id: usize);
}

impl TaskScheduling for TaskScheduler {
    fn submit_tasks(&self, set: TaskSet) {
        TaskScheduler::submit_tasks(self, set)
    }
    fn cancel_stage(&self, stage_id: usize) {
        TaskScheduler::cancel_stage(self, stage_id)
    }
}

pub struct TaskScheduler {
    state: Mutex<State>,
    dag: Sender<DagEvent>,
    backend: OnceLock<Arc<dyn SchedulerBackend>>,
    max_failures: usize,
    mode: SchedulingMode,
    speculation: SpeculationConf,
    locality_wait: Duration,
    /// Cores each task takes (`flint.task.cpus`).
    cpus_per_task: usize,
    bus: ListenerBus,
}

impl TaskScheduler {
    pub fn new(
        dag: Sender<DagEvent>,
        max_failures: usize,
        mode: SchedulingMode,
        pools: HashMap<String, PoolConf>,
        speculation: SpeculationConf,
        locality_wait: Duration,
        bus: ListenerBus,
    ) -> Arc<Self> {
        Arc::new(TaskScheduler {
            state: Mutex::new(State {
                sets: HashMap::new(),
                tid_to_set: HashMap::new(),
                next_tid: 0,
                pools,
                running_per_pool: HashMap::new(),
                rng: crate::util::SplitMix64::new(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0x5eed),
                ),
            }),
            dag,
            backend: OnceLock::new(),
            max_failures,
            mode,
            speculation,
            locality_wait,
            cpus_per_task: 1,
            bus,
        })
    }

    /// Sets `flint.task.cpus` (before any task set is submitted).
    pub fn with_cpus_per_task(mut self: Arc<Self>, cpus: usize) -> Arc<Self> {
        if let Some(s) = Arc::get_mut(&mut self) {
            s.cpus_per_task = cpus.max(1);
        }
        self
    }

    /// Cores each task takes of an executor's free cores.
    pub fn cpus_per_task(&self) -> usize {
        self.cpus_per_task
    }

    pub fn set_backend(&self, b: Arc<dyn SchedulerBackend>) {
        let _ = self.backend.set(b);
    }

    pub fn speculation(&self) -> &SpeculationConf {
        &self.speculation
    }

    fn revive(&self) {
        if let Some(b) = self.backend.get() {
            b.revive_offers();
        }
    }

    /// Adds a stage attempt's tasks; any older attempt of the stage becomes a
    /// zombie (only one active task set per stage).
    pub fn submit_tasks(&self, set: TaskSet) {
        {
            let mut st = self.state.lock();
            for ((sid, _), tsm) in st.sets.iter_mut() {
                if *sid == set.stage_id {
                    tsm.zombie = true;
                }
            }
            if !st.pools.contains_key(&set.pool) {
                let p = PoolConf::default_named(&set.pool);
                st.pools.insert(set.pool.clone(), p);
            }
            let key = (set.stage_id, set.stage_attempt);
            st.sets.insert(key, TaskSetManager::new(set));
            // Zombies with nothing running will never hear from a task again.
            st.sets.retain(|_, t| !t.is_done());
        }
        self.revive();
    }

    /// Kills the running tasks of a stage and drops its task sets.
    pub fn cancel_stage(&self, stage_id: usize) {
        let mut to_kill = Vec::new();
        {
            let mut st = self.state.lock();
            for ((sid, _), tsm) in st.sets.iter_mut() {
                if *sid == stage_id {
                    tsm.zombie = true;
                    to_kill.extend(tsm.running.keys().copied());
                }
            }
            // A cancelled set with nothing running is done now; the others go
            // when their killed tasks report back.
            st.sets.retain(|_, t| !t.is_done());
        }
        if let Some(b) = self.backend.get() {
            for tid in to_kill {
                b.kill_task(tid);
            }
        }
    }

    /// Pool names ordered for the next launch.
    fn ordered_sets(&self, st: &State) -> Vec<(usize, usize)> {
        let mut keys: Vec<(usize, usize)> = st
            .sets
            .iter()
            .filter(|(_, t)| !t.zombie)
            .map(|(k, _)| *k)
            .collect();
        let fifo_key = |k: &(usize, usize)| {
            let t = &st.sets[k];
            (t.set.priority, t.set.stage_id, t.set.stage_attempt)
        };
        match self.mode {
            SchedulingMode::Fifo => keys.sort_by_key(fifo_key),
            SchedulingMode::Fair => keys.sort_by(|a, b| {
                let pa = &st.sets[a].set.pool;
                let pb = &st.sets[b].set.pool;
                let ca = (&st.pools[pa], *st.running_per_pool.get(pa).unwrap_or(&0));
                let cb = (&st.pools[pb], *st.running_per_pool.get(pb).unwrap_or(&0));
                fair_cmp(ca, cb).then_with(|| fifo_key(a).cmp(&fifo_key(b)))
            }),
        }
        keys
    }

    /// Assigns tasks to free cores, one at a time, re-ranking sets after each
    /// launch so FAIR pools converge to their shares.
    pub fn resource_offers(&self, offers: &[WorkerOffer]) -> Vec<(String, TaskDescription)> {
        self.resource_offers_at(offers, Instant::now())
    }

    /// `resource_offers` at a given time (delay scheduling is time based).
    pub fn resource_offers_at(
        &self,
        offers: &[WorkerOffer],
        now: Instant,
    ) -> Vec<(String, TaskDescription)> {
        let wait = self.locality_wait;
        let cpus = self.cpus_per_task;
        let mut st = self.state.lock();
        let mut out = Vec::new();
        // Offers in a random order (Spark's shuffleOffers), so a small task set
        // does not always land on the first executor.
        let mut order: Vec<usize> = (0..offers.len()).collect();
        for i in (1..order.len()).rev() {
            let j = (st.rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut free: Vec<usize> = offers.iter().map(|o| o.cores).collect();
        loop {
            let mut launched = false;
            for &oi in &order {
                let offer = &offers[oi];
                if free[oi] < cpus {
                    continue;
                }
                let order = self.ordered_sets(&st);
                for key in order {
                    let tid = st.next_tid;
                    let Some(tsm) = st.sets.get_mut(&key) else {
                        continue;
                    };
                    let Some((index, speculative)) =
                        tsm.next_for(&offer.executor_id, &offer.host, now, wait)
                    else {
                        continue;
                    };
                    let attempt = tsm.attempts[index];
                    tsm.attempts[index] += 1;
                    tsm.copies[index] += 1;
                    tsm.running.insert(
                        tid,
                        RunningCopy {
                            index,
                            started: now,
                            speculative,
                            host: offer.host.clone(),
                            executor: offer.executor_id.clone(),
                            attempt,
                        },
                    );
                    let desc = TaskDescription {
                        task_id: tid,
                        stage_id: tsm.set.stage_id,
                        stage_attempt: tsm.set.stage_attempt,
                        partition: tsm.set.partitions[index],
                        index,
                        attempt,
                        binary: tsm.set.binary.clone(),
                        driver_blocks: tsm
                            .set
                            .driver_blocks
                            .get(index)
                            .cloned()
                            .unwrap_or_default(),
                    };
                    let pool = tsm.set.pool.clone();
                    if speculative {
                        tracing::info!(
                            "launching speculative task {tid} for partition {} of stage {}",
                            desc.partition,
                            desc.stage_id
                        );
                    }
                    self.bus.post(|| Event::TaskStart {
                        stage_id: desc.stage_id,
                        attempt: desc.stage_attempt,
                        task_id: tid,
                        partition: desc.partition,
                    });
                    st.next_tid += 1;
                    st.tid_to_set.insert(tid, key);
                    *st.running_per_pool.entry(pool).or_insert(0) += 1;
                    out.push((offer.executor_id.clone(), desc));
                    free[oi] -= cpus;
                    launched = true;
                    break;
                }
            }
            if !launched {
                break;
            }
        }
        out
    }

    /// Handles a finished task attempt (from the backend).
    pub fn status_update(&self, tid: u64, end: TaskEnd, duration: Duration) {
        self.status_update_with_metrics(tid, end, duration, TaskMetrics::default())
    }

    /// A task attempt ended, with what it measured (posted with its TaskEnd
    /// event).
    pub fn status_update_with_metrics(
        &self,
        tid: u64,
        end: TaskEnd,
        duration: Duration,
        metrics: TaskMetrics,
    ) {
        let mut events = Vec::new();
        let mut kills = Vec::new();
        {
            let mut st = self.state.lock();
            let Some(key) = st.tid_to_set.remove(&tid) else {
                return;
            };
            let Some(tsm) = st.sets.get_mut(&key) else {
                return;
            };
            let Some(copy) = tsm.running.remove(&tid) else {
                return;
            };
            let pool = tsm.set.pool.clone();
            let i = copy.index;
            tsm.copies[i] -= 1;
            let (stage_id, stage_attempt) = key;
            let partition = tsm.set.partitions[i];
            self.bus.post(|| Event::TaskEnd {
                stage_id,
                attempt: stage_attempt,
                task_id: tid,
                partition,
                succeeded: matches!(end, TaskEnd::Success(..)),
                executor: copy.executor.clone(),
                metrics,
            });
            match end {
                TaskEnd::Success(output, accum_updates) => {
                    if !tsm.successful[i] {
                        tsm.successful[i] = true;
                        tsm.num_success += 1;
                        tsm.durations.push(duration);
                        if copy.speculative {
                            tracing::info!(
                                "speculative copy {tid} of partition {partition} finished first"
                            );
                        }
                        // Other copies of this task lost the race.
                        kills.extend(
                            tsm.running
                                .iter()
                                .filter(|(_, c)| c.index == i)
                                .map(|(t, _)| *t),
                        );
                        events.push(DagEvent::TaskSucceeded {
                            stage_id,
                            stage_attempt,
                            partition,
                            output,
                            accum_updates,
                        });
                    }
                }
                TaskEnd::Failed(FlintError::FetchFailed {
                    shuffle_id,
                    map_id,
                    executor,
                    reason,
                }) => {
                    // As Spark: the attempt launches nothing more, but its
                    // running tasks finish (a result task's value still counts).
                    tsm.zombie = true;
                    events.push(DagEvent::FetchFailed {
                        stage_id,
                        stage_attempt,
                        shuffle_id,
                        map_id,
                        executor,
                        reason,
                    });
                }
                TaskEnd::Failed(e) => {
                    if !tsm.successful[i] && !tsm.zombie {
                        tsm.failures[i] += 1;
                        if matches!(e, FlintError::ResultTooLarge(_)) {
                            tsm.failures[i] = tsm.failures[i].max(self.max_failures);
                        }
                        // Spark's "Lost task 0.1 in stage 2.0 (TID 9) (host
                        // executor 3)": the executor says where to look.
                        let (attempt, exec, host) = (copy.attempt, &copy.executor, &copy.host);
                        let lost = format!(
                            "Lost task {partition}.{attempt} in stage {stage_id}.{stage_attempt} (TID {tid}) ({host} executor {exec}): {e}"
                        );
                        match e.backtrace() {
                            Some(bt) => tracing::warn!("{lost}\n{bt}"),
                            None => tracing::warn!("{lost}"),
                        }
                        if tsm.failures[i] >= self.max_failures {
                            tsm.zombie = true;
                            kills.extend(tsm.running.keys().copied());
                            events.push(DagEvent::TaskSetFailed {
                                stage_id,
                                stage_attempt,
                                partition,
                                attempts: tsm.failures[i],
                                // Where it failed, as Spark's message says:
                                // a path an executor cannot read names its host.
                                message: lost,
                                backtrace: e.backtrace().map(str::to_string),
                            });
                        } else if tsm.copies[i] == 0 {
                            tsm.add_pending(i, true);
                        }
                    }
                }
                TaskEnd::Killed => {}
            }
            let done = tsm.is_done();
            if done {
                st.sets.remove(&key);
            }
            if let Some(n) = st.running_per_pool.get_mut(&pool) {
                *n = n.saturating_sub(1);
            }
        }
        for e in events {
            let _ = self.dag.send(e);
        }
        if let Some(b) = self.backend.get() {
            for k in kills {
                b.kill_task(k);
            }
        }
        self.revive();
    }

    /// Whether any task set still has tasks to run or running.
    pub fn has_active_task_sets(&self) -> bool {
        !self.state.lock().sets.is_empty()
    }

    /// Metrics of running tasks from an executor's heartbeat, for listeners.
    pub fn executor_metrics(&self, executor: &str, tasks: Vec<(u64, TaskMetrics)>) {
        self.bus.post(|| Event::ExecutorMetricsUpdate {
            executor: executor.to_string(),
            tasks,
        });
    }

    /// The application is dead: fail every job now and later with `reason`.
    pub fn abort_all(&self, reason: &str) {
        let _ = self.dag.send(DagEvent::AbortAll {
            reason: reason.to_string(),
        });
    }

    /// An executor died: its running tasks are queued again and the DAG
    /// scheduler forgets the map outputs it held (Spark's executorLost). As
    /// Spark's ExecutorLostFailure, each of those tasks counts a failure when
    /// the loss may be the application's doing (`caused_by_app`: the process
    /// exited or went silent, perhaps because a task aborted or exhausted it),
    /// so a task that kills every executor it runs on fails its job after
    /// `maxFailures` attempts instead of killing executors forever; a loss
    /// known not to be (the Master reports its Worker lost before the
    /// executor's connection closes, which is rarer) counts nothing. As in
    /// Spark, an executor that dies with its Worker usually counts one
    /// failure for each of its tasks.
    pub fn executor_lost(&self, executor: &str, reason: &str, caused_by_app: bool) {
        let mut failed = Vec::new();
        let mut kills = Vec::new();
        {
            let mut st = self.state.lock();
            let st = &mut *st;
            let mut lost = Vec::new();
            for (key, tsm) in st.sets.iter_mut() {
                let tids: Vec<u64> = tsm
                    .running
                    .iter()
                    .filter(|(_, c)| c.executor == executor)
                    .map(|(t, _)| *t)
                    .collect();
                for tid in tids {
                    let Some(copy) = tsm.running.remove(&tid) else {
                        continue;
                    };
                    let i = copy.index;
                    let partition = tsm.set.partitions[i];
                    tsm.copies[i] -= 1;
                    if !tsm.successful[i] && !tsm.zombie {
                        if caused_by_app {
                            tsm.failures[i] += 1;
                        }
                        if tsm.failures[i] >= self.max_failures {
                            tsm.zombie = true;
                            kills.extend(tsm.running.keys().copied());
                            let (stage_id, stage_attempt) = *key;
                            failed.push(DagEvent::TaskSetFailed {
                                stage_id,
                                stage_attempt,
                                partition,
                                attempts: tsm.failures[i],
                                message: format!(
                                    "Lost task {partition}.{} in stage {stage_id}.{stage_attempt} (TID {tid}) ({} executor {executor}): ExecutorLostFailure (executor {executor} exited caused by one of the running tasks) Reason: {reason}",
                                    copy.attempt, copy.host
                                ),
                                backtrace: None,
                            });
                        } else if tsm.copies[i] == 0 {
                            tsm.add_pending(i, true);
                        }
                    }
                    lost.push((tid, *key, partition, tsm.set.pool.clone()));
                }
            }
            for (tid, (stage_id, attempt), partition, pool) in lost {
                st.tid_to_set.remove(&tid);
                if let Some(n) = st.running_per_pool.get_mut(&pool) {
                    *n = n.saturating_sub(1);
                }
                tracing::warn!(
                    "lost task {tid} (partition {partition} of stage {stage_id}.{attempt}) with executor {executor}: {reason}"
                );
                self.bus.post(|| Event::TaskEnd {
                    stage_id,
                    attempt,
                    task_id: tid,
                    partition,
                    succeeded: false,
                    executor: executor.to_string(),
                    metrics: TaskMetrics::default(),
                });
            }
            st.sets.retain(|_, t| !t.is_done());
        }
        let _ = self.dag.send(DagEvent::ExecutorLost {
            executor: executor.to_string(),
        });
        for e in failed {
            let _ = self.dag.send(e);
        }
        if let Some(b) = self.backend.get() {
            for k in kills {
                b.kill_task(k);
            }
        }
        self.revive();
    }

    /// Marks tasks running much longer than the median of their set's finished
    /// tasks as speculatable (Spark's checkSpeculatableTasks). Returns whether any
    /// was found.
    pub fn check_speculatable(&self) -> bool {
        self.check_speculatable_at(Instant::now())
    }

    /// `check_speculatable` at a given time.
    pub fn check_speculatable_at(&self, now: Instant) -> bool {
        let conf = &self.speculation;
        let mut found = false;
        let mut st = self.state.lock();
        for tsm in st.sets.values_mut() {
            let n = tsm.successful.len();
            if tsm.zombie || n == 0 || tsm.durations.is_empty() {
                continue;
            }
            let min_finished = ((conf.quantile * n as f64).floor() as usize).max(1);
            if tsm.num_success < min_finished {
                continue;
            }
            let mut d = tsm.durations.clone();
            d.sort();
            let median = d[d.len() / 2];
            let threshold = median.mul_f64(conf.multiplier).max(conf.min_runtime);
            let mut already: HashSet<usize> = tsm.speculatable.iter().copied().collect();
            for c in tsm.running.values() {
                let i = c.index;
                if !tsm.successful[i]
                    && tsm.copies[i] == 1
                    && now.saturating_duration_since(c.started) > threshold
                    && already.insert(i)
                {
                    tsm.speculatable.push_back(i);
                    found = true;
                }
            }
        }
        drop(st);
        if found {
            self.revive();
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheduler without a backend; the receiver keeps its DAG channel open.
    fn scheduler(wait: Duration) -> (Arc<TaskScheduler>, crossbeam_channel::Receiver<DagEvent>) {
        scheduler_with(wait, 1)
    }

    fn scheduler_with(
        wait: Duration,
        max_failures: usize,
    ) -> (Arc<TaskScheduler>, crossbeam_channel::Receiver<DagEvent>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let ts = TaskScheduler::new(
            tx,
            max_failures,
            SchedulingMode::Fifo,
            HashMap::from([("default".to_string(), PoolConf::default_named("default"))]),
            SpeculationConf {
                enabled: true,
                quantile: 0.75,
                multiplier: 1.5,
                min_runtime: Duration::from_millis(100),
                interval: Duration::from_millis(100),
            },
            wait,
            ListenerBus::start(),
        );
        (ts, rx)
    }

    /// Records the tasks it is asked to kill.
    #[derive(Default)]
    struct Kills(Mutex<Vec<u64>>);
    impl SchedulerBackend for Kills {
        fn revive_offers(&self) {}
        fn kill_task(&self, task_id: u64) {
            self.0.lock().push(task_id);
        }
        fn default_parallelism(&self) -> usize {
            1
        }
        fn stop(&self) {}
    }

    fn set(stage_id: usize, stage_attempt: usize, priority: usize, n: usize) -> TaskSet {
        TaskSet {
            stage_id,
            stage_attempt,
            priority,
            pool: "default".into(),
            partitions: (0..n).collect(),
            locations: vec![Vec::new(); n],
            binary: binary(),
            driver_blocks: Vec::new(),
        }
    }

    fn cores(n: usize) -> Vec<WorkerOffer> {
        vec![WorkerOffer {
            executor_id: "A".into(),
            host: "hA".into(),
            cores: n,
        }]
    }

    fn success() -> TaskEnd {
        TaskEnd::Success(crate::task::TaskOutput::Value(Vec::new()), Vec::new())
    }

    fn failed(msg: &str) -> TaskEnd {
        TaskEnd::Failed(FlintError::User(msg.into()))
    }

    /// (task id, stage, attempt, partition) of each launched task.
    fn launch(
        ts: &TaskScheduler,
        offers: &[WorkerOffer],
        now: Instant,
    ) -> Vec<(u64, usize, usize, usize)> {
        ts.resource_offers_at(offers, now)
            .into_iter()
            .map(|(_, d)| (d.task_id, d.stage_id, d.stage_attempt, d.partition))
            .collect()
    }

    #[test]
    fn a_failing_task_is_retried_until_max_failures_then_the_set_fails() {
        let (ts, dag) = scheduler_with(Duration::ZERO, 2);
        ts.submit_tasks(set(0, 0, 0, 2));
        let now = Instant::now();
        let first = launch(&ts, &cores(2), now);
        assert_eq!(first.len(), 2);
        ts.status_update(first[0].0, failed("boom"), Duration::ZERO);
        ts.status_update(first[1].0, TaskEnd::Killed, Duration::ZERO);
        assert!(
            dag.try_recv().is_err(),
            "one failure of two allowed; a kill is no failure"
        );
        let mut again = launch(&ts, &cores(2), now);
        again.sort_by_key(|t| t.3);
        assert_eq!(
            again.iter().map(|t| t.3).collect::<Vec<_>>(),
            vec![0, 1],
            "both run again: a killed task is re-queued, as in Spark"
        );
        ts.status_update(again[1].0, success(), Duration::ZERO);
        assert!(matches!(
            dag.try_recv(),
            Ok(DagEvent::TaskSucceeded { partition: 1, .. })
        ));
        ts.status_update(again[0].0, failed("boom again"), Duration::ZERO);
        match dag.try_recv() {
            Ok(DagEvent::TaskSetFailed {
                partition,
                attempts,
                message,
                ..
            }) => {
                assert_eq!((partition, attempts), (0, 2));
                assert!(message.contains("boom again"), "{message}");
            }
            _ => panic!("expected TaskSetFailed"),
        }
        assert!(
            launch(&ts, &cores(2), now).is_empty(),
            "a failed set launches nothing"
        );
    }

    #[test]
    fn fifo_runs_the_earlier_job_first_and_zombies_launch_nothing() {
        let (ts, dag) = scheduler(Duration::ZERO);
        ts.submit_tasks(set(5, 0, 1, 1));
        ts.submit_tasks(set(3, 0, 0, 1));
        let now = Instant::now();
        let got = launch(&ts, &cores(1), now);
        assert_eq!((got[0].1, got[0].3), (3, 0), "job 0's stage goes first");
        // A new attempt of stage 5 turns attempt 0 into a zombie.
        ts.submit_tasks(set(5, 1, 1, 1));
        let got = launch(&ts, &cores(4), now);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].1, got[0].2),
            (5, 1),
            "only the new attempt launches"
        );
        // The zombie's finished task set is gone; the live one's success reaches the DAG.
        ts.status_update(got[0].0, success(), Duration::from_millis(3));
        assert!(matches!(
            dag.try_recv(),
            Ok(DagEvent::TaskSucceeded {
                stage_id: 5,
                stage_attempt: 1,
                ..
            })
        ));
        assert!(
            ts.state.lock().sets.keys().all(|k| *k != (5, 0)),
            "idle zombie dropped"
        );
    }

    #[test]
    fn a_fetch_failure_stops_launches_but_lets_running_tasks_finish() {
        let (ts, dag) = scheduler(Duration::ZERO);
        let kills = Arc::new(Kills::default());
        ts.set_backend(kills.clone());
        ts.submit_tasks(set(1, 0, 0, 3));
        let now = Instant::now();
        let running = launch(&ts, &cores(2), now);
        ts.status_update(
            running[0].0,
            TaskEnd::Failed(FlintError::FetchFailed {
                shuffle_id: 0,
                map_id: 2,
                executor: Some("B".into()),
                reason: "gone".into(),
            }),
            Duration::ZERO,
        );
        assert!(matches!(
            dag.try_recv(),
            Ok(DagEvent::FetchFailed { map_id: 2, executor: Some(ref e), .. }) if e == "B"
        ));
        assert!(
            kills.0.lock().is_empty(),
            "the other running task is not killed"
        );
        assert!(
            launch(&ts, &cores(2), now).is_empty(),
            "the third task never starts"
        );
        ts.status_update(running[1].0, success(), Duration::ZERO);
        assert!(
            matches!(
                dag.try_recv(),
                Ok(DagEvent::TaskSucceeded { partition: 1, .. })
            ),
            "a zombie's result still counts"
        );
        assert!(ts.state.lock().sets.is_empty());
    }

    #[test]
    fn stragglers_get_one_speculative_copy_and_the_loser_is_killed() {
        let (ts, dag) = scheduler(Duration::ZERO);
        let kills = Arc::new(Kills::default());
        ts.set_backend(kills.clone());
        ts.submit_tasks(set(0, 0, 0, 4));
        let t0 = Instant::now();
        let tasks = launch(&ts, &cores(4), t0);
        for t in &tasks[..2] {
            ts.status_update(t.0, success(), Duration::from_millis(200));
        }
        // Two of four finished: below the 0.75 quantile, nothing is speculated.
        assert!(!ts.check_speculatable_at(t0 + Duration::from_secs(10)));
        ts.status_update(tasks[2].0, success(), Duration::from_millis(200));
        // Median 200 ms x 1.5 = 300 ms: not yet a straggler at 250 ms.
        assert!(!ts.check_speculatable_at(t0 + Duration::from_millis(250)));
        assert!(ts.check_speculatable_at(t0 + Duration::from_millis(400)));
        assert!(
            !ts.check_speculatable_at(t0 + Duration::from_millis(500)),
            "already marked"
        );
        assert!(
            launch(&ts, &cores(2), t0 + Duration::from_millis(400)).is_empty(),
            "never a copy on the host that already runs the task"
        );
        let elsewhere = vec![WorkerOffer {
            executor_id: "B".into(),
            host: "hB".into(),
            cores: 2,
        }];
        let copy = launch(&ts, &elsewhere, t0 + Duration::from_millis(400));
        assert_eq!(copy.len(), 1, "one copy, of partition 3, on another host");
        assert_eq!(copy[0].3, 3);
        while dag.try_recv().is_ok() {}
        ts.status_update(copy[0].0, success(), Duration::from_millis(10));
        assert_eq!(
            *kills.0.lock(),
            vec![tasks[3].0],
            "the original lost the race"
        );
        assert!(matches!(
            dag.try_recv(),
            Ok(DagEvent::TaskSucceeded { partition: 3, .. })
        ));
        ts.status_update(tasks[3].0, TaskEnd::Killed, Duration::ZERO);
        assert!(dag.try_recv().is_err(), "one success per partition");
        assert!(ts.state.lock().sets.is_empty());
    }

    fn offer(exec: &str, host: &str) -> Vec<WorkerOffer> {
        vec![WorkerOffer {
            executor_id: exec.into(),
            host: host.into(),
            cores: 1,
        }]
    }

    fn binary() -> Arc<Shipped> {
        fn d(_: &[u8]) -> std::result::Result<Box<dyn std::any::Any + Send>, String> {
            Ok(Box::new(()))
        }
        Arc::new(Shipped::new("test", d, Vec::new()))
    }

    #[test]
    fn delay_scheduling_waits_for_locality_then_relaxes() {
        let (ts, _dag) = scheduler(Duration::from_secs(3));
        let on_a = vec![TaskLocation {
            host: "hA".into(),
            executor: Some("A".into()),
        }];
        ts.submit_tasks(TaskSet {
            stage_id: 0,
            stage_attempt: 0,
            priority: 0,
            pool: "default".into(),
            partitions: vec![0, 1],
            locations: vec![on_a.clone(), on_a],
            binary: binary(),
            driver_blocks: Vec::new(),
        });
        let t0 = Instant::now();
        assert!(
            ts.resource_offers_at(&offer("B", "hB"), t0).is_empty(),
            "B is not local"
        );
        let got = ts.resource_offers_at(&offer("A", "hA"), t0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "A");
        assert!(
            ts.resource_offers_at(&offer("B", "hB"), t0 + Duration::from_secs(2))
                .is_empty(),
            "still within the locality wait"
        );
        assert!(
            ts.resource_offers_at(&offer("B", "hB"), t0 + Duration::from_millis(3100))
                .is_empty(),
            "node-local level now, and B is on another host"
        );
        let got = ts.resource_offers_at(&offer("B", "hB"), t0 + Duration::from_millis(6200));
        assert_eq!(
            got.len(),
            1,
            "after waiting at each level, any executor will do"
        );
        assert_eq!(got[0].1.partition, 1);
    }

    #[test]
    fn tasks_without_preferences_launch_anywhere_at_once() {
        let (ts, _dag) = scheduler(Duration::from_secs(3));
        ts.submit_tasks(TaskSet {
            stage_id: 0,
            stage_attempt: 0,
            priority: 0,
            pool: "default".into(),
            partitions: vec![0, 1, 2],
            locations: vec![Vec::new(); 3],
            binary: binary(),
            driver_blocks: Vec::new(),
        });
        let mut offers = offer("B", "hB");
        offers[0].cores = 3;
        assert_eq!(ts.resource_offers_at(&offers, Instant::now()).len(), 3);
    }

    #[test]
    fn offers_are_shuffled_so_one_task_does_not_always_land_on_the_first_executor() {
        let offers: Vec<WorkerOffer> = ["A", "B"]
            .iter()
            .map(|e| WorkerOffer {
                executor_id: (*e).into(),
                host: format!("h{e}"),
                cores: 1,
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        let (ts, _dag) = scheduler(Duration::ZERO);
        for stage in 0..64 {
            ts.submit_tasks(set(stage, 0, stage, 1));
            let got = ts.resource_offers_at(&offers, Instant::now());
            assert_eq!(got.len(), 1);
            seen.insert(got[0].0.clone());
        }
        // Fails with probability 2^-63 if offers are shuffled; always if not.
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn a_task_takes_task_cpus_cores_of_an_offer() {
        let (ts, _dag) = scheduler(Duration::ZERO);
        let ts = ts.with_cpus_per_task(2);
        ts.submit_tasks(set(0, 0, 0, 4));
        assert_eq!(
            launch(&ts, &cores(5), Instant::now()).len(),
            2,
            "5 cores / 2 per task"
        );
        assert!(launch(&ts, &cores(1), Instant::now()).is_empty());
    }

    #[test]
    fn tasks_of_an_executor_whose_worker_died_run_again_without_counting_as_failures() {
        // maxFailures 1: a counted failure would abort the set.
        let (ts, dag) = scheduler_with(Duration::ZERO, 1);
        ts.submit_tasks(set(0, 0, 0, 2));
        let on = |e: &str| {
            vec![WorkerOffer {
                executor_id: e.into(),
                host: format!("h{e}"),
                cores: 1,
            }]
        };
        let now = Instant::now();
        let a = launch(&ts, &on("A"), now);
        let b = launch(&ts, &on("B"), now);
        assert_eq!((a.len(), b.len()), (1, 1));
        // Its Worker died: not the application's doing.
        ts.executor_lost("A", "worker lost", false);
        assert!(
            matches!(dag.try_recv(), Ok(DagEvent::ExecutorLost { ref executor }) if executor == "A"),
            "the DAG scheduler hears of it"
        );
        ts.status_update(b[0].0, success(), Duration::ZERO);
        let again = launch(&ts, &on("B"), now);
        assert_eq!(again.len(), 1, "A's task is pending again");
        assert_eq!(again[0].3, a[0].3);
        ts.status_update(again[0].0, success(), Duration::ZERO);
        let events: Vec<_> = dag.try_iter().collect();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, DagEvent::TaskSetFailed { .. })),
            "a dead Worker is not the task's failure"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, DagEvent::TaskSucceeded { .. }))
                .count(),
            2
        );
        // A late report from the dead executor's task is ignored.
        ts.status_update(a[0].0, failed("late"), Duration::ZERO);
        assert!(dag.try_recv().is_err());
    }

    /// A task that kills each executor it runs on (it aborts the process, or
    /// exhausts its memory) fails its job after maxFailures attempts, as
    /// Spark's ExecutorLostFailure, instead of killing executors forever.
    #[test]
    fn a_task_that_kills_its_executors_fails_after_max_failures() {
        let (ts, dag) = scheduler_with(Duration::ZERO, 3);
        ts.submit_tasks(set(0, 0, 0, 1));
        let now = Instant::now();
        for (n, e) in ["A", "B", "C"].into_iter().enumerate() {
            let offer = vec![WorkerOffer {
                executor_id: e.into(),
                host: format!("h{e}"),
                cores: 1,
            }];
            let got = launch(&ts, &offer, now);
            assert_eq!(got.len(), 1, "attempt {n} launched on {e}");
            ts.executor_lost(e, "its connection to the driver closed", true);
        }
        let failed: Vec<_> = dag
            .try_iter()
            .filter_map(|e| match e {
                DagEvent::TaskSetFailed {
                    attempts, message, ..
                } => Some((attempts, message)),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, 3);
        assert!(
            failed[0]
                .1
                .contains("executor C exited caused by one of the running tasks")
                && failed[0].1.contains("its connection to the driver closed"),
            "{}",
            failed[0].1
        );
        let offer = vec![WorkerOffer {
            executor_id: "D".into(),
            host: "hD".into(),
            cores: 1,
        }];
        assert!(launch(&ts, &offer, now).is_empty(), "nothing more runs");
    }
}
