//! The DAG scheduler (Spark's DAGScheduler): an event loop on its own thread that
//! turns a job into stages cut at shuffle dependencies, submits missing parent
//! stages first, reuses shuffle outputs that already exist (skipped stages),
//! resubmits map stages whose output was lost, and fails or cancels jobs. It never
//! sees records or user code: stages carry shipped bytes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::task_scheduler::{TaskLocation, TaskScheduling, TaskSet};
use crate::error::{FlintError, Result};
use crate::listener::{Event, ListenerBus};
use crate::rdd::{Dependency, RddBase, ShuffleDepBase};
use crate::shared_vars::AccumRegistry;
use crate::ship::Shipped;
use crate::shuffle::MapOutputTracker;
use crate::storage::BlockId;
use crate::task::TaskOutput;

/// Default of `flint.stage.maxConsecutiveAttempts` (Spark's
/// `spark.stage.maxConsecutiveAttempts`): failed attempts of a stage in a row,
/// without a success between them, before its jobs are aborted.
pub const DEFAULT_MAX_CONSECUTIVE_ATTEMPTS: usize = 4;

pub type JobReply = Sender<Result<Vec<Vec<u8>>>>;

pub enum DagEvent {
    JobSubmitted {
        job_id: usize,
        rdd: Arc<dyn RddBase>,
        binary: Arc<Shipped>,
        partitions: Vec<usize>,
        group: Option<String>,
        pool: String,
        reply: JobReply,
    },
    TaskSucceeded {
        stage_id: usize,
        stage_attempt: usize,
        partition: usize,
        output: TaskOutput,
        accum_updates: Vec<(usize, Vec<u8>)>,
    },
    FetchFailed {
        stage_id: usize,
        stage_attempt: usize,
        shuffle_id: usize,
        map_id: usize,
        executor: Option<String>,
        reason: String,
    },
    TaskSetFailed {
        stage_id: usize,
        stage_attempt: usize,
        partition: usize,
        attempts: usize,
        message: String,
        backtrace: Option<String>,
    },
    CancelJob {
        job_id: usize,
        reason: String,
    },
    CancelJobGroup {
        group: String,
    },
    /// The application is dead (its cluster manager removed it): every job,
    /// running or later, fails with `reason` (Spark stops its context then).
    AbortAll {
        reason: String,
    },
    /// An executor died: the map outputs it held are gone.
    ExecutorLost {
        executor: String,
    },
    Stop,
}

enum StageKind {
    ShuffleMap {
        dep: Arc<dyn ShuffleDepBase>,
        binary: Option<Arc<Shipped>>,
    },
    Result {
        job_id: usize,
        binary: Arc<Shipped>,
        partitions: Vec<usize>,
        /// The job's output slot of each partition (Spark's `ResultTask.outputId`):
        /// a resubmitted attempt runs only the missing partitions, so a task's
        /// index in its task set says nothing about where its result belongs.
        output_of: HashMap<usize, usize>,
    },
}

struct Stage {
    rdd: Arc<dyn RddBase>,
    kind: StageKind,
    jobs: HashSet<usize>,
    first_job: usize,
    next_attempt: usize,
    /// Attempts that failed since the stage last succeeded (Spark's
    /// `failedAttemptIds`): a success forgets them.
    failed_attempts: HashSet<usize>,
    /// Partitions of the latest attempt not yet done (Spark's
    /// `pendingPartitions`): when it empties, a map stage whose outputs were
    /// lost meanwhile (another stage's fetch failure forgot them) runs again.
    pending: HashSet<usize>,
    pool: String,
}

struct Job {
    results: Vec<Option<Vec<u8>>>,
    finished: usize,
    /// Bytes of results received (bounded by `flint.driver.maxResultSize`).
    result_bytes: u64,
    group: Option<String>,
    reply: JobReply,
}

