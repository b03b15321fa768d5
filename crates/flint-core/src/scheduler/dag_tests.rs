//! The DAG scheduler driven by scripted events, in the spirit of Spark's
//! DAGSchedulerSuite: a fake task scheduler records what is submitted, the test
//! plays the completions (successes, fetch failures, late results from zombie
//! attempts, cancellation) and checks the task sets and the job's result. No
//! threads run tasks and nothing sleeps.

use std::path::PathBuf;

use parking_lot::Mutex;

use super::*;
use crate::listener::Listener;
use crate::shuffle::MapStatus;

/// Records submitted task sets and cancelled stages.
#[derive(Default)]
struct FakeTaskScheduler {
    sets: Mutex<Vec<(usize, usize, Vec<usize>)>>,
    cancelled: Mutex<Vec<usize>>,
}

impl TaskScheduling for FakeTaskScheduler {
    fn submit_tasks(&self, set: TaskSet) {
        self.sets
            .lock()
            .push((set.stage_id, set.stage_attempt, set.partitions));
    }
    fn cancel_stage(&self, stage_id: usize) {
        self.cancelled.lock().push(stage_id);
    }
}

struct FakeRdd {
    id: usize,
    parts: usize,
    deps: Vec<Dependency>,
}

impl RddBase for FakeRdd {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        format!("fake{}", self.id)
    }
    fn num_partitions(&self) -> usize {
        self.parts
    }
    fn dependencies(&self) -> Vec<Dependency> {
        self.deps.clone()
    }
}

struct FakeShuffleDep {
    shuffle_id: usize,
    rdd: Arc<dyn RddBase>,
    reduces: usize,
}

impl ShuffleDepBase for FakeShuffleDep {
    fn shuffle_id(&self) -> usize {
        self.shuffle_id
    }
    fn rdd(&self) -> Arc<dyn RddBase> {
        self.rdd.clone()
    }
    fn num_reduce_partitions(&self) -> usize {
        self.reduces
    }
    fn map_task_binary(&self) -> Result<Arc<Shipped>> {
        Ok(binary())
    }
}

fn binary() -> Arc<Shipped> {
    fn d(_: &[u8]) -> std::result::Result<Box<dyn std::any::Any + Send>, String> {
        Ok(Box::new(()))
    }
    Arc::new(Shipped::new("test", d, Vec::new()))
}

fn rdd(id: usize, parts: usize, deps: Vec<Dependency>) -> Arc<dyn RddBase> {
    Arc::new(FakeRdd { id, parts, deps })
}

/// `parent` shuffled into `reduces` partitions as shuffle `shuffle_id`.
fn shuffled(
    id: usize,
    shuffle_id: usize,
    parent: Arc<dyn RddBase>,
    reduces: usize,
) -> Arc<dyn RddBase> {
    let dep = Arc::new(FakeShuffleDep {
        shuffle_id,
        rdd: parent,
        reduces,
    });
    rdd(id, reduces, vec![Dependency::Shuffle(dep)])
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);
impl Listener for Recorder {
    fn on_event(&mut self, e: &Event) {
        self.0.lock().push(e.clone());
    }
}

struct Harness {
    dag: DagScheduler,
    ts: Arc<FakeTaskScheduler>,
    tracker: Arc<MapOutputTracker>,
    bus: ListenerBus,
    events: Recorder,
    replies: HashMap<usize, Receiver<Result<Vec<Vec<u8>>>>>,
}

impl Harness {
    fn new(max_attempts: usize) -> Self {
        let ts = Arc::new(FakeTaskScheduler::default());
        let tracker = Arc::new(MapOutputTracker::default());
        let bus = ListenerBus::start();
        let events = Recorder::default();
        bus.add_listener(Box::new(events.clone()));
        let dag = DagScheduler::new(
            ts.clone(),
            max_attempts,
            tracker.clone(),
            Arc::new(AccumRegistry::default()),
            bus.clone(),
            Arc::new(|_| Vec::new()),
        );
        Harness {
            dag,
            ts,
            tracker,
            bus,
            events,
            replies: HashMap::new(),
        }
    }

