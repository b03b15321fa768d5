//! Jobs on a cluster: executors are this test binary started in executor mode
//! by Workers of an in-process `local-cluster`; a shuffle crosses processes
//! (map outputs fetched from other executors). Its own `main` because the
//! executors are this very executable.

mod harness;
mod op_model;

use flint::prelude::*;

fn words(line: String) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

/// The word counts, and the processes that ran the map tasks.
fn wordcount(master: &str, input: &str) -> (Vec<(String, u64)>, Vec<u32>) {
    let sc = FlintContext::new(
        FlintConf::new()
            .app_name("cluster-mode-test")
            .master(master)
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let lines = sc.text_file(input, 4).unwrap();
    let mut pids = lines
        .map(Fn!(|_l: String| std::process::id()))
        .distinct()
        .collect()
        .unwrap();
    pids.sort();
    let mut counts = lines
        .flat_map(Fn!(|l: String| words(l)))
        .map(Fn!(|w: String| (w, 1u64)))
        .reduce_by_key_with(3, Fn!(|a: u64, b: u64| a + b))
        .collect()
        .unwrap();
    counts.sort();
    // Parallelized data and a broadcast: small slices travel inside their
    // tasks, the broadcast is fetched from the driver.
    let served = flint::cluster_metrics::slices_served();
    let table = sc.broadcast((0..10_000u64).map(|x| x * 2).collect::<Vec<_>>());
    let mut sums = sc
        .parallelize((0..10_000u64).collect::<Vec<_>>(), 5)
        .map(Fn!(move |x: u64| (x % 3, table.value()[x as usize] / 2)))
        .reduce_by_key_with(2, Fn!(|a: u64, b: u64| a + b))
        .collect()
        .unwrap();
    sums.sort();
    let want: Vec<(u64, u64)> = (0..3)
        .map(|k| (k, (0..10_000u64).filter(|x| x % 3 == k).sum()))
        .collect();
    assert_eq!(sums, want, "parallelize and broadcast on {master}");
    assert_eq!(
        flint::cluster_metrics::slices_served(),
        served,
        "small slices came with their tasks, not fetched"
    );
    // Slices over the 1 MiB a task carries are fetched from the driver.
    let big: u64 = sc
        .parallelize((0..1_000_000u64).collect::<Vec<_>>(), 2)
        .reduce(Fn!(|a: u64, b: u64| a + b))
        .unwrap();
    assert_eq!(big, 1_000_000 * 999_999 / 2);
    if master.starts_with("local-cluster") {
        assert_eq!(
            flint::cluster_metrics::slices_served(),
            served + 2,
            "the two large slices were fetched"
        );
    }
    // A destroyed broadcast fails the job with a message, no hang.
    let gone = sc.broadcast(7u64);
    sc.destroy_broadcast(&gone);
    let err = sc
        .parallelize(vec![1u64], 1)
        .map(Fn!(move |x: u64| x + *gone.value()))
        .collect()
        .unwrap_err()
        .to_string();
    assert!(err.contains("after it was destroyed"), "{err}");
    // So does one the executors hold copies of: destroying it removes them.
    let used = sc.broadcast(5u64);
    let read = || {
        let u = used.clone();
        sc.parallelize(vec![1u64; 4], 4)
            .map(Fn!(move |x: u64| x + *u.value()))
            .collect()
    };
    assert_eq!(read().unwrap(), vec![6; 4]);
    sc.destroy_broadcast(&used);
    let err = read().unwrap_err().to_string();
    assert!(err.contains("after it was destroyed"), "{err}");
    sc.stop();
    (counts, pids)
}

/// An executor dies in the middle of the reduce stage: the task that kills
/// it exits its process on the first attempt. The driver notices the lost
/// connection, re-queues the task without counting a failure, forgets the
/// dead executor's map outputs, and the job still computes the right answer
/// on the executors that are left (or the one the Master starts instead).
fn a_dead_executor_does_not_lose_the_job(input: &str, marker: String) {
    let sc = FlintContext::new(
        FlintConf::new()
            .app_name("cluster-executor-loss")
            .master("local-cluster[2,1,512]")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let mut counts = sc
        .text_file(input, 4)
        .unwrap()
        .flat_map(Fn!(|l: String| words(l)))
        .map(Fn!(|w: String| (w, 1u64)))
        .reduce_by_key_with(3, Fn!(|a: u64, b: u64| a + b))
        .map(Fn!(move |wc: (String, u64)| {
            // create_new: exactly one task attempt, cluster-wide, dies.
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .is_ok()
            {
                std::process::exit(3);
            }
            wc
        }))
        .collect()
        .unwrap();
    counts.sort();
    sc.stop();
    assert_eq!(
        counts.iter().find(|(w, _)| w == "common").map(|x| x.1),
        Some(20_000)
    );
    assert_eq!(counts.len(), 98);
    println!("cluster_mode: the job survived a dead executor");
}

/// Expected word counts of the test input: (distinct words, count of "common").
fn check_counts(counts: &[(String, u64)], what: &str) {
    assert_eq!(
        counts.iter().find(|(w, _)| w == "common").map(|x| x.1),
        Some(20_000),
        "{what}"
    );
    assert_eq!(counts.len(), 98, "{what}");
}

fn cluster_conf(name: &str) -> FlintConf {
    FlintConf::new()
        .app_name(name)
        .master("local-cluster[2,1,512]")
        .set("flint.ui.showConsoleProgress", "false")
}

/// Whether a process is gone (or a zombie waiting to be reaped).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Leaves one file in `dir` per call (named by `tag` and the time), so a
/// test can count how often a task body ran, across executor processes.
fn record_run(dir: &str, tag: u32) {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let _ = std::fs::write(format!("{dir}/{tag}-{n}"), "");
}

/// Marks task `me` (0 or 1) of `round` as ready and waits (10 s at most)
/// until the other one is too.
fn meet_other(dir: &str, round: u32, me: u8) {
    let _ = std::fs::write(format!("{dir}/{round}-{me}"), "");
    let other = format!("{dir}/{round}-{}", 1 - me);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::path::Path::new(&other).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// An executor hangs (SIGSTOP: its connection stays open, only its heartbeats
/// stop) in the middle of the reduce stage. The driver declares it lost after
/// `flint.network.timeout`, reruns its task elsewhere, and has its Worker end
/// the hung process through the Master.
fn a_hung_executor_is_declared_lost(input: &str, dir: &std::path::Path) {
    let marker = dir.join("hung").to_str().unwrap().to_owned();
    let sc = FlintContext::new(
        cluster_conf("cluster-hung-executor")
            .set("flint.network.timeout", "3s")
            .set("flint.executor.heartbeatInterval", "200ms"),
    )
    .unwrap();
    let m = marker.clone();
    let mut counts = sc
        .text_file(input, 4)
        .unwrap()
        .flat_map(Fn!(|l: String| words(l)))
        .map(Fn!(|w: String| (w, 1u64)))
        .reduce_by_key_with(3, Fn!(|a: u64, b: u64| a + b))
        .map(Fn!(move |wc: (String, u64)| {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&m)
            {
                let me = std::process::id();
                let _ = write!(f, "{me}");
                drop(f);
                let _ = std::process::Command::new("kill")
                    .args(["-STOP", &me.to_string()])
                    .status();
            }
            wc
        }))
        .collect()
        .unwrap();
    counts.sort();
    check_counts(&counts, "after a hung executor");
    let pid: u32 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();
    // Ended by its Worker at the driver's request, while the application runs.
    // Within the Worker's 10 s SIGTERM grace: SIGCONT lets the stopped
    // process act on SIGTERM at once.
    wait_until("the hung executor is ended", 8, || is_gone(pid));
    sc.stop();
}

#[derive(Clone, Default)]
struct Recorder(std::sync::Arc<parking_lot::Mutex<Vec<flint::listener::Event>>>);

impl flint::listener::Listener for Recorder {
    fn on_event(&mut self, e: &flint::listener::Event) {
        self.0.lock().push(e.clone());
    }
}

/// Waits (bounded) for a file another process creates.
fn await_file(path: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::path::Path::new(path).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Spark's TaskMetrics: heartbeats carry running tasks' metrics, and each
/// task's end carries its final ones; shuffle records written by the map
/// tasks are exactly those the reducers read.
fn task_metrics_reach_the_driver(input: &str, dir: &std::path::Path) {
    use flint::listener::Event;
    let sc = FlintContext::new(
        cluster_conf("cluster-metrics").set("flint.executor.heartbeatInterval", "100ms"),
    )
    .unwrap();
    let rec = Recorder::default();
    sc.add_listener(Box::new(rec.clone()));
    let go = dir.join("metrics-go").to_str().unwrap().to_owned();
    let g = go.clone();
    let rdd = sc
        .text_file(input, 4)
        .unwrap()
        .flat_map(Fn!(|l: String| words(l)))
        .map(Fn!(|w: String| (w, 1u64)))
        .reduce_by_key_with(3, Fn!(|a: u64, b: u64| a + b))
        // Reducers hold on after reading until the driver has seen their
        // metrics in a heartbeat.
        .map_partitions(Fn!(move |it: flint::BoxIter<(String, u64)>| {
            let v: Vec<(String, u64)> = it.collect();
            await_file(&g);
            Box::new(v.into_iter()) as flint::BoxIter<(String, u64)>
        }));
    let job = std::thread::spawn(move || rdd.collect());
    wait_until("a heartbeat with a running reducer's metrics", 30, || {
        rec.0.lock().iter().any(|e| {
            matches!(e, Event::ExecutorMetricsUpdate { tasks, .. }
                if tasks.iter().any(|(_, m)| m.shuffle_read_records > 0))
        })
    });
    std::fs::write(&go, "").unwrap();
    let mut counts = job.join().unwrap().unwrap();
    counts.sort();
    check_counts(&counts, "with metrics");
    wait_until("every task's end event", 10, || {
        rec.0
            .lock()
            .iter()
            .any(|e| matches!(e, Event::JobEnd { .. }))
    });
    let events = rec.0.lock().clone();
    let ends: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::TaskEnd {
                succeeded: true,
                executor,
                metrics,
                ..
            } => Some((executor.clone(), *metrics)),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 7, "4 map tasks and 3 reducers: {ends:?}");
    assert!(ends.iter().all(|(e, _)| e != "driver"), "{ends:?}");
    let sum =
        |f: fn(&flint::metrics::TaskMetrics) -> u64| ends.iter().map(|(_, m)| f(m)).sum::<u64>();
    let written = sum(|m| m.shuffle_write_records);
    assert!(written > 0, "{ends:?}");
    assert_eq!(written, sum(|m| m.shuffle_read_records), "{ends:?}");
    assert_eq!(
        sum(|m| m.shuffle_write_bytes),
        sum(|m| m.shuffle_read_bytes),
        "{ends:?}"
    );
    assert!(sum(|m| m.shuffle_remote_bytes_read) <= sum(|m| m.shuffle_read_bytes));
    assert_eq!(
        ends.iter().filter(|(_, m)| m.result_size > 0).count(),
        3,
        "each reducer sent a result: {ends:?}"
    );
    sc.stop();
}

/// An executor that wrote map outputs is killed with SIGKILL between two jobs
/// over the same shuffle: the second job must recompute the lost outputs (from
/// the lost connection, or from the fetch failure of a reducer that tried
/// first) and still count right.
fn a_killed_executor_s_map_outputs_are_recomputed(input: &str, dir: &std::path::Path) {
    let maps = dir.join("map-pids");
    std::fs::create_dir_all(&maps).unwrap();
    let sc = FlintContext::new(cluster_conf("cluster-kill-9")).unwrap();
    let m = maps.to_str().unwrap().to_owned();
    let counts = sc
        .text_file(input, 4)
        .unwrap()
        .flat_map(Fn!(|l: String| words(l)))
        .map(Fn!(move |w: String| {
            let _ = std::fs::write(format!("{}/{}", m, std::process::id()), "");
            (w, 1u64)
        }))
        .reduce_by_key_with(3, Fn!(|a: u64, b: u64| a + b));
    assert_eq!(counts.count().unwrap(), 98);
    let pids: Vec<u32> = std::fs::read_dir(&maps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    assert!(!pids.is_empty() && !pids.contains(&std::process::id()));
    signal(pids[0], "-KILL");
    let mut got = counts.collect().unwrap();
    got.sort();
    check_counts(&got, "after kill -9 of a map-side executor");
    sc.stop();
}

/// What the driver's context cleaner removes (a dropped shuffle's files) is
/// removed on the executors too, not only in the driver's own directory.
fn cleanup_reaches_the_executors(input: &str) {
    let sc = FlintContext::new(cluster_conf("cluster-cleanup")).unwrap();
    // Each executor's work dir (`work/<app>/<id>`); their local dirs live in
    // the application's local dir beside them (`work/<app>/local`).
    let dirs: Vec<std::path::PathBuf> = sc
        .parallelize((0..8u32).collect::<Vec<_>>(), 8)
        .map(Fn!(|_x: u32| std::env::current_dir()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()))
        .distinct()
        .collect()
        .unwrap()
        .into_iter()
        .map(|d| std::path::Path::new(&d).parent().unwrap().join("local"))
        .collect();
    fn shuffle_files(dir: &std::path::Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    shuffle_files(&p)
                } else {
                    usize::from(e.file_name().to_string_lossy().starts_with("shuffle_"))
                }
            })
            .sum()
    }
    let total = |dirs: &[std::path::PathBuf]| dirs.iter().map(|d| shuffle_files(d)).sum::<usize>();
    for _ in 0..3 {
        let counts = sc
            .text_file(input, 4)
            .unwrap()
            .flat_map(Fn!(|l: String| words(l)))
            .map(Fn!(|w: String| (w, 1u64)))
            .reduce_by_key_with(3, Fn!(|a: u64, b: u64| a + b));
        assert_eq!(counts.count().unwrap(), 98);
        assert!(total(&dirs) > 0, "the executors wrote shuffle files");
        drop(counts);
        sc.wait_for_cleanup();
        wait_until("the executors removed the shuffle's files", 30, || {
            total(&dirs) == 0
        });
    }
    sc.stop();
}