pub struct DagScheduler {
    ts: Arc<dyn TaskScheduling>,
    max_consecutive_attempts: usize,
    /// `flint.driver.maxResultSize` in bytes (0 = unlimited).
    max_result_size: u64,
    /// Set by `AbortAll`: why no job can run any more.
    dead: Option<String>,
    tracker: Arc<MapOutputTracker>,
    accums: Arc<AccumRegistry>,
    bus: ListenerBus,
    locate: BlockLocator,
    next_stage_id: usize,
    stages: HashMap<usize, Stage>,
    shuffle_to_stage: HashMap<usize, usize>,
    waiting: HashSet<usize>,
    running: HashSet<usize>,
    failed: HashSet<usize>,
    jobs: HashMap<usize, Job>,
}

impl DagScheduler {
    pub(crate) fn new(
        ts: Arc<dyn TaskScheduling>,
        max_consecutive_attempts: usize,
        tracker: Arc<MapOutputTracker>,
        accums: Arc<AccumRegistry>,
        bus: ListenerBus,
        locate: BlockLocator,
    ) -> Self {
        DagScheduler {
            ts,
            max_consecutive_attempts: max_consecutive_attempts.max(1),
            max_result_size: 1 << 30,
            dead: None,
            tracker,
            accums,
            bus,
            locate,
            next_stage_id: 0,
            stages: HashMap::new(),
            shuffle_to_stage: HashMap::new(),
            waiting: HashSet::new(),
            running: HashSet::new(),
            failed: HashSet::new(),
            jobs: HashMap::new(),
        }
    }

    /// The event loop; returns on `Stop` or when every sender is gone.
    pub fn run(mut self, rx: Receiver<DagEvent>) {
        while let Ok(ev) = rx.recv() {
            match ev {
                DagEvent::Stop => break,
                ev => self.handle(ev),
            }
        }
        for (id, job) in self.jobs.drain() {
            let _ = job.reply.send(Err(FlintError::JobCancelled {
                job_id: id,
                reason: "the context was stopped".into(),
            }));
        }
    }

    fn handle(&mut self, ev: DagEvent) {
        match ev {
            DagEvent::JobSubmitted { job_id, reply, .. } if self.dead.is_some() => {
                let reason = self.dead.clone().unwrap_or_default();
                let _ = reply.send(Err(FlintError::JobCancelled { job_id, reason }));
            }
            DagEvent::JobSubmitted {
                job_id,
                rdd,
                binary,
                partitions,
                group,
                pool,
                reply,
            } => self.job_submitted(job_id, rdd, binary, partitions, group, pool, reply),
            DagEvent::AbortAll { reason } => {
                tracing::error!("aborting every job: {reason}");
                let ids: Vec<usize> = self.jobs.keys().copied().collect();
                for job_id in ids {
                    self.fail_job(
                        job_id,
                        FlintError::JobCancelled {
                            job_id,
                            reason: reason.clone(),
                        },
                    );
                }
                self.dead = Some(reason);
            }
            DagEvent::TaskSucceeded {
                stage_id,
                stage_attempt,
                partition,
                output,
                accum_updates,
            } => self.task_succeeded(stage_id, stage_attempt, partition, output, accum_updates),
            DagEvent::FetchFailed {
                stage_id,
                stage_attempt,
                shuffle_id,
                map_id,
                executor,
                reason,
            } => self.fetch_failed(
                stage_id,
                stage_attempt,
                shuffle_id,
                map_id,
                executor,
                reason,
            ),
            DagEvent::TaskSetFailed {
                stage_id,
                stage_attempt,
                partition,
                attempts,
                message,
                backtrace,
            } => {
                let jobs: Vec<usize> = self
                    .stages
                    .get(&stage_id)
                    .map(|s| s.jobs.iter().copied().collect())
                    .unwrap_or_default();
                for job_id in jobs {
                    self.fail_job(
                        job_id,
                        FlintError::JobAborted {
                            job_id,
                            stage_id,
                            stage_attempt,
                            partition,
                            attempts,
                            message: message.clone(),
                            backtrace: backtrace.clone(),
                        },
                    );
                }
            }
            DagEvent::CancelJob { job_id, reason } => {
                self.fail_job(job_id, FlintError::JobCancelled { job_id, reason })
            }
            DagEvent::CancelJobGroup { group } => {
                let ids: Vec<usize> = self
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.group.as_deref() == Some(group.as_str()))
                    .map(|(id, _)| *id)
                    .collect();
                for job_id in ids {
                    self.fail_job(
                        job_id,
                        FlintError::JobCancelled {
                            job_id,
                            reason: format!("part of cancelled job group {group}"),
                        },
                    );
                }
            }
            DagEvent::ExecutorLost { executor } => {
                // Spark without an external shuffle service: the executor's
                // shuffle files died with it. Running map stages rerun what
                // they lost when their tasks are done; waiting stages rerun
                // lost parents when they are next considered; reducers that
                // read them report FetchFailed.
                let n = self.tracker.remove_outputs_on_executor(&executor);
                tracing::warn!("executor {executor} lost; {n} map outputs forgotten");
                self.resubmit_waiting_parents();
            }
            DagEvent::Stop => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn job_submitted(
        &mut self,
        job_id: usize,
        rdd: Arc<dyn RddBase>,
        binary: Arc<Shipped>,
        partitions: Vec<usize>,
        group: Option<String>,
        pool: String,
        reply: JobReply,
    ) {
        if partitions.is_empty() {
            // No stage runs, but listeners still see the job (Spark does the same).
            self.bus.post(|| Event::JobStart {
                job_id,
                final_stage: None,
            });
            self.bus.post(|| Event::JobEnd {
                job_id,
                succeeded: true,
            });
            let _ = reply.send(Ok(Vec::new()));
            return;
        }
        // Create (or find) the parent shuffle map stages before the final stage.
        if let Err(e) = self.parent_stages(&rdd, job_id, &pool) {
            let _ = reply.send(Err(e));
            return;
        }
        let stage_id = self.new_stage(
            rdd,
            StageKind::Result {
                job_id,
                binary,
                output_of: partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (*p, i))
                    .collect(),
                partitions: partitions.clone(),
            },
            job_id,
            &pool,
        );
        tracing::info!(
            "Got job {job_id} with {} output partitions; final stage {stage_id}",
            partitions.len()
        );
        self.jobs.insert(
            job_id,
            Job {
                results: vec![None; partitions.len()],
                finished: 0,
                result_bytes: 0,
                group,
                reply,
            },
        );
        self.mark_job_on_ancestors(stage_id, job_id);
        self.bus.post(|| Event::JobStart {
            job_id,
            final_stage: Some(stage_id),
        });
        self.submit_stage(stage_id);
    }