    fn submit(&mut self, job_id: usize, rdd: Arc<dyn RddBase>, partitions: Vec<usize>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.dag.handle(DagEvent::JobSubmitted {
            job_id,
            rdd,
            binary: binary(),
            partitions,
            group: None,
            pool: "default".into(),
            reply: tx,
        });
        self.replies.insert(job_id, rx);
    }

    /// The task sets submitted so far, as (stage, attempt, partitions).
    fn sets(&self) -> Vec<(usize, usize, Vec<usize>)> {
        self.ts.sets.lock().clone()
    }

    fn last_set(&self) -> (usize, usize, Vec<usize>) {
        self.sets()
            .last()
            .cloned()
            .expect("a task set was submitted")
    }

    fn map_done(&mut self, stage: usize, attempt: usize, map: usize, exec: &str, reduces: usize) {
        self.dag.handle(DagEvent::TaskSucceeded {
            stage_id: stage,
            stage_attempt: attempt,
            partition: map,
            output: TaskOutput::Map(MapStatus {
                executor_id: exec.into(),
                data_file: PathBuf::from(format!("/nonexistent/{exec}/{stage}_{map}")),
                segment_lengths: vec![1; reduces],
            }),
            accum_updates: Vec::new(),
        });
    }

    fn result_done(&mut self, stage: usize, attempt: usize, partition: usize) {
        self.dag.handle(DagEvent::TaskSucceeded {
            stage_id: stage,
            stage_attempt: attempt,
            partition,
            output: TaskOutput::Value(vec![partition as u8]),
            accum_updates: Vec::new(),
        });
    }

    /// A task of `stage` could not read map `map_id`'s output on `exec`.
    fn fetch_failed(
        &mut self,
        stage: usize,
        attempt: usize,
        shuffle_id: usize,
        map_id: usize,
        exec: &str,
    ) {
        self.dag.handle(DagEvent::FetchFailed {
            stage_id: stage,
            stage_attempt: attempt,
            shuffle_id,
            map_id,
            executor: Some(exec.into()),
            reason: "scripted".into(),
        });
    }

    /// The job's reply if it has finished (never blocks).
    fn reply(&self, job_id: usize) -> Option<Result<Vec<Vec<u8>>>> {
        self.replies[&job_id].try_recv().ok()
    }

    /// Every event posted so far (stops the bus so delivery is complete).
    fn events(self) -> Vec<Event> {
        self.bus.stop();
        self.events.0.lock().clone()
    }
}

/// A map stage of `maps` tasks shuffled into `reduces` result partitions: stage 0
/// is the map stage (shuffle 0), stage 1 the result stage.
fn one_shuffle(h: &mut Harness, maps: usize, reduces: usize) {
    let final_rdd = shuffled(1, 0, rdd(0, maps, Vec::new()), reduces);
    h.submit(0, final_rdd, (0..reduces).collect());
}

#[test]
fn a_two_stage_job_runs_the_map_stage_then_the_result_stage() {
    let mut h = Harness::new(4);
    one_shuffle(&mut h, 2, 3);
    assert_eq!(h.sets(), vec![(0, 0, vec![0, 1])]);
    h.map_done(0, 0, 0, "e1", 3);
    assert_eq!(
        h.sets().len(),
        1,
        "the result stage waits for every map output"
    );
    h.map_done(0, 0, 1, "e2", 3);
    assert_eq!(h.last_set(), (1, 0, vec![0, 1, 2]));
    for p in [2, 0, 1] {
        h.result_done(1, 0, p);
    }
    assert_eq!(
        h.reply(0).unwrap().unwrap(),
        vec![vec![0], vec![1], vec![2]]
    );
}

