//! A context that is never dropped (kept in a `static`, or leaked) still
//! leaves no local dir behind when the process exits, as Spark's shutdown hook
//! deletes its temp dirs.

use flint::prelude::*;

const CHILD_VAR: &str = "FLINT_TEST_EXIT_CLEANUP_DIR";

/// A job with a shuffle, so shuffle files and blocks exist.
fn run_a_shuffle(sc: &FlintContext) {
    let n = sc
        .parallelize((0..1000u32).map(|i| (i % 7, i)).collect::<Vec<_>>(), 4)
        .reduce_by_key(Fn!(|a: u32, b: u32| a + b))
        .count()
        .unwrap();
    assert_eq!(n, 7);
}

#[test]
fn a_context_never_dropped_leaves_no_local_dir_at_exit() {
    if let Ok(dir) = std::env::var(CHILD_VAR) {
        // The child: shuffle files and blocks exist, then the context is leaked.
        let sc = FlintContext::new(
            FlintConf::new()
                .master("local[2]")
                .set("flint.local.dir", &dir)
                .set("flint.ui.showConsoleProgress", "false"),
        )
        .unwrap();
        run_a_shuffle(&sc);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "the local dir exists"
        );
        std::mem::forget(sc);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_context_never_dropped_leaves_no_local_dir_at_exit",
            "--nocapture",
        ])
        .env(CHILD_VAR, dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child ran the job: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind at exit: {left:?}");
}

/// Ctrl-C (SIGINT) on a driver whose context still runs, on a `local-cluster`:
/// it exits with status 130 as the default action would report, and its
/// local dir and the cluster's work dir are gone, as Spark's shutdown hooks
/// delete them on SIGINT and SIGTERM.
#[test]
fn a_driver_stopped_by_sigint_leaves_no_temp_dirs() {
    if std::env::var(CHILD_VAR).is_ok() {
        flint::init();
        let sc = FlintContext::new(
            FlintConf::new()
                .master("local-cluster[1,1,512]")
                .set("flint.ui.showConsoleProgress", "false"),
        )
        .unwrap();
        run_a_shuffle(&sc);
        println!("ready");
        // Until the signal ends the process (a bounded wait: the parent
        // fails the test if it never comes).
        std::thread::sleep(std::time::Duration::from_secs(60));
        panic!("no signal came");
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    // Under nohup: SIGHUP stays ignored (a closed terminal must not end it).
    let mut child = std::process::Command::new("nohup")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_driver_stopped_by_sigint_leaves_no_temp_dirs",
            "--nocapture",
        ])
        .env(CHILD_VAR, dir.path())
        .env("TMPDIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let ready = out
        .lines()
        .map_while(Result::ok)
        .any(|l| l.trim() == "ready");
    assert!(ready, "the child ran its job");
    let names = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        names()
            .iter()
            .any(|n| n.starts_with("flint-local-cluster-")),
        "the cluster's work dir exists: {:?}",
        names()
    );
    let pid = child.id().to_string();
    let kill = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    kill("-HUP");
    // Still running a while later (a set wait: nothing should happen).
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended a driver started under nohup"
    );
    kill("-INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    // Its executor dies with its Worker (SIGKILL on the parent's death) and
    // may still be exiting: poll.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !names().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(names(), Vec::<String>::new(), "left behind after SIGINT");
}