/// With 1 MiB frames: results larger than a frame come back whole (fetched
/// in parts from the executor); one over `flint.driver.maxResultSize` fails
/// the job at once, without retries; a task larger than a frame fails with
/// Spark's advice.
fn large_results_large_tasks_and_failing_tasks(dir: &std::path::Path) {
    let sc = FlintContext::new(
        cluster_conf("cluster-large-results")
            .set("flint.rpc.message.maxSize", "1")
            .set("flint.driver.maxResultSize", "8m"),
    )
    .unwrap();
    let big = sc
        .parallelize(vec![1u8, 2], 2)
        .map(Fn!(
            |b: u8| std::iter::repeat_n(b, 3_000_000).collect::<Vec<u8>>()
        ))
        .collect()
        .unwrap();
    assert_eq!(big.len(), 2);
    for (i, v) in big.iter().enumerate() {
        assert_eq!(v.len(), 3_000_000);
        assert!(v.iter().all(|x| *x as usize == i + 1));
    }
    // Two jobs at once whose results together pass maxResultSize (each job
    // alone does not): a fetch waits for the other, and both jobs complete.
    // The two tasks meet (through files) before returning, so their results
    // reach the driver together even on a loaded machine.
    let deferred = flint::cluster_metrics::results_deferred();
    let meet = dir.join("meet");
    std::fs::create_dir_all(&meet).unwrap();
    for round in 0..20u32 {
        let jobs: Vec<_> = (0..2u8)
            .map(|j| {
                let sc = sc.clone();
                let m = meet.to_str().unwrap().to_owned();
                std::thread::spawn(move || {
                    sc.parallelize(vec![j], 1)
                        .map(Fn!(move |b: u8| {
                            let v = std::iter::repeat_n(b, 5_000_000).collect::<Vec<u8>>();
                            meet_other(&m, round, b);
                            v
                        }))
                        .collect()
                        .unwrap()
                })
            })
            .collect();
        for (j, h) in jobs.into_iter().enumerate() {
            let got = h.join().unwrap();
            assert_eq!(got.len(), 1);
            assert!(got[0].len() == 5_000_000 && got[0].iter().all(|x| *x as usize == j));
        }
        if flint::cluster_metrics::results_deferred() > deferred {
            break;
        }
    }
    assert!(
        flint::cluster_metrics::results_deferred() > deferred,
        "no fetch ever had to wait: the limit was not exercised"
    );
    let attempts = dir.join("too-big-attempts");
    std::fs::create_dir_all(&attempts).unwrap();
    let a = attempts.to_str().unwrap().to_owned();
    let err = sc
        .parallelize(vec![9u8], 1)
        .map(Fn!(move |b: u8| {
            record_run(&a, std::process::id());
            std::iter::repeat_n(b, 9_000_000).collect::<Vec<u8>>()
        }))
        .collect()
        .unwrap_err()
        .to_string();
    assert!(err.contains("flint.driver.maxResultSize"), "{err}");
    assert_eq!(
        std::fs::read_dir(&attempts).unwrap().count(),
        1,
        "a result over maxResultSize is not retried"
    );
    // A task that panics on every attempt: the job fails with the panic's
    // message after flint.task.maxFailures (4 on a cluster) attempts.
    let tries = dir.join("panic-attempts");
    std::fs::create_dir_all(&tries).unwrap();
    let t = tries.to_str().unwrap().to_owned();
    let err = sc
        .parallelize(vec![1u32, 2, 3], 3)
        .map(Fn!(move |x: u32| {
            if x == 2 {
                record_run(&t, std::process::id());
                panic!("boom on element {x}");
            }
            x
        }))
        .collect()
        .unwrap_err();
    // Typed end to end (Spark's ExceptionFailure): the executor's backtrace
    // reaches the driver and points at the closure that panicked.
    let bt = err.backtrace().unwrap_or_default().to_string();
    let err = err.to_string();
    assert!(
        err.contains("boom on element 2") && err.contains("failed 4 times"),
        "{err}"
    );
    assert!(bt.contains("cluster_mode.rs"), "backtrace: {bt}");
    // A piped program does not inherit the executor's role or secrets.
    let env = sc
        .parallelize(vec![1u32], 1)
        .pipe(&[
            "sh",
            "-c",
            "cat >/dev/null; echo ${FLINT_ROLE:-none} ${FLINT_DRIVER_URL:-none} ${FLINT_APP_SECRET:-none}",
        ])
        .unwrap()
        .collect()
        .unwrap();
    assert_eq!(env, vec!["none none none".to_string()]);
    // A path the executors cannot read (gone since the driver planned the
    // job): the failure names the path and where it was read.
    let gone = dir.join("gone.txt");
    std::fs::write(&gone, "a b c\n").unwrap();
    let lines = sc.text_file(gone.to_str().unwrap(), 2).unwrap();
    std::fs::remove_file(&gone).unwrap();
    let err = lines.count().unwrap_err().to_string();
    assert!(
        err.contains(gone.to_str().unwrap()) && err.contains("(127.0.0.1 executor "),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&tries).unwrap().count(), 4);
    let captured = vec![7u8; 2 << 20];
    let err = sc
        .parallelize(vec![0usize], 1)
        .map(Fn!(move |i: usize| captured[i]))
        .collect()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exceeds max allowed: flint.rpc.message.maxSize") && err.contains("broadcast"),
        "{err}"
    );
    sc.stop();
}

