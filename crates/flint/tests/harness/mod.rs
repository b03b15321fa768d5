//! A minimal libtest-compatible runner for tests whose binary is also the
//! application (executors and submitted drivers are this executable again):
//! `--list` for nextest, `--exact NAME` to pick one, and a deadline per test
//! so a hang fails instead of blocking CI.

pub type Test = (&'static str, Box<dyn FnOnce() + Send>);

static LOGS: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Writes to stderr and keeps a copy for [`logs`].
struct Tee;

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(&String::from_utf8_lossy(buf));
        std::io::stderr().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logs to stderr (`RUST_LOG`, default warn); executors' go to their files.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(false)
        .with_writer(|| Tee)
        .try_init();
}

/// What this process has logged so far (at the level `init_logging` set).
#[allow(dead_code)]
pub fn logs() -> String {
    LOGS.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