    fn new_stage(
        &mut self,
        rdd: Arc<dyn RddBase>,
        kind: StageKind,
        job_id: usize,
        pool: &str,
    ) -> usize {
        let id = self.next_stage_id;
        self.next_stage_id += 1;
        let mut jobs = HashSet::new();
        jobs.insert(job_id);
        self.stages.insert(
            id,
            Stage {
                rdd,
                kind,
                jobs,
                first_job: job_id,
                next_attempt: 0,
                failed_attempts: HashSet::new(),
                pending: HashSet::new(),
                pool: pool.to_string(),
            },
        );
        id
    }

    /// Shuffle dependencies reachable from `rdd` through narrow dependencies only.
    fn shuffle_deps(rdd: &Arc<dyn RddBase>) -> Vec<Arc<dyn ShuffleDepBase>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![rdd.clone()];
        while let Some(r) = stack.pop() {
            if !seen.insert(r.id()) {
                continue;
            }
            for d in r.dependencies() {
                match d {
                    Dependency::Narrow(p) => stack.push(p),
                    Dependency::Shuffle(s) => out.push(s),
                }
            }
        }
        out
    }

    fn parent_stages(
        &mut self,
        rdd: &Arc<dyn RddBase>,
        job_id: usize,
        pool: &str,
    ) -> Result<Vec<usize>> {
        Self::shuffle_deps(rdd)
            .into_iter()
            .map(|d| self.shuffle_map_stage(d, job_id, pool))
            .collect()
    }

    fn shuffle_map_stage(
        &mut self,
        dep: Arc<dyn ShuffleDepBase>,
        job_id: usize,
        pool: &str,
    ) -> Result<usize> {
        if let Some(&s) = self.shuffle_to_stage.get(&dep.shuffle_id()) {
            return Ok(s);
        }
        let map_rdd = dep.rdd();
        self.parent_stages(&map_rdd, job_id, pool)?;
        self.tracker
            .register_shuffle(dep.shuffle_id(), map_rdd.num_partitions());
        let sid = dep.shuffle_id();
        let stage = self.new_stage(
            map_rdd,
            StageKind::ShuffleMap { dep, binary: None },
            job_id,
            pool,
        );
        self.shuffle_to_stage.insert(sid, stage);
        Ok(stage)
    }

    fn mark_job_on_ancestors(&mut self, stage_id: usize, job_id: usize) {
        let mut stack = vec![stage_id];
        while let Some(s) = stack.pop() {
            let Some(stage) = self.stages.get_mut(&s) else {
                continue;
            };
            stage.jobs.insert(job_id);
            let rdd = stage.rdd.clone();
            for d in Self::shuffle_deps(&rdd) {
                if let Some(&p) = self.shuffle_to_stage.get(&d.shuffle_id()) {
                    stack.push(p);
                }
            }
        }
    }

    fn missing_parents(&mut self, stage_id: usize) -> Vec<usize> {
        let Some(stage) = self.stages.get(&stage_id) else {
            return Vec::new();
        };
        let rdd = stage.rdd.clone();
        let job = stage.first_job;
        let pool = stage.pool.clone();
        let mut missing = Vec::new();
        for d in Self::shuffle_deps(&rdd) {
            if !self.tracker.is_available(d.shuffle_id())
                && let Ok(s) = self.shuffle_map_stage(d, job, &pool)
            {
                missing.push(s);
            }
        }
        missing
    }

    fn submit_stage(&mut self, stage_id: usize) {
        if self.waiting.contains(&stage_id)
            || self.running.contains(&stage_id)
            || self.failed.contains(&stage_id)
        {
            return;
        }
        let missing = self.missing_parents(stage_id);
        if missing.is_empty() {
            self.submit_missing_tasks(stage_id);
        } else {
            for p in missing {
                self.submit_stage(p);
            }
            self.waiting.insert(stage_id);
        }
    }

    fn submit_missing_tasks(&mut self, stage_id: usize) {
        let Some(stage) = self.stages.get_mut(&stage_id) else {
            return;
        };
        let (partitions, binary) = match &mut stage.kind {
            StageKind::ShuffleMap { dep, binary } => {
                let parts = self
                    .tracker
                    .missing(dep.shuffle_id(), stage.rdd.num_partitions());
                let b = match binary {
                    Some(b) => b.clone(),
                    None => match dep.map_task_binary() {
                        Ok(b) => {
                            *binary = Some(b.clone());
                            b
                        }
                        Err(e) => {
                            let jobs: Vec<usize> = stage.jobs.iter().copied().collect();
                            let msg = e.to_string();
                            for j in jobs {
                                self.fail_job(
                                    j,
                                    FlintError::Codec {
                                        what: "task",
                                        reason: msg.clone(),
                                    },
                                );
                            }
                            return;
                        }
                    },
                };
                (parts, b)
            }
            StageKind::Result {
                job_id,
                binary,
                partitions,
                ..
            } => {
                let job = &self.jobs[job_id];
                let parts = partitions
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| job.results[*i].is_none())
                    .map(|(_, p)| *p)
                    .collect();
                (parts, binary.clone())
            }
        };
        let attempt = stage.next_attempt;
        stage.next_attempt += 1;
        stage.pending = partitions.iter().copied().collect();
        if partitions.is_empty() {
            self.stage_finished(stage_id);
            return;
        }
        tracing::info!(
            "Submitting {} missing tasks from stage {stage_id} ({}[{}])",
            partitions.len(),
            stage.rdd.name(),
            stage.rdd.id()
        );
        let rdd = stage.rdd.clone();
        // Narrow parents per RDD, looked up once per stage rather than per task.
        let mut parents = HashMap::new();
        let locations = partitions
            .iter()
            .map(|&p| self.preferred_locations(&rdd, p, 0, &mut parents))
            .collect();
        let driver_blocks = partitions
            .iter()
            .map(|&p| {
                let mut out = Vec::new();
                let mut seen = std::collections::HashSet::new();
                driver_blocks_of(&rdd, p, 0, &mut parents, &mut seen, &mut out);
                out
            })
            .collect();
        let Some(stage) = self.stages.get(&stage_id) else {
            return;
        };
        let set = TaskSet {
            stage_id,
            stage_attempt: attempt,
            priority: stage.first_job,
            pool: stage.pool.clone(),
            partitions,
            locations,
            binary,
            driver_blocks,
        };
        self.running.insert(stage_id);
        self.bus.post(|| Event::StageSubmitted {
            stage_id,
            attempt,
            num_tasks: set.partitions.len(),
            name: stage.rdd.name(),
            pool: set.pool.clone(),
        });
        self.ts.submit_tasks(set);
    }

    fn stage_finished(&mut self, stage_id: usize) {
        if let Some(stage) = self.stages.get_mut(&stage_id) {
            stage.failed_attempts.clear();
        }
        if self.running.remove(&stage_id) {
            self.post_stage_completed(stage_id, None);
        }
        self.resubmit_waiting_parents();
    }

    /// Submits waiting stages whose parents are all available, and reruns
    /// parents that finished once but lost outputs since.
    fn resubmit_waiting_parents(&mut self) {
        let ready: Vec<usize> = {
            let mut waiting: Vec<usize> = self.waiting.iter().copied().collect();
            waiting.sort();
            waiting
        };
        for s in ready {
            let missing = self.missing_parents(s);
            if missing.is_empty() {
                self.waiting.remove(&s);
                self.submit_stage(s);
            } else {
                // A parent that finished before may have lost its outputs
                // since (a fetch failure elsewhere forgot them): run it again
                // rather than wait for it forever.
                for p in missing {
                    if !self.running.contains(&p) && !self.waiting.contains(&p) {
                        self.submit_stage(p);
                    }
                }
            }
        }
    }

    fn task_succeeded(
        &mut self,
        stage_id: usize,
        stage_attempt: usize,
        partition: usize,
        output: TaskOutput,
        accum_updates: Vec<(usize, Vec<u8>)>,
    ) {
        let Some(stage) = self.stages.get(&stage_id) else {
            return;
        };
        match (&stage.kind, output) {
            (
                StageKind::Result {
                    job_id, output_of, ..
                },
                TaskOutput::Value(bytes),
            ) => {
                let job_id = *job_id;
                let Some(&slot) = output_of.get(&partition) else {
                    tracing::error!(
                        "stage {stage_id} got a result for partition {partition}, which its job did not ask for; ignored"
                    );
                    return;
                };
                let Some(job) = self.jobs.get_mut(&job_id) else {
                    return;
                };
                if job.results[slot].is_none() {
                    job.result_bytes += bytes.len() as u64;
                    if self.max_result_size > 0 && job.result_bytes > self.max_result_size {
                        let (n, total, max) =
                            (job.finished + 1, job.result_bytes, self.max_result_size);
                        let message = format!(
                            "Total size of serialized results of {n} tasks ({}) is bigger than flint.driver.maxResultSize ({}); collect less (reduce, take, or write the output to files) or raise the limit",
                            human(total),
                            human(max)
                        );
                        self.fail_job(
                            job_id,
                            FlintError::JobAborted {
                                job_id,
                                stage_id,
                                stage_attempt,
                                partition,
                                attempts: 1,
                                message,
                                backtrace: None,
                            },
                        );
                        return;
                    }
                    // Result-stage updates count once per partition.
                    self.accums.apply(&accum_updates);
                    job.results[slot] = Some(bytes);
                    job.finished += 1;
                }
                if job.finished == job.results.len() {
                    let job = self.jobs.remove(&job_id).expect("job present");
                    let results = job
                        .results
                        .into_iter()
                        .map(|r| r.unwrap_or_default())
                        .collect();
                    if self.running.remove(&stage_id) {
                        self.post_stage_completed(stage_id, None);
                    }
                    self.bus.post(|| Event::JobEnd {
                        job_id,
                        succeeded: true,
                    });
                    // Drop the job's stages (and the RDDs and shuffle
                    // dependencies they hold) before the caller hears back, so
                    // what it drops next is really gone (the cleaner sees it).
                    self.cleanup_job(job_id);
                    let _ = job.reply.send(Ok(results));
                }
            }
            (StageKind::ShuffleMap { dep, .. }, TaskOutput::Map(status)) => {
                let sid = dep.shuffle_id();
                self.accums.apply(&accum_updates);
                self.tracker.register_map_output(sid, partition, status);
                let Some(stage) = self.stages.get_mut(&stage_id) else {
                    return;
                };
                stage.pending.remove(&partition);
                if !self.running.contains(&stage_id) || !stage.pending.is_empty() {
                    return;
                }
                if self.tracker.missing(sid, 0).is_empty() {
                    self.stage_finished(stage_id);
                } else {
                    // Every task of this attempt is done, yet outputs are
                    // missing: they were lost meanwhile. Run those again.
                    tracing::info!(
                        "stage {stage_id} finished its tasks but lost some outputs meanwhile; resubmitting them"
                    );
                    self.running.remove(&stage_id);
                    self.post_stage_completed(stage_id, Some("outputs lost meanwhile".into()));
                    self.submit_stage(stage_id);
                }
            }
            _ => tracing::error!("stage {stage_id} got a task output of the wrong kind; ignored"),
        }
    }

    fn fetch_failed(
        &mut self,
        stage_id: usize,
        attempt: usize,
        shuffle_id: usize,
        map_id: usize,
        executor: Option<String>,
        reason: String,
    ) {
        let Some(stage) = self.stages.get_mut(&stage_id) else {
            return;
        };
        if attempt + 1 != stage.next_attempt || !self.running.contains(&stage_id) {
            // A late report from an older attempt; the stage is already being
            // redone. Forget the output it names only if it is still the one
            // that failed (a recomputed copy elsewhere is fine).
            if let Some(exec) = &executor {
                self.tracker
                    .unregister_map_output_on(shuffle_id, map_id, exec);
            }
            return;
        }
        tracing::warn!(
            "stage {stage_id} lost shuffle {shuffle_id} output of map {map_id}: {reason}; resubmitting"
        );
        stage.failed_attempts.insert(attempt);
        let too_many = stage.failed_attempts.len() >= self.max_consecutive_attempts;
        let max_attempts = self.max_consecutive_attempts;
        let jobs: Vec<usize> = stage.jobs.iter().copied().collect();
        self.running.remove(&stage_id);
        // The attempt's other running tasks finish on their own (Spark does not
        // kill them); the task scheduler launches no more of them.
        self.post_stage_completed(stage_id, Some(format!("fetch failed: {reason}")));
        // The executor that wrote the lost output has probably lost all its
        // shuffle files: forget them all so one resubmission recomputes them.
        if let Some(exec) = &executor {
            let n = self.tracker.remove_outputs_on_executor(exec);
            tracing::warn!("unregistered {n} map outputs of executor {exec} after a fetch failure");
        }
        if too_many {
            for j in jobs {
                self.fail_job(
                    j,
                    FlintError::JobAborted {
                        job_id: j,
                        stage_id,
                        stage_attempt: attempt,
                        partition: 0,
                        attempts: max_attempts,
                        message: format!("stage has failed the maximum allowable number of times: {max_attempts} (flint.stage.maxConsecutiveAttempts). Most recent failure reason: {reason}"),
                        backtrace: None,
                    },
                );
            }
            return;
        }
        if let Some(&map_stage) = self.shuffle_to_stage.get(&shuffle_id) {
            self.running.remove(&map_stage);
            self.waiting.remove(&map_stage);
        }
        self.submit_stage(stage_id);
    }

    fn fail_job(&mut self, job_id: usize, err: FlintError) {
        let Some(job) = self.jobs.remove(&job_id) else {
            return;
        };
        tracing::info!("job {job_id} failed: {err}");
        self.bus.post(|| Event::JobEnd {
            job_id,
            succeeded: false,
        });
        self.cleanup_job(job_id);
        let _ = job.reply.send(Err(err));
    }

    /// Drops stages no remaining job needs, cancelling their running tasks.
    fn cleanup_job(&mut self, job_id: usize) {
        let mut gone = Vec::new();
        for (id, st) in self.stages.iter_mut() {
            if st.jobs.remove(&job_id) && st.jobs.is_empty() {
                gone.push(*id);
            }
        }
        for id in gone {
            if self.running.remove(&id) {
                self.post_stage_completed(id, Some("its job ended".into()));
                self.ts.cancel_stage(id);
            }
            self.waiting.remove(&id);
            self.failed.remove(&id);
            if let Some(st) = self.stages.remove(&id)
                && let StageKind::ShuffleMap { dep, .. } = &st.kind
            {
                self.shuffle_to_stage.remove(&dep.shuffle_id());
            }
        }
    }
}

