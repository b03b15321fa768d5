//! Scheduler behaviour seen through listener events: stages, skipped stages,
//! cancellation, speculation and FAIR pools.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flint::listener::{Event, Listener};
use flint::prelude::*;
use parking_lot::Mutex;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Listener for Recorder {
    fn on_event(&mut self, e: &Event) {
        self.0.lock().push(e.clone());
    }
}

impl Recorder {
    /// Waits (bounded) until `pred` holds over the recorded events.
    fn wait_for(&self, what: &str, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let evs = self.0.lock().clone();
            if pred(&evs) {
                return evs;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events: {evs:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn job_ended(evs: &[Event], job: usize) -> bool {
    evs.iter()
        .any(|e| matches!(e, Event::JobEnd { job_id, .. } if *job_id == job))
}

#[test]
fn stages_are_cut_at_shuffles_and_reused() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let rec = Recorder::default();
    sc.add_listener(Box::new(rec.clone()));
    let counts = sc
        .parallelize(
            (0..100).map(|i| (i % 7, 1u32)).collect::<Vec<(i32, u32)>>(),
            4,
        )
        .reduce_by_key_with(3, Fn!(|a: u32, b: u32| a + b));
    counts.count().unwrap();
    let evs = rec.wait_for("job 0 end", |e| job_ended(e, 0));
    let submitted: Vec<usize> = evs
        .iter()
        .filter_map(|e| match e {
            Event::StageSubmitted { num_tasks, .. } => Some(*num_tasks),
            _ => None,
        })
        .collect();
    assert_eq!(
        submitted,
        vec![4, 3],
        "map stage of 4 tasks, then result stage of 3"
    );
    let ok_tasks = evs
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::TaskEnd {
                    succeeded: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(ok_tasks, 7);
    rec.0.lock().clear();
    counts.collect().unwrap();
    let evs = rec.wait_for("job 1 end", |e| job_ended(e, 1));
    let submitted = evs
        .iter()
        .filter(|e| matches!(e, Event::StageSubmitted { .. }))
        .count();
    assert_eq!(submitted, 1, "the map stage is skipped: its output exists");
}

/// Runs a small job on another thread and fails unless it finishes within a
/// generous deadline: it needs the task slots, so it only finishes if the
/// cancelled job's tasks were really stopped.
fn a_job_gets_the_slots_back(sc: &FlintContext) {
    let sc = sc.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sc.parallelize(vec![1, 2, 3, 4], 2).count());
    });
    let n = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the cancelled job's tasks still hold the task slots");
    assert_eq!(n.unwrap(), 4);
}

/// Records per partition of the endless jobs below: they run until killed.
const ENDLESS: i64 = 1 << 60;

static STARTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn cancelling_a_job_group_stops_its_tasks() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let sc2 = sc.clone();
    let job = std::thread::spawn(move || {
        sc2.set_job_group(Some("slow"));
        // Partitions that never end on their own: only the kill flag stops them.
        sc2.range(0, 4 * ENDLESS, 1, 4)
            .unwrap()
            .map(Fn!(|x: i64| {
                if x % ENDLESS == 0 {
                    STARTED.fetch_add(1, Ordering::SeqCst);
                }
                x
            }))
            .count()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while STARTED.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "tasks never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    sc.cancel_job_group("slow");
    let res = job.join().unwrap();
    let err = res.unwrap_err().to_string();
    assert!(err.contains("cancelled") && err.contains("slow"), "{err}");
    // The context still works and the slots were freed.
    a_job_gets_the_slots_back(&sc);
}

static SLOW_CLAIMED: AtomicBool = AtomicBool::new(false);

fn slow_first_attempt(idx: usize, it: BoxIter<i32>) -> BoxIter<i32> {
    // The first attempt of partition 3 is a straggler: 100 us per record, far
    // slower than its siblings, but it finishes.
    if idx == 3 && !SLOW_CLAIMED.swap(true, Ordering::SeqCst) {
        Box::new(it.inspect(|_| std::thread::sleep(Duration::from_micros(100))))
    } else {
        it
    }
}

/// Speculation copies a straggler only onto another host (Spark's rule: a copy
/// on the same host would share its trouble), so local mode, one host, never
/// speculates; the task scheduler's tests cover copies on other hosts.
#[test]
fn local_mode_never_speculates_on_its_single_host() {
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[3]")
            .set("flint.speculation", "true")
            .set("flint.speculation.quantile", "0.75")
            .set("flint.speculation.interval", "10ms")
            .set("flint.speculation.minTaskRuntime", "10ms"),
    )
    .unwrap();
    let rec = Recorder::default();
    sc.add_listener(Box::new(rec.clone()));
    let v = sc
        .parallelize((0..20_000).collect::<Vec<i32>>(), 4)
        .map_partitions_with_index(Fn!(|idx: usize, it: BoxIter<i32>| {
            slow_first_attempt(idx, it)
        }))
        .collect()
        .unwrap();
    assert_eq!(v, (0..20_000).collect::<Vec<_>>());
    let evs = rec.wait_for("job end", |e| job_ended(e, 0));
    let starts_p3 = evs
        .iter()
        .filter(|e| matches!(e, Event::TaskStart { partition: 3, .. }))
        .count();
    assert_eq!(starts_p3, 1, "no speculative copy on the only host");
}

#[test]
fn fair_pool_with_weight_two_gets_twice_the_slots() {
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("fair.xml");
    std::fs::write(
        &xml,
        r#"<allocations>
  <pool name="heavy"><schedulingMode>FIFO</schedulingMode><weight>2</weight><minShare>0</minShare></pool>
  <pool name="light"><schedulingMode>FIFO</schedulingMode><weight>1</weight><minShare>0</minShare></pool>
</allocations>"#,
    )
    .unwrap();
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[3]")
            .set("flint.scheduler.mode", "FAIR")
            .set("flint.scheduler.allocation.file", xml.to_str().unwrap()),
    )
    .unwrap();
    let rec = Recorder::default();
    sc.add_listener(Box::new(rec.clone()));
    let run = |pool: &'static str| {
        let sc = sc.clone();
        std::thread::spawn(move || {
            sc.set_scheduler_pool(pool);
            sc.parallelize((0..90).collect::<Vec<u64>>(), 90)
                .map(Fn!(|x: u64| {
                    std::thread::sleep(Duration::from_millis(15));
                    x
                }))
                .count()
                .unwrap()
        })
    };
    let a = run("heavy");
    let b = run("light");
    assert_eq!(a.join().unwrap(), 90);
    assert_eq!(b.join().unwrap(), 90);
    let evs = rec.wait_for("both jobs", |e| job_ended(e, 0) && job_ended(e, 1));
    // Count task starts per pool while both stages are active (between the second
    // submission and the first completion).
    let mut pool_of_stage = std::collections::HashMap::new();
    let (mut heavy, mut light) = (0usize, 0usize);
    for e in &evs {
        match e {
            Event::StageSubmitted { stage_id, pool, .. } => {
                pool_of_stage.insert(*stage_id, pool.clone());
            }
            Event::StageCompleted { .. } => break,
            Event::TaskStart { stage_id, .. } if pool_of_stage.len() == 2 => {
                match pool_of_stage[stage_id].as_str() {
                    "heavy" => heavy += 1,
                    _ => light += 1,
                }
            }
            _ => {}
        }
    }
    assert!(
        light > 0,
        "both pools ran tasks: heavy {heavy}, light {light}"
    );
    let ratio = heavy as f64 / light as f64;
    assert!(
        (1.5..=2.8).contains(&ratio),
        "expected about 2:1, got heavy {heavy}, light {light} ({ratio:.2})"
    );
}

