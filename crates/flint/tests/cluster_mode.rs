//! Jobs on a cluster: executors are this test binary started in executor mode
//! by Workers of an in-process `local-cluster`; a shuffle crosses processes
//! (map outputs fetched from other executors). Its own `main` because the
//! executors are this very executable.

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
    // Parallelized data and a broadcast: executors fetch them from the driver.
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
    // A destroyed broadcast fails the job with a message, no hang.
    let gone = sc.broadcast(7u64);
    sc.destroy_broadcast(&gone);
    let err = sc
        .parallelize(vec![1u64], 1)
        .map(Fn!(move |x: u64| x + *gone.value()))
        .collect()
        .unwrap_err()
        .to_string();
    assert!(err.contains("broadcast"), "{err}");
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

fn main() {
    // Executors (this binary again) log to their stderr files; the driver to the test's.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    flint::init();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("wordcount_on_a_local_cluster_matches_local_mode: test");
            println!("a_dead_executor_does_not_lose_the_job: test");
        }
        return;
    }
    let only = |name: &str| !args.iter().any(|a| a == "--exact") || args.iter().any(|a| a == name);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text: String = (0..20_000)
        .map(|i| format!("w{} w{} common\n", i % 97, i % 13))
        .collect();
    std::fs::write(&input, text).unwrap();
    // A relative path means the driver's working directory, though executors
    // run elsewhere (their work dirs).
    std::env::set_current_dir(dir.path()).unwrap();
    let input = "in.txt";
    if only("a_dead_executor_does_not_lose_the_job") {
        let marker = dir.path().join("died").to_str().unwrap().to_owned();
        // A hang is a failure too.
        let (tx, rx) = std::sync::mpsc::channel();
        let inp = input.to_owned();
        std::thread::spawn(move || {
            a_dead_executor_does_not_lose_the_job(&inp, marker);
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(120))
            .expect("the job finished within 2 minutes after losing an executor");
        assert!(dir.path().join("died").exists(), "an executor really died");
    }
    if !only("wordcount_on_a_local_cluster_matches_local_mode") {
        return;
    }
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
    assert_eq!(
        local.iter().find(|(w, _)| w == "common").map(|x| x.1),
        Some(20_000)
    );
    println!(
        "cluster_mode: {} words counted on a 2-worker local cluster match local mode",
        cluster.len()
    );
}
