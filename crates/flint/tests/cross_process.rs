//! Tasks built in one process run in another process started from the same
//! binary (different address-space layout), and a binary mismatch is refused with
//! a clear error. This test has its own `main` because the child is this very
//! executable started in executor mode.

use flint::prelude::*;
use flint::rdd::CollectFn;

fn main() {
    flint::init();
    // Speak just enough of libtest's listing protocol for cargo-nextest.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("tasks_run_in_child_processes: test");
        }
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[1]")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let k = 7i64;
    let names = vec!["a".to_string(), "bb".to_string(), "ccc".to_string()];
    let rdd = sc
        .range(0, 1000, 3, 4)
        .unwrap()
        .map(Fn!(
            move |x: i64| x * k + names[(x % 3) as usize].len() as i64
        ))
        .filter(Fn!(|x: &i64| x % 2 == 0));
    let expected = rdd.collect().unwrap();
    let binary = rdd.stage_binary(CollectFn).unwrap();
    let mut remote: Vec<i64> = Vec::new();
    for p in 0..rdd.num_partitions() {
        let bytes = flint::executor::run_in_child(&exe, &binary, 0, p).unwrap();
        let part: Vec<i64> = flint::codec::decode("result", &bytes).unwrap();
        remote.extend(part);
    }
    assert_eq!(
        remote, expected,
        "the child computed what the driver computes"
    );
    println!(
        "cross_process: {} records computed in child processes match",
        remote.len()
    );

    let mut other = (*binary).clone();
    other.build_id ^= 0xdead_beef;
    let err = flint::executor::run_in_child(&exe, &other, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("differs from driver") && err.contains("was not run"),
        "{err}"
    );
    println!("cross_process: mismatched build id refused: {err}");

    // With a task key (the application's secret), the child gets it through a
    // 0600 file and runs only envelopes the driver signed.
    flint::ship::set_task_key(Some(flint::ship::generate_task_key().unwrap()));
    let signed = rdd.stage_binary(CollectFn).unwrap();
    assert!(
        signed.mac.is_some(),
        "envelopes are signed once a key is set"
    );
    let bytes = flint::executor::run_in_child(&exe, &signed, 0, 1).unwrap();
    let part: Vec<i64> = flint::codec::decode("result", &bytes).unwrap();
    assert!(!part.is_empty());
    let mut forged = (*signed).clone();
    forged.offset += 64;
    let err = flint::executor::run_in_child(&exe, &forged, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong signature"), "{err}");
    let err = flint::executor::run_in_child(&exe, &binary, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not signed"), "{err}");
    println!("cross_process: signed envelopes run, forged and unsigned ones are refused");
}