static MAP_STARTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn cancelling_stops_running_shuffle_map_tasks() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let sc2 = sc.clone();
    let job = std::thread::spawn(move || {
        sc2.set_job_group(Some("slow-shuffle"));
        sc2.range(0, 2 * ENDLESS, 1, 2)
            .unwrap()
            .map(Fn!(|x: i64| {
                if x % ENDLESS == 0 {
                    MAP_STARTED.fetch_add(1, Ordering::SeqCst);
                }
                (x % 10, 1u64)
            }))
            .reduce_by_key(Fn!(|a: u64, b: u64| a + b))
            .count()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while MAP_STARTED.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "map tasks never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    sc.cancel_job_group("slow-shuffle");
    let err = job.join().unwrap().unwrap_err().to_string();
    assert!(err.contains("cancelled"), "{err}");
    // Both task slots are free again.
    a_job_gets_the_slots_back(&sc);
}

#[test]
fn co_partitioned_joins_read_their_inputs_without_shuffling_again() {
    use flint::shuffle::Partitioner;
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let rec = Recorder::default();
    sc.add_listener(Box::new(rec.clone()));
    // PageRank's shape: links grouped once, ranks derived from them by
    // map_values, joined every iteration.
    let links = sc
        .parallelize((0..1000u32).map(|i| (i % 50, i)).collect::<Vec<_>>(), 4)
        .group_by_key_with(4);
    assert_eq!(links.partitioner(), Some(Partitioner::Hash(4)));
    let mut ranks = links.map_values(Fn!(|_vs: Vec<u32>| 1.0f64));
    assert_eq!(
        ranks.partitioner(),
        links.partitioner(),
        "map_values keeps it"
    );
    assert_eq!(
        links
            .values()
            .map(Fn!(|v: Vec<u32>| (v.len(), 1)))
            .partitioner(),
        None
    );
    for _ in 0..3 {
        let contribs =
            links
                .join(&ranks)
                .values()
                .flat_map(Fn!(|(urls, rank): (Vec<u32>, f64)| {
                    let n = urls.len() as f64;
                    urls.into_iter()
                        .map(move |u| (u % 50, rank / n))
                        .collect::<Vec<_>>()
                }));
        ranks = contribs
            .reduce_by_key_with(4, Fn!(|a: f64, b: f64| a + b))
            .map_values(Fn!(|s: f64| 0.15 + 0.85 * s));
    }
    assert_eq!(ranks.count().unwrap(), 50);
    let evs = rec.wait_for("job end", |e| job_ended(e, 0));
    let stages = evs
        .iter()
        .filter(|e| matches!(e, Event::StageSubmitted { .. }))
        .count();
    // links' shuffle, one reduce_by_key shuffle per iteration, the result stage:
    // no join shuffles its inputs (that would add two stages per iteration).
    assert_eq!(stages, 1 + 3 + 1, "{evs:?}");
    // A side partitioned differently is shuffled, the other is not.
    let other = sc
        .parallelize((0..50u32).map(|k| (k, k)).collect::<Vec<_>>(), 3)
        .partition_by(3);
    let joined = links.join(&other);
    assert_eq!(joined.partitioner(), Some(Partitioner::Hash(4)));
    assert_eq!(joined.count().unwrap(), 50);
}

static PERSIST_STARTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn cancelling_stops_tasks_that_are_filling_a_cached_block() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let sc2 = sc.clone();
    let job = std::thread::spawn(move || {
        sc2.set_job_group(Some("slow-persist"));
        sc2.range(0, 2 * ENDLESS, 1, 2)
            .unwrap()
            .map(Fn!(|x: i64| {
                if x % ENDLESS == 0 {
                    PERSIST_STARTED.fetch_add(1, Ordering::SeqCst);
                }
                x
            }))
            .persist(StorageLevel::DISK_ONLY)
            .count()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while PERSIST_STARTED.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "tasks never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    sc.cancel_job_group("slow-persist");
    let err = job.join().unwrap().unwrap_err().to_string();
    assert!(err.contains("cancelled"), "{err}");
    a_job_gets_the_slots_back(&sc);
    assert_eq!(
        sc.env().blocks.stats().disk_blocks,
        0,
        "no partial block kept"
    );
}

static PIPE_STARTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn cancelling_kills_a_silent_piped_command() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let sc2 = sc.clone();
    let job = std::thread::spawn(move || {
        sc2.set_job_group(Some("silent-pipe"));
        sc2.parallelize(vec![1, 2], 2)
            .map(Fn!(|x: i32| {
                PIPE_STARTED.fetch_add(1, Ordering::SeqCst);
                x
            }))
            .pipe(&["sleep", "1000"])
            .unwrap()
            .count()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while PIPE_STARTED.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "tasks never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    sc.cancel_job_group("silent-pipe");
    let err = job.join().unwrap().unwrap_err().to_string();
    assert!(err.contains("cancelled"), "{err}");
    // The tasks were blocked reading the silent children: only killing the
    // children frees the slots.
    a_job_gets_the_slots_back(&sc);
}

#[test]
fn task_end_events_carry_metrics() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let rec = Recorder::default();
    sc.add_listener(Box::new(rec.clone()));
    let n = sc
        .parallelize((0..1000u32).collect::<Vec<_>>(), 4)
        .map(Fn!(|x: u32| (x % 10, 1u64)))
        .group_by_key_with(3)
        .collect()
        .unwrap()
        .len();
    assert_eq!(n, 10);
    let evs = rec.wait_for("job 0 end", |e| job_ended(e, 0));
    let ms: Vec<flint::metrics::TaskMetrics> = evs
        .iter()
        .filter_map(|e| match e {
            Event::TaskEnd {
                succeeded: true,
                metrics,
                executor,
                ..
            } => {
                assert_eq!(executor, "driver");
                Some(*metrics)
            }
            _ => None,
        })
        .collect();
    assert_eq!(ms.len(), 7);
    let written: u64 = ms.iter().map(|m| m.shuffle_write_records).sum();
    let read: u64 = ms.iter().map(|m| m.shuffle_read_records).sum();
    assert_eq!((written, read), (1000, 1000), "{ms:?}");
    let wb: u64 = ms.iter().map(|m| m.shuffle_write_bytes).sum();
    let rb: u64 = ms.iter().map(|m| m.shuffle_read_bytes).sum();
    assert!(wb > 0 && wb == rb, "{ms:?}");
    assert_eq!(
        ms.iter().map(|m| m.shuffle_remote_bytes_read).sum::<u64>(),
        0
    );
    assert_eq!(ms.iter().filter(|m| m.result_size > 0).count(), 3);
}