/// A cluster with no workers: jobs wait, and the driver warns every
/// `flint.starvation.timeout` as Spark does; a master that never answers is
/// given up after 3 registrations with Spark's message.
fn no_resources_warn_and_a_dead_master_is_given_up(dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt
        .block_on(flint_deploy::LocalCluster::start(
            0,
            1,
            512,
            &dir.join("empty"),
        ))
        .unwrap();
    let sc = FlintContext::new(
        FlintConf::new()
            .app_name("starved")
            .master(format!("flint://{}", cluster.master.address))
            .set("flint.ui.showConsoleProgress", "false")
            .set("flint.scheduler.maxRegisteredResourcesWaitingTime", "50ms")
            .set("flint.starvation.timeout", "200ms"),
    )
    .unwrap();
    let before = harness::logs()
        .matches("Initial job has not accepted any resources")
        .count();
    let job = {
        let sc = sc.clone();
        std::thread::spawn(move || sc.parallelize(vec![1u32, 2], 2).count())
    };
    wait_until("the starvation warning, twice", 30, || {
        harness::logs()
            .matches("Initial job has not accepted any resources")
            .count()
            >= before + 2
    });
    sc.stop();
    assert!(
        job.join().unwrap().is_err(),
        "a starved job ends when the context stops"
    );
    rt.block_on(cluster.stop());
    // Nothing listens on this port: three registrations, then a clear error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let err = FlintContext::new(
        FlintConf::new()
            .master(format!("flint://127.0.0.1:{port}"))
            .set("flint.standalone.registrationTimeout", "200ms"),
    )
    .err()
    .expect("a context without a master")
    .to_string();
    assert!(
        err.contains("All masters are unresponsive! Giving up.")
            && err.contains("Connection refused"),
        "the error says what the connection saw: {err}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(600),
        "3 attempts, 200 ms apart"
    );
    // A master with a secret refuses a driver without it: the context fails
    // at once with the refusal, not after three registrations.
    let secured = rt
        .block_on(flint_deploy::Master::start(flint_deploy::MasterConf {
            port: 0,
            webui_port: 0,
            rpc: flint_rpc::RpcConf {
                secret: Some("a-cluster-secret".into()),
                ..flint_rpc::RpcConf::default()
            },
            ..flint_deploy::MasterConf::default()
        }))
        .unwrap();
    let started = std::time::Instant::now();
    let err = FlintContext::new(
        FlintConf::new()
            .master(format!("flint://{}", secured.address))
            .set("flint.standalone.registrationTimeout", "20s"),
    )
    .err()
    .expect("a context refused by its master")
    .to_string();
    assert!(
        err.contains("refused") && err.contains("flint.authenticate.secret"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "refused at once, not after a registration timeout: {:?}",
        started.elapsed()
    );
    rt.block_on(async { secured.env.shutdown() });
}

/// Two applications share a two-core cluster by the Master's rules
/// (`flint.cores.max`, Spark's --total-executor-cores); a third that finds no
/// free core waits, warned about, and runs once one of the others ends.
fn applications_share_the_cluster(dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt
        .block_on(flint_deploy::LocalCluster::start(
            2,
            1,
            1024,
            &dir.join("shared"),
        ))
        .unwrap();
    let url = format!("flint://{}", cluster.master.address);
    let app = |name: &str, max: Option<&str>| {
        let mut c = FlintConf::new()
            .app_name(name)
            .master(url.clone())
            .set("flint.ui.showConsoleProgress", "false")
            .set("flint.executor.memory", "256m")
            .set("flint.scheduler.maxRegisteredResourcesWaitingTime", "50ms")
            .set("flint.starvation.timeout", "200ms");
        if let Some(m) = max {
            c = c.set("flint.cores.max", m);
        }
        FlintContext::new(c).unwrap()
    };
    let sum = |sc: &FlintContext| {
        sc.parallelize((1..=100u64).collect::<Vec<_>>(), 4)
            .map(Fn!(|x: u64| (std::process::id(), x)))
            .collect()
            .unwrap()
    };
    let (a, b) = (app("share-a", Some("1")), app("share-b", Some("1")));
    let (ra, rb) = (sum(&a), sum(&b));
    let pids = |r: &[(u32, u64)]| {
        let mut p: Vec<u32> = r.iter().map(|x| x.0).collect();
        p.sort();
        p.dedup();
        p
    };
    assert_eq!(ra.iter().map(|x| x.1).sum::<u64>(), 5050);
    assert_eq!(rb.iter().map(|x| x.1).sum::<u64>(), 5050);
    // One executor each, on different workers: different processes.
    assert_eq!(pids(&ra).len(), 1, "{:?}", pids(&ra));
    assert_eq!(pids(&rb).len(), 1, "{:?}", pids(&rb));
    assert_ne!(pids(&ra), pids(&rb));
    let before = harness::logs()
        .matches("Initial job has not accepted any resources")
        .count();
    let c = app("share-c", None);
    let job = {
        let c = c.clone();
        std::thread::spawn(move || sum(&c))
    };
    wait_until("the third application's starvation warning", 30, || {
        harness::logs()
            .matches("Initial job has not accepted any resources")
            .count()
            > before
    });
    a.stop();
    let rc = job.join().unwrap();
    assert_eq!(rc.iter().map(|x| x.1).sum::<u64>(), 5050);
    b.stop();
    c.stop();
    rt.block_on(cluster.stop());
}