impl DagScheduler {
    /// Sets `flint.driver.maxResultSize` (0 = unlimited).
    pub(crate) fn with_max_result_size(mut self, bytes: u64) -> Self {
        self.max_result_size = bytes;
        self
    }
}

/// A byte count as Spark prints it (`1024.0 MiB`).
fn human(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

/// Where a cached block is (executor and host), as the block manager master knows.
pub type BlockLocator = Arc<dyn Fn(BlockId) -> Vec<TaskLocation> + Send + Sync>;

/// The driver-held blocks partition `split` of `rdd` reads, through its
/// narrow parents (within the stage), each (RDD, partition) visited once so
/// a lineage that reuses an RDD (`x.zip(x)`) is not walked exponentially.
fn driver_blocks_of(
    rdd: &Arc<dyn RddBase>,
    split: usize,
    depth: usize,
    parents: &mut HashMap<usize, Vec<Arc<dyn RddBase>>>,
    seen: &mut std::collections::HashSet<(usize, usize)>,
    out: &mut Vec<BlockId>,
) {
    // Deeper than this, a task fetches what it needs (the stack stays small).
    if depth > 256 || !seen.insert((rdd.id(), split)) {
        return;
    }
    out.extend(rdd.driver_blocks(split));
    let narrow = parents
        .entry(rdd.id())
        .or_insert_with(|| narrow_deps(rdd))
        .clone();
    for (dep, p) in rdd.narrow_parents(split) {
        if let Some(parent) = narrow.get(dep) {
            driver_blocks_of(parent, p, depth + 1, parents, seen, out);
        }
    }
}

fn narrow_deps(rdd: &Arc<dyn RddBase>) -> Vec<Arc<dyn RddBase>> {
    rdd.dependencies()
        .into_iter()
        .filter_map(|d| match d {
            Dependency::Narrow(p) => Some(p),
            Dependency::Shuffle(_) => None,
        })
        .collect()
}

impl DagScheduler {
    /// Spark's getPreferredLocs: a cached partition's executors, else the RDD's own
    /// preferred hosts, else those of the first narrow parent that has any.
    fn preferred_locations(
        &self,
        rdd: &Arc<dyn RddBase>,
        split: usize,
        depth: usize,
        parents: &mut HashMap<usize, Vec<Arc<dyn RddBase>>>,
    ) -> Vec<TaskLocation> {
        let cached = (self.locate)(BlockId::Rdd {
            rdd: rdd.id(),
            split,
        });
        if !cached.is_empty() {
            return cached;
        }
        let hosts = rdd.preferred_hosts(split);
        if !hosts.is_empty() {
            return hosts
                .into_iter()
                .map(|host| TaskLocation {
                    host,
                    executor: None,
                })
                .collect();
        }
        if depth > 64 {
            return Vec::new();
        }
        let narrow = parents
            .entry(rdd.id())
            .or_insert_with(|| narrow_deps(rdd))
            .clone();
        if narrow.is_empty() {
            return Vec::new();
        }
        for (dep, p) in rdd.narrow_parents(split) {
            if let Some(parent) = narrow.get(dep) {
                let locs = self.preferred_locations(parent, p, depth + 1, parents);
                if !locs.is_empty() {
                    return locs;
                }
            }
        }
        Vec::new()
    }

    fn post_stage_completed(&self, stage_id: usize, failure: Option<String>) {
        let attempt = self
            .stages
            .get(&stage_id)
            .map(|s| s.next_attempt.saturating_sub(1))
            .unwrap_or(0);
        self.bus.post(|| Event::StageCompleted {
            stage_id,
            attempt,
            failure,
        });
    }
}

#[cfg(test)]
#[path = "dag_tests.rs"]
mod tests;