#[test]
fn a_resubmitted_result_stage_puts_results_in_their_partitions_slots() {
    // Partition 0 finished before the fetch failure; the rerun holds only
    // partitions 1 and 2, at task-set indices 0 and 1. Results must still land in
    // slots 1 and 2, or the job never completes.
    let mut h = Harness::new(4);
    one_shuffle(&mut h, 2, 3);
    h.map_done(0, 0, 0, "e1", 3);
    h.map_done(0, 0, 1, "e2", 3);
    h.result_done(1, 0, 0);
    h.fetch_failed(1, 0, 0, 1, "e2");
    assert!(
        !h.ts.cancelled.lock().contains(&1),
        "as in Spark, the failed attempt's running tasks may finish"
    );
    // Only e2's output was lost: the map stage reruns just map 1.
    assert_eq!(h.last_set(), (0, 1, vec![1]));
    h.map_done(0, 1, 1, "e3", 3);
    assert_eq!(h.last_set(), (1, 1, vec![1, 2]));
    assert!(h.reply(0).is_none());
    h.result_done(1, 1, 2);
    h.result_done(1, 1, 1);
    assert_eq!(
        h.reply(0).unwrap().unwrap(),
        vec![vec![0], vec![1], vec![2]]
    );
}

#[test]
fn a_late_result_from_a_zombie_attempt_counts_once() {
    let mut h = Harness::new(4);
    one_shuffle(&mut h, 1, 3);
    h.map_done(0, 0, 0, "e1", 3);
    h.fetch_failed(1, 0, 0, 0, "e1");
    h.map_done(0, 1, 0, "e2", 3);
    assert_eq!(h.last_set(), (1, 1, vec![0, 1, 2]));
    // Attempt 0's copy of partition 2 was still running and finishes late.
    h.result_done(1, 0, 2);
    h.result_done(1, 1, 2);
    h.result_done(1, 1, 0);
    assert!(h.reply(0).is_none());
    h.result_done(1, 1, 1);
    assert_eq!(
        h.reply(0).unwrap().unwrap(),
        vec![vec![0], vec![1], vec![2]]
    );
}

#[test]
fn a_late_fetch_failure_from_an_older_attempt_does_not_resubmit_again() {
    let mut h = Harness::new(4);
    one_shuffle(&mut h, 1, 2);
    h.map_done(0, 0, 0, "e1", 2);
    h.fetch_failed(1, 0, 0, 0, "e1");
    h.map_done(0, 1, 0, "e2", 2);
    let before = h.sets().len();
    // A second task of attempt 0 reports its fetch failure (of e1's output) late.
    h.fetch_failed(1, 0, 0, 0, "e1");
    assert_eq!(h.sets().len(), before, "no new attempt for a stale report");
    assert!(
        h.tracker.is_available(0),
        "the recomputed output on e2 is kept"
    );
    h.result_done(1, 1, 0);
    h.result_done(1, 1, 1);
    assert!(h.reply(0).unwrap().is_ok());
}

/// Three stages: shuffle 0 (stage 0) feeds map stage 1 (shuffle 1), which feeds
/// the result stage 2.
fn two_shuffles(h: &mut Harness) {
    let a = rdd(0, 1, Vec::new());
    let b = shuffled(1, 0, a, 1);
    let c = shuffled(2, 1, b, 1);
    h.submit(0, c, vec![0]);
}

#[test]
fn stage_attempts_are_counted_in_a_row_and_forgotten_on_success() {
    let mut h = Harness::new(2);
    two_shuffles(&mut h);
    h.map_done(0, 0, 0, "e1", 1);
    assert_eq!(h.last_set(), (1, 0, vec![0]));
    // Stage 1 fails once, then succeeds: its failure count starts over.
    h.fetch_failed(1, 0, 0, 0, "e1");
    h.map_done(0, 1, 0, "e2", 1);
    assert_eq!(h.last_set(), (1, 1, vec![0]));
    h.map_done(1, 1, 0, "e2", 1);
    assert_eq!(h.last_set(), (2, 0, vec![0]));
    // The result stage loses stage 1's output; stage 1 reruns and fails again.
    h.fetch_failed(2, 0, 1, 0, "e2");
    let (s, a, _) = h.last_set();
    assert_eq!(s, 0, "e2 held both shuffles' outputs: stage 0 reruns first");
    h.map_done(0, a, 0, "e3", 1);
    let (s, a, _) = h.last_set();
    assert_eq!(s, 1);
    h.fetch_failed(1, a, 0, 0, "e3");
    assert!(
        h.reply(0).is_none(),
        "one failure since the last success is below the limit of 2"
    );
    let (s, a0, _) = h.last_set();
    assert_eq!(s, 0);
    h.map_done(0, a0, 0, "e4", 1);
    let (s, a, _) = h.last_set();
    assert_eq!(s, 1);
    // A second failure in a row reaches the limit.
    h.fetch_failed(1, a, 0, 0, "e4");
    let err = h.reply(0).unwrap().unwrap_err().to_string();
    assert!(
        err.contains("maximum allowable number of times: 2")
            && err.contains("flint.stage.maxConsecutiveAttempts"),
        "{err}"
    );
}

