use std::path::{Path, PathBuf};
use std::time::Duration;
use flint::prelude::*;

fn context() -> FlintContext {
    FlintContext::new(FlintConf::new().master("local[2]").set("flint.ui.showConsoleProgress", "false")).unwrap()
}
fn files(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path())
        .filter(|p| { let n = p.file_name().unwrap().to_string_lossy(); n.starts_with(prefix) && n.ends_with(suffix) })
        .collect();
    v.sort();
    v
}
fn slow_pair(x: u32) -> (u32, u32) {
    if x == 1 { std::thread::sleep(Duration::from_millis(4000)); }
    (x, 1)
}

/// A fetch failure in one job wipes every map output of the executor, including
/// those of a map stage of another job that is still running: when that stage's
/// last task finishes, is the stage resubmitted (Spark) or does its job hang?
#[test]
fn fetch_failure_during_other_jobs_running_map_stage() {
    let sc = context();
    let s = sc.parallelize((0..1000u32).map(|i| (i % 10, 1u32)).collect::<Vec<_>>(), 2)
        .reduce_by_key_with(2, Fn!(|a: u32, b: u32| a + b));
    let first = s.collect().unwrap();
    let outs = files(sc.env().local_dir(), "shuffle_", ".data");
    assert_eq!(outs.len(), 2);
    let sc2 = sc.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = sc2.parallelize(vec![0u32, 1], 2)
            .map(Fn!(|x: u32| slow_pair(x)))
            .reduce_by_key_with(2, Fn!(|a: u32, b: u32| a + b))
            .collect();
        let _ = tx.send(r);
    });
    std::thread::sleep(Duration::from_millis(1500));
    for p in &outs { std::fs::write(p, b"").unwrap(); }
    let again = s.collect().unwrap();
    assert_eq!(again.len(), first.len());
    let r = rx.recv_timeout(Duration::from_secs(30)).expect("job 1 hung after another job's fetch failure");
    let mut r = r.unwrap();
    r.sort();
    assert_eq!(r, vec![(0, 1), (1, 1)]);
}

static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
static DAMAGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static B1: std::sync::OnceLock<String> = std::sync::OnceLock::new();
fn damage_once(kv: (u32, u32)) -> (u32, u32) {
    if !DAMAGED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        for p in files(DIR.get().unwrap(), B1.get().unwrap(), ".data") {
            std::fs::write(p, b"").unwrap();
        }
    }
    kv
}

#[test]
fn control_no_damage() {
    let sc = context();
    let (tx, rx) = std::sync::mpsc::channel();
    let sc2 = sc.clone();
    std::thread::spawn(move || {
        let r = sc2.parallelize(vec![0u32, 1], 2).map(Fn!(|x: u32| slow_pair(x)))
            .reduce_by_key_with(2, Fn!(|a: u32, b: u32| a + b)).collect();
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
}

/// One job: a slow map stage runs beside a branch whose second shuffle hits a
/// fetch failure.
#[test]
fn single_job_hangs_when_a_sibling_branch_fetch_fails() {
    let sc = context();
    DIR.set(sc.env().local_dir().to_path_buf()).unwrap();
    let a = sc.parallelize(vec![0u32, 1], 2).map(Fn!(|x: u32| slow_pair(x)))
        .reduce_by_key_with(2, Fn!(|a: u32, b: u32| a + b));
    let b1 = sc.parallelize((0..100u32).map(|i| (i % 2, 1u32)).collect::<Vec<_>>(), 2)
        .reduce_by_key_with(2, Fn!(|a: u32, b: u32| a + b));
    // shuffle ids: a's is 0, b1's is 1
    B1.set("shuffle_1_".to_string()).unwrap();
    let b2 = b1.map(Fn!(|kv: (u32, u32)| damage_once(kv))).reduce_by_key_with(2, Fn!(|a: u32, b: u32| a + b));
    let j = a.join(&b2);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || { let _ = tx.send(j.collect()); });
    let mut r = rx.recv_timeout(Duration::from_secs(40)).expect("single job hung").unwrap();
    r.sort();
    assert_eq!(r, vec![(0, (1, 50)), (1, (1, 50))]);
    assert!(DAMAGED.load(std::sync::atomic::Ordering::SeqCst));
}
