//! A minimal libtest-compatible runner for tests whose binary is also the
//! application (executors and submitted drivers are this executable again):
//! `--list` for nextest, `--exact NAME` to pick one, and a deadline per test
//! so a hang fails instead of blocking CI.

pub type Test = (&'static str, Box<dyn FnOnce() + Send>);

/// Logs to stderr (`RUST_LOG`, default warn); executors' go to their files.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(suite: &str, args: &[String], tests: Vec<Test>) {
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            for (name, _) in &tests {
                println!("{name}: test");
            }
        }
        return;
    }
    let only = |name: &str| !args.iter().any(|a| a == "--exact") || args.iter().any(|a| a == name);
    for (name, test) in tests {
        if !only(name) {
            continue;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            test();
            let _ = tx.send(());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(180)) {
            Ok(()) => println!("{suite}: {name} ok"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("{name} did not finish within 3 minutes")
            }
            Err(_) => panic!("{name} failed"),
        }
    }
}
