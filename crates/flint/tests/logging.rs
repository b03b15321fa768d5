//! What a driver logs reaches standard error by default (Spark's log4j
//! defaults print warnings), and an application's own subscriber, installed
//! after `flint::init` as the README orders it, takes its place.

use flint::prelude::*;

const CHILD_VAR: &str = "FLINT_TEST_LOGGING_CHILD";

/// Runs a job whose one task panics: the scheduler warns "Lost task ...".
fn failing_job() {
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[1]")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let err = sc
        .parallelize(vec![1u32], 1)
        .map(Fn!(|x: u32| if x > 0 { panic!("boom") } else { x }))
        .collect()
        .unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    sc.stop();
}

fn child(test: &str, mode: &str) -> std::process::Output {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env(CHILD_VAR, mode)
        .env_remove("RUST_LOG")
        .env_remove("FLINT_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_driver_s_warnings_reach_stderr_by_default() {
    if std::env::var(CHILD_VAR).is_ok() {
        flint::init();
        failing_job();
        return;
    }
    let out = child("a_driver_s_warnings_reach_stderr_by_default", "default");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARN") && err.contains("Lost task 0.0 in stage"),
        "the warning is on stderr: {err}"
    );
}

#[test]
fn an_application_s_own_subscriber_installed_after_init_is_used() {
    if std::env::var(CHILD_VAR).is_ok() {
        flint::init();
        // `init` (not `try_init`): it panics if a subscriber is already set.
        tracing_subscriber::fmt()
            .with_writer(std::io::stdout)
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .init();
        failing_job();
        return;
    }
    let out = child(
        "an_application_s_own_subscriber_installed_after_init_is_used",
        "own",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("Lost task 0.0 in stage"),
        "the application's subscriber got the warning: {stdout}"
    );
    assert!(
        !stderr.contains("Lost task"),
        "no second logger wrote it: {stderr}"
    );
}