#[test]
fn cancelling_a_job_during_a_resubmission_cancels_its_stages() {
    let mut h = Harness::new(4);
    one_shuffle(&mut h, 2, 2);
    h.map_done(0, 0, 0, "e1", 2);
    h.map_done(0, 0, 1, "e1", 2);
    h.fetch_failed(1, 0, 0, 0, "e1");
    assert_eq!(h.last_set(), (0, 1, vec![0, 1]));
    h.dag.handle(DagEvent::CancelJob {
        job_id: 0,
        reason: "by test".into(),
    });
    let err = h.reply(0).unwrap().unwrap_err().to_string();
    assert!(
        err.contains("cancelled") && err.contains("by test"),
        "{err}"
    );
    assert!(
        h.ts.cancelled.lock().contains(&0),
        "the rerunning map stage is cancelled"
    );
    // Completions arriving after the cancellation are ignored.
    h.map_done(0, 1, 0, "e2", 2);
    h.map_done(0, 1, 1, "e2", 2);
    assert_eq!(
        h.sets().len(),
        3,
        "nothing more is submitted for a cancelled job"
    );
    assert!(h.dag.jobs.is_empty() && h.dag.stages.is_empty());
}

#[test]
fn a_job_with_no_partitions_still_starts_and_ends() {
    let mut h = Harness::new(4);
    h.submit(7, rdd(0, 0, Vec::new()), Vec::new());
    assert_eq!(h.reply(7).unwrap().unwrap(), Vec::<Vec<u8>>::new());
    assert!(h.sets().is_empty());
    let evs = h.events();
    assert!(
        matches!(
            evs.as_slice(),
            [
                Event::JobStart {
                    job_id: 7,
                    final_stage: None
                },
                Event::JobEnd {
                    job_id: 7,
                    succeeded: true
                }
            ]
        ),
        "{evs:?}"
    );
}

#[test]
fn a_second_job_reuses_finished_shuffle_output() {
    let mut h = Harness::new(4);
    let final_rdd = shuffled(1, 0, rdd(0, 2, Vec::new()), 2);
    h.submit(0, final_rdd.clone(), vec![0, 1]);
    h.map_done(0, 0, 0, "e1", 2);
    h.map_done(0, 0, 1, "e1", 2);
    h.result_done(1, 0, 0);
    h.result_done(1, 0, 1);
    assert!(h.reply(0).unwrap().is_ok());
    assert!(h.tracker.is_available(0));
    // Only partition 1 this time: the map stage is skipped.
    h.submit(1, final_rdd, vec![1]);
    let (stage, _, parts) = h.last_set();
    assert_ne!(stage, 0);
    assert_eq!(parts, vec![1]);
    h.result_done(stage, 0, 1);
    assert_eq!(h.reply(1).unwrap().unwrap(), vec![vec![1]]);
}

#[test]
fn a_running_map_stage_that_lost_outputs_meanwhile_reruns_them() {
    // Another job's fetch failure forgets every output of executor e1 while
    // this map stage still runs: when its last task ends, the lost partition
    // runs again instead of the stage waiting forever.
    let mut h = Harness::new(4);
    one_shuffle(&mut h, 2, 2);
    h.map_done(0, 0, 0, "e1", 2);
    h.tracker.remove_outputs_on_executor("e1");
    h.map_done(0, 0, 1, "e2", 2);
    assert_eq!(h.last_set(), (0, 1, vec![0]));
    h.map_done(0, 1, 0, "e3", 2);
    assert_eq!(h.last_set(), (1, 0, vec![0, 1]));
    h.result_done(1, 0, 0);
    h.result_done(1, 0, 1);
    assert!(h.reply(0).unwrap().is_ok());
}

