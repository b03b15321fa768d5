//! A context that is never dropped (kept in a `static`, or leaked) still
//! leaves no local dir behind when the process exits, as Spark's shutdown hook
//! deletes its temp dirs.

use flint::prelude::*;

const CHILD_VAR: &str = "FLINT_TEST_EXIT_CLEANUP_DIR";

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
        let n = sc
            .parallelize((0..1000u32).map(|i| (i % 7, i)).collect::<Vec<_>>(), 4)
            .reduce_by_key(Fn!(|a: u32, b: u32| a + b))
            .count()
            .unwrap();
        assert_eq!(n, 7);
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