/// The operation model suite (every core operation against a plain Rust
/// model, random data and partitionings) on a local cluster, at fewer cases
/// than local mode runs it.
fn the_operation_model_holds_on_a_local_cluster() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let sc = FlintContext::new(
        cluster_conf("cluster-op-model").set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let cases = std::env::var("FLINT_CLUSTER_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    runner
        .run(
            &(prop::collection::vec(-1000i32..1000, 0..300), 1usize..9),
            |(data, parts)| op_model::narrow_ops(&sc, data, parts),
        )
        .unwrap();
    runner
        .run(
            &(
                op_model::pairs(),
                op_model::pairs(),
                1usize..6,
                1usize..6,
                1usize..7,
            ),
            |(a, b, pa, pb, np)| op_model::pair_ops(&sc, a, b, pa, pb, np),
        )
        .unwrap();
    sc.stop();
}

/// Executors report the partitions they cache; the driver then offers each
/// task on a cached partition to the executor holding it, so a second job
/// over a cached RDD computes nothing again.
fn cached_partitions_are_read_where_they_are_cached(dir: &std::path::Path) {
    let computed = dir.join("computed");
    std::fs::create_dir_all(&computed).unwrap();
    let sc = FlintContext::new(cluster_conf("cluster-cache-locality")).unwrap();
    let c = computed.to_str().unwrap().to_owned();
    let cached = sc
        .parallelize((0..8u32).collect::<Vec<_>>(), 8)
        .map(Fn!(move |x: u32| {
            record_run(&c, x);
            (x, std::process::id())
        }))
        .cache();
    let first = cached.collect().unwrap();
    let pids: std::collections::BTreeSet<u32> = first.iter().map(|x| x.1).collect();
    assert_eq!(pids.len(), 2, "both executors cached partitions: {first:?}");
    let count = || std::fs::read_dir(&computed).unwrap().count();
    assert_eq!(count(), 8);
    for round in 0..3 {
        // Each partition is read where it was cached: the same process, and
        // no computation again.
        let again = cached
            .map(Fn!(|(x, pid): (u32, u32)| (x, pid, std::process::id())))
            .collect()
            .unwrap();
        for (x, cached_on, read_on) in &again {
            assert_eq!(
                cached_on, read_on,
                "round {round}: partition {x} read away from its cache"
            );
        }
        assert_eq!(
            count(),
            8,
            "round {round}: a cached partition was computed again"
        );
    }
    // One task reading every partition (coalesce to 1) runs on one
    // executor: the partitions cached on the other are fetched from it, not
    // computed again.
    let mut all = cached.coalesce(1).collect().unwrap();
    all.sort();
    let mut want = first.clone();
    want.sort();
    assert_eq!(all, want);
    assert_eq!(
        count(),
        8,
        "partitions cached elsewhere were fetched, not computed"
    );
    sc.stop();
}

/// Workers on distinct loopback addresses (127.0.0.2 with two one-core
/// executors, 127.0.0.3 with one: all of 127.0.0.0/8 is local) are distinct
/// hosts to the scheduler, so host rules run for real. Partitions 0-2
/// straggle on every attempt that runs on 127.0.0.2: their speculative
/// copies must go to the other host (a copy on the second executor of
/// 127.0.0.2 would straggle too), and the job ends when the copies do.
fn speculation_runs_copies_on_another_host(dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (master, workers) = rt.block_on(async {
        let master = start_master().await;
        let mut workers = Vec::new();
        for (i, (host, cores)) in [("127.0.0.2", 2), ("127.0.0.3", 1)].iter().enumerate() {
            let mut conf = flint_deploy::WorkerConf::new(vec![master.address.clone()]);
            conf.host = host.to_string();
            conf.port = 0;
            conf.webui_port = 0;
            conf.cores = *cores;
            conf.memory_mb = 1024;
            conf.work_dir = dir.join(format!("host-{i}"));
            conf.registration_base = std::time::Duration::from_millis(100);
            workers.push(flint_deploy::Worker::start(conf).await.unwrap());
        }
        (master, workers)
    });
    let sc = FlintContext::new(
        FlintConf::new()
            .app_name("cluster-speculation")
            .master(format!("flint://{}", master.address))
            .set("flint.ui.showConsoleProgress", "false")
            .set("flint.executor.memory", "256m")
            .set("flint.executor.cores", "1")
            .set("flint.speculation", "true")
            .set("flint.speculation.interval", "50ms")
            .set("flint.speculation.quantile", "0.5")
            .set("flint.speculation.multiplier", "2"),
    )
    .unwrap();
    // All three executors, before the job.
    let executors = || {
        sc.parallelize((0..30u32).collect::<Vec<_>>(), 30)
            .map(Fn!(|_x: u32| std::process::id()))
            .distinct()
            .count()
            .unwrap()
    };
    wait_until("three executors", 30, || executors() == 3);
    // Three rounds: partition 0 straggles whenever it runs on 127.0.0.2,
    // whose other executor is then free; only the host rule keeps its copy
    // off that executor (where it would straggle too).
    let mut straggled = 0;
    for round in 0..3 {
        let started = std::time::Instant::now();
        let mark = dir.join(format!("straggled-{round}"));
        let m = mark.to_str().unwrap().to_owned();
        let got = sc
            .parallelize((0..6u32).collect::<Vec<_>>(), 6)
            .map(Fn!(move |x: u32| {
                let host = std::env::var("FLINT_EXECUTOR_HOST").unwrap_or_default();
                if x == 0 && host == "127.0.0.2" {
                    let _ = std::fs::write(&m, "");
                    std::thread::sleep(std::time::Duration::from_secs(20));
                }
                (x, host)
            }))
            .collect()
            .unwrap();
        let elapsed = started.elapsed();
        for (x, host) in &got {
            assert!(
                ["127.0.0.2", "127.0.0.3"].contains(&host.as_str()),
                "{x}: {host}"
            );
        }
        assert_eq!(
            got[0].1, "127.0.0.3",
            "round {round}: partition 0 finished on the other host"
        );
        assert!(
            elapsed < std::time::Duration::from_secs(15),
            "round {round}: a straggler's copy ran on its own host, or none ran: {elapsed:?}"
        );
        if mark.exists() {
            straggled += 1;
        }
    }
    println!("speculation: {straggled} of 3 rounds had a straggler on 127.0.0.2");
    sc.stop();
    rt.block_on(async {
        for w in workers {
            let _ = w
                .worker
                .ask::<bool>(
                    flint_deploy::messages::WorkerMsg::Shutdown,
                    std::time::Duration::from_secs(5),
                )
                .await;
            w.env.shutdown();
        }
        master.env.shutdown();
    });
}

/// `--worker MASTER_HOST:PORT WORK_DIR`: this binary as a standalone Worker
/// process (one core), so a test can kill -9 a whole Worker.
/// A driver whose binary is rebuilt (replaced on disk) after it started, as
/// `cargo build` does while an application runs: its local-cluster executors
/// start from the new file, whose build id differs.
fn rebuilt_driver() {
    let app = std::env::current_exe().unwrap();
    let mut bytes = std::fs::read(&app).unwrap();
    // Same code, another build id.
    bytes.push(0);
    let new = app.with_extension("new");
    std::fs::write(&new, bytes).unwrap();
    std::fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&new, &app).unwrap();
    let sc = FlintContext::new(cluster_conf("rebuilt").master("local-cluster[1,1,512]")).unwrap();
    let err = sc.parallelize(vec![1u32, 2, 3], 1).count().unwrap_err();
    println!("job error: {err}");
    sc.stop();
}

/// An executor from another build refuses the driver's tasks: the job fails
/// with the build-id message, and the driver's log says which executor.
fn an_executor_from_another_build_is_refused(dir: &std::path::Path) {
    let d = dir.join("rebuild");
    std::fs::create_dir_all(&d).unwrap();
    let app = d.join("app");
    std::fs::copy(std::env::current_exe().unwrap(), &app).unwrap();
    let out = std::process::Command::new(&app)
        .arg("--rebuilt-driver")
        .current_dir(&d)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let err = stdout
        .lines()
        .find_map(|l| l.strip_prefix("job error: "))
        .unwrap_or_else(|| panic!("no job error: {stdout}\n{stderr}"));
    assert!(
        err.contains("differs from driver") && err.contains("failed 4 times"),
        "{err}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("executor 0): executor binary build id")),
        "the driver names the executor: {stderr}"
    );
}

fn worker_process(master: &str, work: &str, host: &str, cores: u32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut conf = flint_deploy::WorkerConf::new(vec![flint_rpc_address(master)]);
        conf.host = host.to_string();
        conf.port = 0;
        conf.webui_port = 0;
        conf.cores = cores;
        conf.memory_mb = 1024;
        conf.work_dir = work.into();
        conf.registration_base = std::time::Duration::from_millis(100);
        let _w = flint_deploy::Worker::start(conf).await.unwrap();
        println!("worker ready");
        // Runs until killed.
        std::future::pending::<()>().await;
    });
}

