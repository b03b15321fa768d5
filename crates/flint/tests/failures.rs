//! Task failure handling: retries, job abort messages, bad input.

use std::sync::atomic::{AtomicUsize, Ordering};

use flint::prelude::*;

static FLAKY_CALLS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn a_task_failing_once_succeeds_on_retry() {
    let sc = FlintContext::new(FlintConf::new().master("local[2,4]")).unwrap();
    // The first attempt of the task that sees 7 panics; the retry succeeds.
    let v = sc
        .parallelize((0..10).collect::<Vec<i32>>(), 3)
        .map(Fn!(|x: i32| {
            if x == 7 && FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("transient failure");
            }
            x * 2
        }))
        .collect()
        .unwrap();
    assert_eq!(v, (0..10).map(|x| x * 2).collect::<Vec<_>>());
    assert!(FLAKY_CALLS.load(Ordering::SeqCst) >= 2);
}

#[test]
fn a_task_always_failing_aborts_the_job_with_details() {
    let sc = FlintContext::new(FlintConf::new().master("local[2,3]")).unwrap();
    let err = sc
        .parallelize((0..10).collect::<Vec<i32>>(), 2)
        .map(Fn!(|x: i32| {
            if x == 9 {
                panic!("bad record {x}");
            }
            x
        }))
        .count()
        .unwrap_err();
    let bt = err.backtrace().unwrap_or_default().to_string();
    assert!(
        bt.contains("failures.rs"),
        "the panic's backtrace points at the closure: {bt}"
    );
    let err = err.to_string();
    assert!(err.contains("Task 1 in stage"), "{err}");
    assert!(err.contains("failed 3 times"), "{err}");
    assert!(err.contains("bad record 9"), "{err}");
}

#[test]
fn local_mode_does_not_retry_by_default() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let err = sc
        .parallelize(vec![1, 2, 3], 1)
        .map(Fn!(|x: i32| if x >= 0 { panic!("boom {x}") } else { x }))
        .collect()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("failed 1 times") && err.contains("boom 1"),
        "{err}"
    );
}

#[test]
fn the_context_survives_a_failed_job() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let rdd = sc.parallelize((0..100).collect::<Vec<i64>>(), 4);
    assert!(
        rdd.map(Fn!(|x: i64| if x == 50 { panic!("x") } else { x }))
            .count()
            .is_err()
    );
    assert_eq!(rdd.count().unwrap(), 100);
}

#[test]
fn bad_master_url_and_missing_input_are_clear_errors() {
    let err = FlintContext::new(FlintConf::new().master("local[zero]"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("local[zero]") && err.contains("local[N]"),
        "{err}"
    );
    let sc = FlintContext::new(FlintConf::new().master("local[1]")).unwrap();
    let err = sc
        .text_file("/nonexistent/input.txt", 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn output_directory_must_not_exist() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = sc
        .parallelize(vec![1, 2, 3], 2)
        .save_as_text_file(dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    let out = dir.path().join("out");
    sc.parallelize(vec![1, 2, 3], 2)
        .save_as_text_file(&out)
        .unwrap();
    assert!(out.join("_SUCCESS").exists());
    let text: String = ["part-00000", "part-00001"]
        .iter()
        .map(|p| std::fs::read_to_string(out.join(p)).unwrap())
        .collect();
    assert_eq!(text, "1\n2\n3\n");
}

#[test]
fn a_huge_local_thread_count_starts_threads_only_as_tasks_need_them() {
    let sc = FlintContext::new(FlintConf::new().master("local[100000]")).unwrap();
    assert_eq!(
        sc.parallelize((0..1000).collect::<Vec<i32>>(), 8)
            .count()
            .unwrap(),
        1000
    );
    // Other tests may run contexts in this process too; 100,000 threads (or a
    // crash while starting them) is what this guards against.
    let task_threads = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("flint-task-"))
        })
        .count();
    assert!(task_threads < 200, "{task_threads} task threads");
}

#[test]
fn task_cpus_must_fit_the_executor_and_jobs_still_run() {
    let err = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.task.cpus", "3"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("flint.task.cpus=3") && err.contains("local[2]"),
        "{err}"
    );
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[4]")
            .set("flint.task.cpus", "2"),
    )
    .unwrap();
    assert_eq!(
        sc.parallelize((0..100).collect::<Vec<i32>>(), 8)
            .count()
            .unwrap(),
        100
    );
}

#[test]
fn results_bigger_than_max_result_size_abort_the_job_with_spark_s_message() {
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.driver.maxResultSize", "64k"),
    )
    .unwrap();
    let rdd = sc.parallelize((0..100_000u64).collect::<Vec<_>>(), 4);
    let err = rdd.collect().unwrap_err().to_string();
    assert!(
        err.contains("Total size of serialized results")
            && err.contains("bigger than flint.driver.maxResultSize (64.0 KiB)"),
        "{err}"
    );
    // Small results are fine, and the context goes on.
    assert_eq!(rdd.count().unwrap(), 100_000);
}

#[test]
fn shuffle_sync_is_a_setting_checked_like_others() {
    let context = |sync: &str| {
        FlintContext::new(
            FlintConf::new()
                .master("local[2]")
                .set("flint.shuffle.sync", sync),
        )
    };
    let sc = context("true").unwrap();
    let n = sc
        .parallelize((0..100u32).collect::<Vec<_>>(), 4)
        .map(Fn!(|x: u32| (x % 7, 1u64)))
        .reduce_by_key(Fn!(|a: u64, b: u64| a + b))
        .collect()
        .unwrap()
        .len();
    assert_eq!(n, 7);
    // Refused when the context starts, not after a stage's work.
    let err = context("maybe").err().expect("refused").to_string();
    assert!(err.contains("flint.shuffle.sync"), "{err}");
}