#[test]
fn a_waiting_stage_whose_finished_parent_lost_its_outputs_reruns_the_parent() {
    // The result stage reads two shuffles. Shuffle 0 finishes, then loses its
    // outputs; when shuffle 1 finishes, shuffle 0 must run again.
    let mut h = Harness::new(4);
    let dep = |shuffle_id, id| {
        Dependency::Shuffle(Arc::new(FakeShuffleDep {
            shuffle_id,
            rdd: rdd(id, 1, Vec::new()),
            reduces: 1,
        }))
    };
    let final_rdd = rdd(9, 1, vec![dep(0, 0), dep(1, 1)]);
    h.submit(0, final_rdd, vec![0]);
    let stages: Vec<usize> = h.sets().iter().map(|s| s.0).collect();
    assert_eq!(stages.len(), 2, "both map stages run first: {stages:?}");
    let s0 = h.dag.shuffle_to_stage[&0];
    let s1 = h.dag.shuffle_to_stage[&1];
    h.map_done(s0, 0, 0, "e1", 1);
    h.tracker.remove_outputs_on_executor("e1");
    h.map_done(s1, 0, 0, "e2", 1);
    assert_eq!(
        h.last_set(),
        (s0, 1, vec![0]),
        "the wiped parent runs again"
    );
    h.map_done(s0, 1, 0, "e2", 1);
    let (result_stage, _, parts) = h.last_set();
    assert_eq!(parts, vec![0]);
    h.result_done(result_stage, 0, 0);
    assert!(h.reply(0).unwrap().is_ok());
}

#[test]
fn a_lost_executor_takes_its_map_outputs_and_finished_parents_rerun() {
    // The result stage waits on shuffles 0 and 1. Shuffle 0 finished on e1;
    // e1 dies while shuffle 1 still runs: shuffle 0 reruns at once.
    let mut h = Harness::new(4);
    let dep = |shuffle_id, id| {
        Dependency::Shuffle(Arc::new(FakeShuffleDep {
            shuffle_id,
            rdd: rdd(id, 2, Vec::new()),
            reduces: 1,
        }))
    };
    h.submit(0, rdd(9, 1, vec![dep(0, 0), dep(1, 1)]), vec![0]);
    let s0 = h.dag.shuffle_to_stage[&0];
    let s1 = h.dag.shuffle_to_stage[&1];
    h.map_done(s0, 0, 0, "e1", 1);
    h.map_done(s0, 0, 1, "e2", 1);
    h.map_done(s1, 0, 0, "e2", 1);
    h.dag.handle(DagEvent::ExecutorLost {
        executor: "e1".into(),
    });
    assert_eq!(h.tracker.missing(0, 2), vec![0], "e1's output is gone");
    assert_eq!(h.last_set(), (s0, 1, vec![0]), "and recomputed right away");
    h.map_done(s0, 1, 0, "e3", 1);
    h.map_done(s1, 0, 1, "e3", 1);
    let (result_stage, _, parts) = h.last_set();
    assert_eq!(parts, vec![0]);
    h.result_done(result_stage, 0, 0);
    assert!(h.reply(0).unwrap().is_ok());
}

#[test]
fn abort_all_fails_running_jobs_and_every_later_one() {
    let mut h = Harness::new(4);
    one_shuffle(&mut h, 2, 2);
    assert!(h.reply(0).is_none(), "the job is running");
    h.dag.handle(DagEvent::AbortAll {
        reason: "Master removed our application: KILLED".into(),
    });
    let err = h.reply(0).unwrap().unwrap_err().to_string();
    assert!(err.contains("Master removed our application"), "{err}");
    assert!(
        h.ts.cancelled.lock().contains(&0),
        "its stages are cancelled"
    );
    let sets = h.sets().len();
    h.submit(1, rdd(9, 2, Vec::new()), vec![0, 1]);
    let err = h.reply(1).unwrap().unwrap_err().to_string();
    assert!(err.contains("Master removed our application"), "{err}");
    assert_eq!(h.sets().len(), sets, "a job after the abort runs nothing");
}