fn flint_rpc_address(hp: &str) -> flint_rpc::RpcAddress {
    flint_rpc::RpcAddress::parse(hp).unwrap()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A Worker process is killed with SIGKILL while reduce tasks run: its
/// executor dies with it, the Master reports the Worker's executors lost, and
/// the job finishes on the other Worker with the right counts.
fn a_killed_worker_s_job_finishes_on_the_other(input: &str, dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let master = rt.block_on(start_master());
    let mut workers: Vec<Reaped> = (0..2)
        .map(|i| spawn_worker(&master.address, &dir.join(format!("w{i}")), "127.0.0.1", 1))
        .collect();
    let gate = dir.join("reduce-gate");
    let started = dir.join("reduce-started");
    std::fs::create_dir_all(&started).unwrap();
    let sc = FlintContext::new(
        FlintConf::new()
            .app_name("cluster-kill-worker")
            .master(format!("flint://{}", master.address))
            .set("flint.ui.showConsoleProgress", "false")
            .set("flint.executor.memory", "256m"),
    )
    .unwrap();
    let (g, st) = (
        gate.to_str().unwrap().to_owned(),
        started.to_str().unwrap().to_owned(),
    );
    let job = {
        let sc = sc.clone();
        let input = input.to_owned();
        std::thread::spawn(move || {
            sc.text_file(&input, 4)
                .unwrap()
                .flat_map(Fn!(|l: String| words(l)))
                .map(Fn!(|w: String| (w, 1u64)))
                .reduce_by_key_with(4, Fn!(|a: u64, b: u64| a + b))
                .map_partitions(Fn!(move |it: Box<dyn Iterator<Item = (String, u64)>>| {
                    // Reduce tasks say where they run, then wait for the gate.
                    let _ = std::fs::write(format!("{}/{}", st, std::process::id()), "");
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    while !std::path::Path::new(&g).exists() && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    it
                }))
                .collect()
        })
    };
    let executors = || -> Vec<u32> {
        std::fs::read_dir(&started)
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    };
    wait_until("reduce tasks run on both executors", 60, || {
        executors().len() >= 2
    });
    let victim_exec = executors()[0];
    let victim = workers
        .iter_mut()
        .find(|w| parent_of(victim_exec) == Some(w.0.id()))
        .expect("an executor is the child of a worker process");
    signal(victim.0.id(), "-KILL");
    let _ = victim.0.wait();
    wait_until("the worker's executor died with it", 30, || {
        is_gone(victim_exec)
    });
    std::fs::write(&gate, "").unwrap();
    let mut counts = job.join().unwrap().unwrap();
    counts.sort();
    check_counts(&counts, "after kill -9 of a worker");
    assert!(
        harness::logs().contains("lost executor"),
        "the driver saw the executor lost"
    );
    sc.stop();
    drop(workers);
    rt.block_on(async { master.env.shutdown() });
}

/// A Master that dies leaves its running applications running, as in Spark:
/// executors talk to the driver, not to the Master. The driver says it lost
/// the Master, its next job runs on the executors it has, and its stop does
/// not hang on the dead Master.
fn a_dead_master_leaves_applications_running(input: &str, dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let master = rt.block_on(start_master());
    let _worker = spawn_worker(&master.address, &dir.join("w-dead-master"), "127.0.0.1", 2);
    let sc = FlintContext::new(
        cluster_conf("dead-master").master(format!("flint://{}", master.address)),
    )
    .unwrap();
    let count = || {
        let mut c = sc
            .text_file(input, 4)
            .unwrap()
            .flat_map(Fn!(|l: String| words(l)))
            .map(Fn!(|w: String| (w, 1u64)))
            .reduce_by_key(Fn!(|a: u64, b: u64| a + b))
            .collect()
            .unwrap();
        c.sort();
        c
    };
    check_counts(&count(), "before the master died");
    rt.block_on(async { master.env.shutdown() });
    wait_until("the driver says it lost the master", 30, || {
        harness::logs().contains(&format!("Connection to master {} lost", master.address))
    });
    check_counts(&count(), "after the master died");
    let started = std::time::Instant::now();
    sc.stop();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );
}

/// A context's stop ends its executors as a finished application's, not as
/// lost ones: the Master starts no spare executor while the application
/// stops, each executor is told to stop by the driver, and a listed master that never answers (first in the URL) does not hold
/// the stop up: only the master that registered the application is asked.
fn a_stop_ends_the_executors_and_waits_for_no_silent_master(input: &str, dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let master = rt.block_on(start_master());
    // Accepts connections (the kernel does, into its backlog) and never speaks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap();
    let _worker = spawn_worker(&master.address, &dir.join("w-stop"), "127.0.0.1", 2);
    let sc = FlintContext::new(
        cluster_conf("clean-stop")
            .master(format!("flint://{silent},{}", master.address))
            .set("flint.executor.cores", "1")
            .set("flint.executor.memory", "256m"),
    )
    .unwrap();
    // Both executors up (the second may start later than the first job).
    wait_until("both executors run tasks", 60, || {
        let mut pids = sc
            .parallelize((0..8u32).collect::<Vec<_>>(), 8)
            .map(Fn!(|_x: u32| std::process::id()))
            .collect()
            .unwrap();
        pids.sort();
        pids.dedup();
        pids.len() == 2
    });
    let n = sc
        .text_file(input, 4)
        .unwrap()
        .flat_map(Fn!(|l: String| words(l)))
        .count()
        .unwrap();
    assert_eq!(n, 60_000);
    let started = std::time::Instant::now();
    sc.stop();
    // The driver waits at most 3 s for each answer at stop: asking the
    // silent master would take all of it.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2500),
        "stop took {:?}",
        started.elapsed()
    );
    let client = rt.block_on(async { flint_rpc::RpcEnv::client(flint_rpc::RpcConf::default()) });
    let ask_master = || master_state(&rt, &client, &master.address);
    wait_until("the application is finished", 30, || {
        let s = ask_master();
        s.activeapps.is_empty() && s.completedapps.len() == 1
    });
    let w = ask_master().workers.remove(0);
    let worker = flint_rpc::RpcAddress::new(&w.host, w.port);
    let mut finished = Vec::new();
    wait_until("the worker has no executor running", 30, || {
        let s = rt
            .block_on(
                client.ask::<_, flint_deploy::messages::WorkerStateResponse>(
                    &worker,
                    "Worker",
                    &flint_deploy::messages::WorkerMsg::RequestWorkerState,
                    std::time::Duration::from_secs(10),
                ),
            )
            .unwrap();
        finished = s.finishedexecutors;
        s.executors.is_empty()
    });
    let states: Vec<_> = finished.iter().map(|e| (e.id, e.state)).collect();
    assert_eq!(states.len(), 2, "two executors, no spare: {states:?}");
    // Each was told to stop before its application ended (after that, its
    // Worker ends what is left of the process, so it may show KILLED, as in
    // Spark).
    let app = ask_master().completedapps.remove(0).id;
    for e in &finished {
        let log = dir
            .join("w-stop")
            .join(&app)
            .join(e.id.to_string())
            .join("stderr");
        let log =
            std::fs::read_to_string(&log).unwrap_or_else(|err| panic!("{}: {err}", log.display()));
        assert!(
            log.contains("exits: the driver said stop"),
            "executor {} was not told to stop:\n{log}",
            e.id
        );
    }
    rt.block_on(async {
        client.shutdown();
        master.env.shutdown()
    });
}

/// What a Master says of itself.
fn master_state(
    rt: &tokio::runtime::Runtime,
    client: &flint_rpc::RpcEnv,
    master: &flint_rpc::RpcAddress,
) -> flint_deploy::messages::MasterStateResponse {
    rt.block_on(client.ask(
        master,
        "Master",
        &flint_deploy::messages::MasterMsg::RequestMasterState,
        std::time::Duration::from_secs(10),
    ))
    .unwrap()
}

