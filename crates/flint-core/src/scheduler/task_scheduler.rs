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
    pub binary: Arc<Shipped>,
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
}

struct TaskSetManager {
    set: TaskSet,
    pending: VecDeque<usize>,
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
        TaskSetManager {
            pending: (0..n).collect(),
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
        }
    }

    fn next_index(&mut self) -> Option<(usize, bool)> {
        while let Some(i) = self.pending.pop_front() {
            if !self.successful[i] && self.copies[i] == 0 {
                return Some((i, false));
            }
        }
        while let Some(i) = self.speculatable.pop_front() {
            if !self.successful[i] && self.copies[i] == 1 {
                return Some((i, true));
            }
        }
        None
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
}

pub struct TaskScheduler {
    state: Mutex<State>,
    dag: Sender<DagEvent>,
    backend: OnceLock<Arc<dyn SchedulerBackend>>,
    max_failures: usize,
    mode: SchedulingMode,
    speculation: SpeculationConf,
    bus: ListenerBus,
}

impl TaskScheduler {
    pub fn new(
        dag: Sender<DagEvent>,
        max_failures: usize,
        mode: SchedulingMode,
        pools: HashMap<String, PoolConf>,
        speculation: SpeculationConf,
        bus: ListenerBus,
    ) -> Arc<Self> {
        Arc::new(TaskScheduler {
            state: Mutex::new(State {
                sets: HashMap::new(),
                tid_to_set: HashMap::new(),
                next_tid: 0,
                pools,
                running_per_pool: HashMap::new(),
            }),
            dag,
            backend: OnceLock::new(),
            max_failures,
            mode,
            speculation,
            bus,
        })
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
        let mut st = self.state.lock();
        let mut out = Vec::new();
        let mut free: Vec<usize> = offers.iter().map(|o| o.cores).collect();
        loop {
            let mut launched = false;
            for (oi, offer) in offers.iter().enumerate() {
                if free[oi] == 0 {
                    continue;
                }
                let order = self.ordered_sets(&st);
                for key in order {
                    let tid = st.next_tid;
                    let Some(tsm) = st.sets.get_mut(&key) else {
                        continue;
                    };
                    let Some((index, speculative)) = tsm.next_index() else {
                        continue;
                    };
                    let attempt = tsm.attempts[index];
                    tsm.attempts[index] += 1;
                    tsm.copies[index] += 1;
                    tsm.running.insert(
                        tid,
                        RunningCopy {
                            index,
                            started: Instant::now(),
                            speculative,
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
                    };
                    let pool = tsm.set.pool.clone();
                    if speculative {
                        tracing::info!(
                            "launching speculative task {tid} for partition {} of stage {}",
                            desc.partition,
                            desc.stage_id
                        );
                    }
                    self.bus.post(Event::TaskStart {
                        stage_id: desc.stage_id,
                        attempt: desc.stage_attempt,
                        task_id: tid,
                        partition: desc.partition,
                    });
                    st.next_tid += 1;
                    st.tid_to_set.insert(tid, key);
                    *st.running_per_pool.entry(pool).or_insert(0) += 1;
                    out.push((offer.executor_id.clone(), desc));
                    free[oi] -= 1;
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
            self.bus.post(Event::TaskEnd {
                stage_id,
                attempt: stage_attempt,
                task_id: tid,
                partition,
                succeeded: matches!(end, TaskEnd::Success(..)),
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
                            index: i,
                            output,
                            accum_updates,
                        });
                    }
                }
                TaskEnd::Failed(FlintError::FetchFailed {
                    shuffle_id,
                    map_id,
                    reason,
                }) => {
                    tsm.zombie = true;
                    kills.extend(tsm.running.keys().copied());
                    events.push(DagEvent::FetchFailed {
                        stage_id,
                        stage_attempt,
                        shuffle_id,
                        map_id,
                        reason,
                    });
                }
                TaskEnd::Failed(e) => {
                    if !tsm.successful[i] && !tsm.zombie {
                        tsm.failures[i] += 1;
                        tracing::warn!(
                            "lost task {}.{} in stage {stage_id}.{stage_attempt} (TID {tid}): {e}",
                            partition,
                            copy.index
                        );
                        if tsm.failures[i] >= self.max_failures {
                            tsm.zombie = true;
                            kills.extend(tsm.running.keys().copied());
                            events.push(DagEvent::TaskSetFailed {
                                stage_id,
                                stage_attempt,
                                partition,
                                attempts: tsm.failures[i],
                                message: e.to_string(),
                            });
                        } else if tsm.copies[i] == 0 {
                            tsm.pending.push_front(i);
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

    /// Marks tasks running much longer than the median of their set's finished
    /// tasks as speculatable (Spark's checkSpeculatableTasks). Returns whether any
    /// was found.
    pub fn check_speculatable(&self) -> bool {
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
                    && c.started.elapsed() > threshold
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

    pub fn has_active_sets(&self) -> bool {
        !self.state.lock().sets.is_empty()
    }
}