/// Two live masters listed (nothing elects one of them): the application
/// runs on the one that answered first, and the other is told at once to
/// let it go, so that no second set of executors starts for it; the stop
/// ends it there.
fn one_of_two_listed_masters_runs_the_application(dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = rt.block_on(async { (start_master().await, start_master().await) });
    let _wa = spawn_worker(&a.address, &dir.join("w-two-a"), "127.0.0.1", 1);
    let _wb = spawn_worker(&b.address, &dir.join("w-two-b"), "127.0.0.1", 1);
    let sc = FlintContext::new(
        cluster_conf("two-masters")
            .master(format!("flint://{},{}", a.address, b.address))
            .set("flint.executor.memory", "256m"),
    )
    .unwrap();
    let n = sc
        .parallelize((0..10u32).collect::<Vec<_>>(), 2)
        .count()
        .unwrap();
    assert_eq!(n, 10);
    let client = rt.block_on(async { flint_rpc::RpcEnv::client(flint_rpc::RpcConf::default()) });
    let apps = || {
        let (sa, sb) = (
            master_state(&rt, &client, &a.address),
            master_state(&rt, &client, &b.address),
        );
        (
            sa.activeapps.len() + sb.activeapps.len(),
            sa.completedapps.len() + sb.completedapps.len(),
        )
    };
    wait_until("one master runs it and the other let it go", 30, || {
        apps() == (1, 1)
    });
    sc.stop();
    wait_until("both masters see it finished", 30, || apps() == (0, 2));
    rt.block_on(async {
        client.shutdown();
        a.env.shutdown();
        b.env.shutdown();
    });
}

/// Broadcast values spread between executors (Spark's TorrentBroadcast, whole
/// values here): the driver sends a value once, to the first executor that
/// needs it; the other gets it from that executor.
fn broadcasts_spread_between_executors() {
    let sc = FlintContext::new(cluster_conf("cluster-broadcast")).unwrap();
    let b = sc.broadcast(vec![7u8; 1 << 20]);
    let before = flint::cluster_metrics::broadcasts_served();
    let b1 = b.clone();
    let one = sc
        .parallelize(vec![0u32], 1)
        .map(Fn!(move |_x: u32| b1.value().len()))
        .collect()
        .unwrap();
    assert_eq!(one, vec![1 << 20]);
    let mut ran: Vec<(u32, usize)> = sc
        .parallelize((0..40u32).collect::<Vec<_>>(), 40)
        .map(Fn!(move |_x: u32| (std::process::id(), b.value().len())))
        .collect()
        .unwrap();
    assert!(ran.iter().all(|(_, n)| *n == 1 << 20));
    ran.sort();
    ran.dedup();
    assert_eq!(ran.len(), 2, "both executors used it: {ran:?}");
    assert_eq!(
        flint::cluster_metrics::broadcasts_served() - before,
        1,
        "the driver sent it once; the second executor got it from the first"
    );
    sc.stop();
    // Tasks that need a value at once on one executor fetch it once.
    let sc =
        FlintContext::new(cluster_conf("cluster-broadcast-2").master("local-cluster[1,2,512]"))
            .unwrap();
    let b = sc.broadcast(vec![9u8; 1 << 20]);
    let before = flint::cluster_metrics::broadcasts_served();
    let lens = sc
        .parallelize((0..8u32).collect::<Vec<_>>(), 8)
        .map(Fn!(move |_x: u32| b.value().len()))
        .collect()
        .unwrap();
    assert_eq!(lens, vec![1 << 20; 8]);
    assert_eq!(flint::cluster_metrics::broadcasts_served() - before, 1);
    sc.stop();
}

/// A closure too large to travel inside every task (Spark broadcasts every
/// task binary): the driver launches a task on each of an executor's cores
/// at once, which with a copy of the closure per task would queue more than
/// `flint.rpc.maxQueuedBytes` for the executor and drop its connection.
/// Instead the tasks name the binary and the executor fetches it once.
fn a_large_closure_reaches_every_core_once_per_executor() {
    let sc = FlintContext::new(
        cluster_conf("cluster-large-closure")
            .master("local-cluster[1,8,512]")
            .set("flint.rpc.message.maxSize", "1")
            .set("flint.rpc.maxQueuedBytes", "4m"),
    )
    .unwrap();
    let before = flint::cluster_metrics::task_binaries_served();
    let small: u64 = sc
        .parallelize((0..64u64).collect::<Vec<_>>(), 8)
        .reduce(Fn!(|a: u64, b: u64| a + b))
        .unwrap();
    assert_eq!(small, 64 * 63 / 2);
    assert_eq!(
        flint::cluster_metrics::task_binaries_served(),
        before,
        "a small binary travels inside its tasks"
    );
    // 900 kB: eight copies are 7 MB, over the 4 MiB that may be queued.
    let table: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
    let want: u64 = table.iter().map(|b| *b as u64).sum();
    for round in 0..2 {
        let table = table.clone();
        let sums = sc
            .parallelize((0..8u32).collect::<Vec<_>>(), 8)
            .map(Fn!(move |x: u32| (
                x,
                table.iter().map(|b| *b as u64).sum::<u64>()
            )))
            .collect()
            .unwrap();
        assert_eq!(sums, (0..8).map(|x| (x, want)).collect::<Vec<_>>());
        assert_eq!(
            flint::cluster_metrics::task_binaries_served() - before,
            round + 1,
            "one fetch per stage for the executor's eight tasks"
        );
    }
    // Slices travel inside tasks up to a quarter of that per executor and
    // round; the rest are fetched (10-byte varints: 300 kB slices).
    let served = flint::cluster_metrics::slices_served();
    let n = sc
        .parallelize((0..8 * 30_000u64).map(|i| u64::MAX - i).collect(), 8)
        .count()
        .unwrap();
    assert_eq!(n, 8 * 30_000);
    let fetched = flint::cluster_metrics::slices_served() - served;
    assert!(
        (4..8).contains(&fetched),
        "eight 300 kB slices, 1 MiB of them inside the tasks: {fetched} fetched"
    );
    // A binary over the frame limit fails the job with Spark's advice.
    let huge: Vec<u8> = vec![7; 2 << 20];
    let err = sc
        .parallelize(vec![1u32], 1)
        .map(Fn!(move |x: u32| x as usize + huge.len()))
        .collect()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exceeds max allowed: flint.rpc.message.maxSize"),
        "{err}"
    );
    sc.stop();
    // Small binaries travel inside tasks, but a round to 48 cores does not
    // queue 48 copies (3 MB, and slices) past a 2 MiB queue: once the round's
    // budget is spent, tasks name the binary instead.
    let sc = FlintContext::new(
        cluster_conf("cluster-inline-binaries")
            .master("local-cluster[1,48,512]")
            .set("flint.rpc.message.maxSize", "1")
            .set("flint.rpc.maxQueuedBytes", "2m"),
    )
    .unwrap();
    let table: Vec<u8> = (0..62_000u32).map(|i| (i % 251) as u8).collect();
    // 48 slices of 16 kB (10-byte varints).
    let data: Vec<u64> = (0..48 * 1600u64).map(|i| u64::MAX - i).collect();
    let want: Vec<u8> = data.iter().map(|x| ((x % 62_000) % 251) as u8).collect();
    let got = sc
        .parallelize(data, 48)
        .map(Fn!(move |x: u64| table[(x % 62_000) as usize]))
        .collect()
        .unwrap();
    assert_eq!(got, want);
    sc.stop();
    assert!(
        !harness::logs().contains("lost executor"),
        "no executor was lost to a round of launches"
    );
}

/// Every task of an executor returns a large result at once: sent
/// directly, they would all be queued on the executor's connection to the
/// driver together, past `flint.rpc.maxQueuedBytes`, and the connection (and
/// the executor) would be dropped. Results over a core's share stay on the
/// executor and the driver fetches them in parts.
fn large_results_from_every_core_at_once() {
    let sc = FlintContext::new(
        cluster_conf("cluster-results-at-once")
            .master("local-cluster[1,8,1024]")
            .set("flint.rpc.message.maxSize", "8")
            .set("flint.rpc.maxQueuedBytes", "16m"),
    )
    .unwrap();
    // Eight 6 MB results: each under the frame, together three times the queue.
    let got = sc
        .parallelize((0..8u8).collect::<Vec<_>>(), 8)
        .map(Fn!(
            |b: u8| std::iter::repeat_n(b, 6_000_000).collect::<Vec<u8>>()
        ))
        .collect()
        .unwrap();
    assert_eq!(got.len(), 8);
    for (i, v) in got.iter().enumerate() {
        assert!(v.len() == 6_000_000 && v.iter().all(|b| *b as usize == i));
    }
    assert!(
        !harness::logs().contains("lost executor"),
        "no executor was lost to its results"
    );
    let n = sc
        .parallelize((0..8 * 300_000u64).map(|i| u64::MAX - i).collect(), 8)
        .map(Fn!(|x: u64| x / 2))
        .count()
        .unwrap();
    assert_eq!(n, 8 * 300_000);
    assert!(
        !harness::logs().contains("lost executor"),
        "no executor was lost to its slices"
    );
    sc.stop();
}

/// A Master whose ACLs do not list this user refuses the application, and
/// the context fails at once with the Master's reason (not after the
/// registration retries).
fn a_master_with_acls_refuses_an_unlisted_user() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let master = rt
        .block_on(flint_deploy::Master::start(flint_deploy::MasterConf {
            port: 0,
            webui_port: 0,
            acls: Some(flint_deploy::Acls::from_lists("", "someone-else")),
            ..flint_deploy::MasterConf::default()
        }))
        .unwrap();
    let started = std::time::Instant::now();
    let err = FlintContext::new(
        FlintConf::new()
            .app_name("unlisted")
            .master(format!("flint://{}", master.address))
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("the master refused the application")
            && err.contains("not allowed to register applications"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "at once"
    );
    // With another master listed that never answers, the refusal waits for
    // it (it might take the application), and the failure names both.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap();
    let err = FlintContext::new(
        FlintConf::new()
            .app_name("unlisted")
            .master(format!("flint://{},{silent}", master.address))
            .set("flint.standalone.registrationTimeout", "300ms")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("All masters are unresponsive")
            && err.contains("refused: ")
            && err.contains("not allowed to register applications")
            && err.contains(&silent.to_string()),
        "{err}"
    );
    rt.block_on(async { master.env.shutdown() });
}

/// A Master on an ephemeral port, without a web UI port of its own.
async fn start_master() -> flint_deploy::MasterHandle {
    flint_deploy::Master::start(flint_deploy::MasterConf {
        port: 0,
        webui_port: 0,
        ..flint_deploy::MasterConf::default()
    })
    .await
    .unwrap()
}

/// A worker process, killed by PID when dropped, so a failing test leaves
/// none behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this binary as a Worker process on `host` and waits until it is up.
fn spawn_worker(
    master: &flint_rpc::RpcAddress,
    work: &std::path::Path,
    host: &str,
    cores: u32,
) -> Reaped {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--worker",
            &master.to_string(),
            work.to_str().unwrap(),
            host,
            &cores.to_string(),
        ])
        // Its executors (this binary again) say why they exit.
        .env("RUST_LOG", "warn,flint_cluster::executor=info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "worker ready");
    Reaped(c)
}

/// Hosts are real here: two Workers on 127.0.0.2 and 127.0.0.3, two
/// one-core executors on each. Reducers read map outputs of the executor
/// beside them from disk (node-local), not over the network; when the
/// 127.0.0.2 Worker dies (kill -9), both of its executors are lost together
/// and their outputs are recomputed on the other host.
fn node_local_reads_and_a_dead_host(input: &str, dir: &std::path::Path) {
    use flint::listener::Event;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let master = rt.block_on(start_master());
    let mut doomed = Some(spawn_worker(
        &master.address,
        &dir.join("hostA"),
        "127.0.0.2",
        2,
    ));
    let _other = spawn_worker(&master.address, &dir.join("hostB"), "127.0.0.3", 2);
    let sc = FlintContext::new(
        FlintConf::new()
            .app_name("cluster-node-local")
            .master(format!("flint://{}", master.address))
            .set("flint.ui.showConsoleProgress", "false")
            .set("flint.executor.memory", "256m")
            .set("flint.executor.cores", "1"),
    )
    .unwrap();
    let rec = Recorder::default();
    sc.add_listener(Box::new(rec.clone()));
    wait_until("four executors", 30, || {
        sc.parallelize((0..40u32).collect::<Vec<_>>(), 40)
            .map(Fn!(|_x: u32| std::process::id()))
            .distinct()
            .count()
            .unwrap()
            == 4
    });
    let counts = sc
        .text_file(input, 8)
        .unwrap()
        .flat_map(Fn!(|l: String| words(l)))
        .map(Fn!(|w: String| (w, 1u64)))
        .reduce_by_key_with(8, Fn!(|a: u64, b: u64| a + b));
    let mut got = counts.collect().unwrap();
    got.sort();
    check_counts(&got, "with node-local reads");
    let local: u64 = rec
        .0
        .lock()
        .iter()
        .map(|e| match e {
            Event::TaskEnd { metrics, .. } => metrics.shuffle_host_local_bytes_read,
            _ => 0,
        })
        .sum();
    assert!(
        local > 0,
        "some map outputs were read from disk on their host"
    );
    drop(doomed.take());
    // Both executors of 127.0.0.2, and only those.
    let lost_on = |host: &str| -> Vec<String> {
        let mut ids: Vec<String> = harness::logs()
            .lines()
            .filter_map(|l| {
                let (id, at) = l.split("lost executor ").nth(1)?.split_once(" at ")?;
                at.starts_with(&format!("{host}:")).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    wait_until("both executors of the dead host are lost", 30, || {
        lost_on("127.0.0.2").len() == 2
    });
    assert_eq!(lost_on("127.0.0.3"), Vec::<String>::new());
    // The same shuffle again: the dead host's outputs are recomputed.
    let mut again = counts.collect().unwrap();
    again.sort();
    assert_eq!(again, got, "the same counts after the host died");
    let app_dirs: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("hostB"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("app-"))
        .collect();
    assert_eq!(app_dirs.len(), 1, "one application ran: {app_dirs:?}");
    let app = &app_dirs[0];
    let shuffle_files = || {
        std::fs::read_dir(app.join("local"))
            .into_iter()
            .flatten()
            .flat_map(|e| std::fs::read_dir(e.unwrap().path()).into_iter().flatten())
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("shuffle_")
            })
            .count()
    };
    assert!(
        shuffle_files() > 0,
        "the executors keep their map outputs in the application's local dir"
    );
    sc.stop();
    // As Spark's Worker: when the application ends its local dirs (shuffle
    // files, blocks) are deleted, whatever its executors managed to remove
    // as they were stopped; the executors' logs stay.
    wait_until(
        "the finished application's local dir is deleted",
        30,
        || !app.join("local").exists(),
    );
    let logs = std::fs::read_dir(app)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("stderr").exists())
        .count();
    assert_eq!(logs, 2, "both executors' logs are kept");
    rt.block_on(async { master.env.shutdown() });
}

/// A task that aborts its executor's process on every attempt fails its job
/// after flint.task.maxFailures (4) attempts, as Spark's ExecutorLostFailure
/// ("exited caused by one of the running tasks"), instead of having the
/// Master start executors for it forever; the context still works after.
fn a_task_that_kills_its_executor_fails_the_job() {
    let sc = FlintContext::new(cluster_conf("executor-killing-task")).unwrap();
    let job = {
        let sc = sc.clone();
        std::thread::spawn(move || {
            sc.parallelize((0..8u32).collect::<Vec<_>>(), 4)
                .map(Fn!(|x: u32| {
                    if x == 7 {
                        std::process::abort();
                    }
                    x
                }))
                .collect()
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !job.is_finished() {
        if std::time::Instant::now() > deadline {
            sc.stop();
            panic!("the job neither failed nor finished within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = job.join().unwrap().unwrap_err().to_string();
    assert!(
        err.contains("failed 4 times") && err.contains("exited caused by one of the running tasks"),
        "{err}"
    );
    // New executors replace the dead ones and the next job runs.
    let n = sc
        .parallelize((0..8u32).collect::<Vec<_>>(), 4)
        .count()
        .unwrap();
    assert_eq!(n, 8);
    sc.stop();
}

/// The child of the test below: a driver with a 2 s network timeout that
/// its parent stops (SIGSTOP) for longer than that once its executors run.
fn paused_driver() {
    let sc = FlintContext::new(
        cluster_conf("paused-driver")
            .set("flint.network.timeout", "2s")
            .set("flint.executor.heartbeatInterval", "200ms"),
    )
    .unwrap();
    let pids = || {
        let mut p = sc
            .parallelize((0..20u32).collect::<Vec<_>>(), 20)
            .map(Fn!(|_x: u32| std::process::id()))
            .distinct()
            .collect()
            .unwrap();
        p.sort();
        p
    };
    let mut before = pids();
    while before.len() < 2 {
        before = pids();
    }
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    // Resumed: whatever expiry checks run now (several periods of 500 ms)
    // must not count the pause against the executors. Waiting for something
    // not to happen is a wait of a set length.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let lost: Vec<String> = harness::logs()
        .lines()
        .filter(|l| l.contains("lost executor"))
        .map(str::to_owned)
        .collect();
    assert_eq!(lost, Vec::<String>::new(), "executors lost after the pause");
    assert_eq!(pids(), before, "the same executors run the next job");
    println!("no executor lost");
    sc.stop();
}

/// A driver that was stopped (SIGSTOP, a debugger, a paused VM) for longer
/// than flint.network.timeout does not declare its healthy executors dead the
/// moment it resumes, before it has read the heartbeats they sent meanwhile:
/// the expiry check gives back the time it did not run.
fn a_paused_driver_keeps_its_executors() {
    use std::io::{BufRead, Write};
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--paused-driver")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the child's executors run");
    signal(pid, "-STOP");
    // The pause under test: longer than the 2 s network timeout.
    std::thread::sleep(std::time::Duration::from_secs(4));
    signal(pid, "-CONT");
    writeln!(child.stdin.as_mut().unwrap(), "resumed").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success() && rest.contains("no executor lost"),
        "the paused driver lost executors: {status} {rest}"
    );
}

/// The child of the test below: runs a shuffle on a `local-cluster`, then
/// leaks the context, as a failed test or a `static` context does.
fn leaked_local_cluster() {
    let sc = FlintContext::new(cluster_conf("leaked").master("local-cluster[1,1,512]")).unwrap();
    let n = sc
        .parallelize((0..1000u32).map(|i| (i % 7, i)).collect::<Vec<_>>(), 4)
        .reduce_by_key(Fn!(|a: u32, b: u32| a + b))
        .count()
        .unwrap();
    assert_eq!(n, 7);
    let tmp = std::env::temp_dir();
    let names: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("flint-local-cluster-")),
        "the cluster's work dir is in {}: {names:?}",
        tmp.display()
    );
    std::mem::forget(sc);
    println!("leaked");
}

/// A `local-cluster` context that is never dropped leaves nothing in the temp
/// dir when its process exits: the cluster's work dir (worker and executor
/// dirs, shuffle files, the master's uploaded binaries) goes with the local
/// dir, as Spark's shutdown hook removes its temp dirs.
fn a_leaked_local_cluster_leaves_nothing_at_exit(dir: &std::path::Path) {
    let tmp = dir.join("leak-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--leaked-local-cluster")
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("leaked"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The executors die with their worker (SIGKILL on the parent's death) and
    // may still be exiting: poll until nothing is left.
    let left = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        left(),
        Vec::<std::path::PathBuf>::new(),
        "left behind at exit"
    );
}

fn main() {
    // Executors (this binary again) log to their stderr files; the driver to the test's.
    harness::init_logging();
    flint::init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        worker_process(&args[2], &args[3], &args[4], args[5].parse().unwrap());
        return;
    }
    if args.get(1).map(String::as_str) == Some("--paused-driver") {
        paused_driver();
        return;
    }
    if args.get(1).map(String::as_str) == Some("--leaked-local-cluster") {
        leaked_local_cluster();
        return;
    }
    if args.get(1).map(String::as_str) == Some("--rebuilt-driver") {
        rebuilt_driver();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text: String = (0..20_000)
        .map(|i| format!("w{} w{} common\n", i % 97, i % 13))
        .collect();
    std::fs::write(&input, text).unwrap();
    // A relative path means the driver's working directory, though executors
    // run elsewhere (their work dirs).
    std::env::set_current_dir(dir.path()).unwrap();
    let input: &'static str = "in.txt";
    let d = dir.path().to_path_buf();
    let mut tests: Vec<harness::Test> = vec![
        (
            "wordcount_on_a_local_cluster_matches_local_mode",
            Box::new(move || {
                let (local, _) = wordcount("local[2]", input);
                let (cluster, pids) = wordcount("local-cluster[2,1,512]", input);
                assert!(
                    !pids.contains(&std::process::id()),
                    "tasks ran in executor processes, not in the driver: {pids:?}"
                );
                assert_eq!(pids.len(), 2, "both executors ran tasks: {pids:?}");
                assert_eq!(
                    cluster, local,
                    "the cluster computes what local mode computes"
                );
                check_counts(&local, "local mode");
            }),
        ),
        ("a_dead_executor_does_not_lose_the_job", {
            let d = d.clone();
            Box::new(move || {
                let marker = d.join("died");
                a_dead_executor_does_not_lose_the_job(input, marker.to_str().unwrap().into());
                assert!(marker.exists(), "an executor really died");
            })
        }),
        ("a_hung_executor_is_declared_lost", {
            let d = d.clone();
            Box::new(move || a_hung_executor_is_declared_lost(input, &d))
        }),
        ("a_killed_executor_s_map_outputs_are_recomputed", {
            let d = d.clone();
            Box::new(move || a_killed_executor_s_map_outputs_are_recomputed(input, &d))
        }),
        ("no_resources_warn_and_a_dead_master_is_given_up", {
            let d = d.clone();
            Box::new(move || no_resources_warn_and_a_dead_master_is_given_up(&d))
        }),
        (
            "the_operation_model_holds_on_a_local_cluster",
            Box::new(the_operation_model_holds_on_a_local_cluster),
        ),
        ("speculation_runs_copies_on_another_host", {
            let d = d.clone();
            Box::new(move || speculation_runs_copies_on_another_host(&d))
        }),
        ("cached_partitions_are_read_where_they_are_cached", {
            let d = d.clone();
            Box::new(move || cached_partitions_are_read_where_they_are_cached(&d))
        }),
        ("applications_share_the_cluster", {
            let d = d.clone();
            Box::new(move || applications_share_the_cluster(&d))
        }),
        ("one_of_two_listed_masters_runs_the_application", {
            let d = d.clone();
            Box::new(move || one_of_two_listed_masters_runs_the_application(&d))
        }),
        (
            "a_stop_ends_the_executors_and_waits_for_no_silent_master",
            {
                let d = d.clone();
                Box::new(move || {
                    a_stop_ends_the_executors_and_waits_for_no_silent_master(input, &d)
                })
            },
        ),
        ("a_killed_worker_s_job_finishes_on_the_other", {
            let d = d.clone();
            Box::new(move || a_killed_worker_s_job_finishes_on_the_other(input, &d))
        }),
        ("large_results_large_tasks_and_failing_tasks", {
            let d = d.clone();
            Box::new(move || large_results_large_tasks_and_failing_tasks(&d))
        }),
        (
            "cleanup_reaches_the_executors",
            Box::new(move || cleanup_reaches_the_executors(input)),
        ),
    ];
    tests.push((
        "broadcasts_spread_between_executors",
        Box::new(broadcasts_spread_between_executors),
    ));
    tests.push((
        "a_large_closure_reaches_every_core_once_per_executor",
        Box::new(a_large_closure_reaches_every_core_once_per_executor),
    ));
    tests.push((
        "large_results_from_every_core_at_once",
        Box::new(large_results_from_every_core_at_once),
    ));
    tests.push((
        "a_master_with_acls_refuses_an_unlisted_user",
        Box::new(a_master_with_acls_refuses_an_unlisted_user),
    ));
    tests.push(("node_local_reads_and_a_dead_host", {
        let d = d.clone();
        Box::new(move || node_local_reads_and_a_dead_host(input, &d))
    }));
    tests.push(("an_executor_from_another_build_is_refused", {
        let d = d.clone();
        Box::new(move || an_executor_from_another_build_is_refused(&d))
    }));
    tests.push(("task_metrics_reach_the_driver", {
        let d = d.clone();
        Box::new(move || task_metrics_reach_the_driver(input, &d))
    }));
    tests.push(("a_leaked_local_cluster_leaves_nothing_at_exit", {
        let d = d.clone();
        Box::new(move || a_leaked_local_cluster_leaves_nothing_at_exit(&d))
    }));
    tests.push((
        "a_task_that_kills_its_executor_fails_the_job",
        Box::new(a_task_that_kills_its_executor_fails_the_job),
    ));
    tests.push(("a_dead_master_leaves_applications_running", {
        let d = d.clone();
        Box::new(move || a_dead_master_leaves_applications_running(input, &d))
    }));
    tests.push((
        "a_paused_driver_keeps_its_executors",
        Box::new(a_paused_driver_keeps_its_executors),
    ));
    harness::run("cluster_mode", &args, tests);
}
