//! `flint submit` end to end. This test binary is also the submitted
//! application (`--app OUT INPUT`): it counts words with whatever master and
//! settings `flint submit` handed it and writes what it saw to OUT. In client
//! mode it runs as a child of the submitting call; in cluster mode a Worker of
//! an in-process standalone cluster launches it as the driver, and its
//! executors are the same binary again.

mod harness;

use flint::prelude::*;

fn app(out: &str, input: &str) {
    // No master or name in code: they come from flint submit.
    let sc = FlintContext::new(
        FlintConf::new()
            .set("flint.ui.showConsoleProgress", "false")
            .set("flint.test.set-in-code", "code"),
    )
    .unwrap();
    let counts = sc
        .text_file(input, 4)
        .unwrap()
        .flat_map(Fn!(|l: String| l
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()))
        .map(Fn!(|w: String| (w, 1u64)))
        .reduce_by_key(Fn!(|a: u64, b: u64| a + b))
        .collect()
        .unwrap();
    let common = counts
        .iter()
        .find(|(w, _)| w == "common")
        .map_or(0, |x| x.1);
    let conf = sc.conf();
    let line = [
        conf.get("flint.app.name").unwrap_or("").to_string(),
        conf.get("flint.master").unwrap_or("").to_string(),
        conf.get("flint.test.marker").unwrap_or("").to_string(),
        counts.len().to_string(),
        common.to_string(),
        std::process::id().to_string(),
        conf.get("flint.test.set-in-code").unwrap_or("").to_string(),
    ]
    .join("\t");
    sc.stop();
    std::fs::write(out, line).unwrap();
}

fn fields(out: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_else(|e| panic!("the application wrote no {}: {e}", out.display()))
        .split('\t')
        .map(str::to_owned)
        .collect()
}

fn submit(args: &[&str]) -> i32 {
    flint::submit::main(args.iter().map(|s| s.to_string())).unwrap()
}

fn client_mode_runs_the_app_here_with_the_submitted_settings(dir: &std::path::Path, input: &str) {
    let exe = std::env::current_exe().unwrap();
    let out = dir.join("client.out");
    let code = submit(&[
        "--master",
        "local-cluster[2,1,512]",
        "--name",
        "submitted-in-client-mode",
        "--conf",
        "flint.test.marker=from-conf",
        "--conf",
        "flint.test.set-in-code=from-submit",
        exe.to_str().unwrap(),
        "--app",
        out.to_str().unwrap(),
        input,
    ]);
    assert_eq!(code, 0);
    let f = fields(&out);
    assert_eq!(f[0], "submitted-in-client-mode");
    assert_eq!(f[1], "local-cluster[2,1,512]");
    assert_eq!(f[2], "from-conf");
    assert_eq!((f[3].as_str(), f[4].as_str()), ("98", "20000"));
    assert_ne!(
        f[5],
        std::process::id().to_string(),
        "a child process ran it"
    );
    assert_eq!(f[6], "code", "a value the application sets in code wins");
    // A failing application's exit code comes back.
    let code = submit(&[
        "--master",
        "local[1]",
        exe.to_str().unwrap(),
        "--app",
        out.to_str().unwrap(),
        "/nonexistent/input",
    ]);
    assert_ne!(code, 0);
}

/// An in-process standalone cluster of one Worker with `cores` cores in
/// `work`, its runtime, and its `flint://` URL.
fn one_worker_cluster(
    work: &std::path::Path,
    cores: u32,
) -> (tokio::runtime::Runtime, flint_deploy::LocalCluster, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt
        .block_on(flint_deploy::LocalCluster::start(1, cores, 2048, work))
        .unwrap();
    let url = format!("flint://{}", cluster.master.address);
    (rt, cluster, url)
}

fn cluster_mode_runs_the_driver_on_a_worker(dir: &std::path::Path, input: &str) {
    // One worker: 3 cores for the driver (1) and an executor (2).
    let work = dir.join("cluster");
    let (rt, cluster, url) = one_worker_cluster(&work, 3);
    let exe = std::env::current_exe().unwrap();
    let out = dir.join("cluster.out");
    let code = submit(&[
        "--deploy-mode",
        "cluster",
        "--master",
        &url,
        "--name",
        "submitted-in-cluster-mode",
        "--driver-memory",
        "256m",
        "--executor-memory",
        "256m",
        "--conf",
        "flint.standalone.submit.waitAppCompletion=true",
        "--conf",
        "flint.test.marker=on-a-worker",
        exe.to_str().unwrap(),
        "--app",
        out.to_str().unwrap(),
        input,
    ]);
    let f = fields(&out);
    assert_eq!(code, 0, "the driver finished");
    assert_eq!(f[0], "submitted-in-cluster-mode");
    assert_eq!(f[1], url);
    assert_eq!(f[2], "on-a-worker");
    assert_eq!((f[3].as_str(), f[4].as_str()), ("98", "20000"));
    // The Worker ran the binary it fetched from the Master, by hash, from its
    // cache (the driver's executors reused that copy); the driver's dir
    // holds its output.
    let sha = flint_deploy::sha256_file(&exe).unwrap();
    let cached = work.join("worker-0").join("binaries").join(&sha);
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(&exe).unwrap(),
        "the worker's cached binary is the submitted one"
    );
    let drivers: Vec<_> = std::fs::read_dir(work.join("worker-0"))
        .unwrap()
        .flatten()
        .filter(|d| d.file_name().to_string_lossy().starts_with("driver-"))
        .collect();
    assert_eq!(drivers.len(), 1, "one driver dir: {drivers:?}");
    assert!(drivers[0].path().join("stderr").exists());
    // A driver that crashes on its first run: supervised, the Worker runs it
    // again and it finishes; unsupervised, it ends FAILED and submit says so
    // with a non-zero exit.
    let crash = |supervise: bool, tag: &str| {
        let out = dir.join(format!("{tag}.out"));
        let marker = dir.join(format!("{tag}.crashed"));
        let mut args = vec![
            "--deploy-mode",
            "cluster",
            "--master",
            &url,
            "--driver-memory",
            "256m",
            "--executor-memory",
            "256m",
            "--conf",
            "flint.standalone.submit.waitAppCompletion=true",
        ];
        if supervise {
            args.push("--supervise");
        }
        let (exe, out_s, marker_s) = (
            exe.to_str().unwrap().to_owned(),
            out.to_str().unwrap().to_owned(),
            marker.to_str().unwrap().to_owned(),
        );
        args.extend([
            exe.as_str(),
            "--app",
            out_s.as_str(),
            input,
            marker_s.as_str(),
        ]);
        let code = submit(&args);
        assert!(marker.exists(), "the first run crashed");
        (code, out)
    };
    let (code, out) = crash(true, "supervised");
    assert_eq!(code, 0, "a supervised driver is restarted and finishes");
    assert_eq!(fields(&out)[4], "20000");
    let (code, out) = crash(false, "unsupervised");
    assert_ne!(code, 0, "an unsupervised crash ends FAILED");
    assert!(!out.exists());
    rt.block_on(cluster.stop());
}

/// `flint submit` in a child process (this binary with `--submit`), its
/// stdout and stderr in files read while it runs; killed by PID on drop.
struct SubmitProc {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl SubmitProc {
    fn start(dir: &std::path::Path, tag: &str, args: &[&str]) -> Self {
        let out = dir.join(format!("submit-{tag}.out"));
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--submit")
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        SubmitProc { child, out }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Stdout and stderr, for failure messages.
    fn both(&self) -> String {
        let err = std::fs::read_to_string(self.out.with_extension("err")).unwrap_or_default();
        format!("{}\n--- stderr ---\n{err}", self.stdout())
    }

    fn wait(&mut self, limit: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!(
            "flint submit still running after {limit:?}:\n{}",
            self.both()
        )
    }
}

impl Drop for SubmitProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// While it waits for the end (`waitAppCompletion`), `flint submit` tells
/// each state the driver enters, the end with the driver's exit code, and,
/// when no Worker takes the driver for a while, what it waits for.
fn submit_tells_the_driver_s_states_while_it_waits(dir: &std::path::Path) {
    let (rt, cluster, url) = one_worker_cluster(&dir.join("states"), 2);
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let base = [
        "--deploy-mode",
        "cluster",
        "--master",
        &url,
        "--driver-memory",
        "256m",
        "--conf",
        "flint.standalone.submit.waitAppCompletion=true",
    ];
    let run = |tag: &str, extra: &[&str], app_args: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra);
        args.push(exe);
        args.extend(app_args);
        SubmitProc::start(dir, tag, &args)
    };
    let limit = std::time::Duration::from_secs(60);
    let mut s = run("short", &[], &["--sleep-ms", "500"]);
    assert_eq!(s.wait(limit), Some(0), "{}", s.both());
    let out = s.stdout();
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("driver-"))
        .unwrap_or_else(|| panic!("no driver id in:\n{out}"));
    let running = out
        .find(&format!("State of {id} is RUNNING"))
        .unwrap_or_else(|| panic!("RUNNING not told:\n{out}"));
    let finished = out
        .find(&format!("State of {id} is FINISHED"))
        .unwrap_or_else(|| panic!("FINISHED not told:\n{out}"));
    assert!(running < finished, "{out}");
    // A failing driver: FAILED with its exit code, and submit exits non-zero.
    let mut s = run("fails", &[], &["--exit-code", "3"]);
    assert_eq!(s.wait(limit), Some(1), "{}", s.both());
    let out = s.stdout();
    assert!(out.contains(" is FAILED"), "{out}");
    assert!(out.contains("exited with code 3"), "{out}");
    // A driver no Worker can take (64 cores): SUBMITTED, then the hint.
    let s = run("big", &["--driver-cores", "64"], &["--exit-code", "0"]);
    let deadline = std::time::Instant::now() + limit;
    let out = loop {
        let out = s.stdout();
        if out.contains("no Worker has taken it yet") {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hint after {limit:?}:\n{}",
            s.both()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(out.contains(" is SUBMITTED"), "{out}");
    assert!(out.contains("--driver-cores and --driver-memory"), "{out}");
    drop(s);
    rt.block_on(cluster.stop());
}

fn main() {
    harness::init_logging();
    flint::init();
    let args: Vec<String> = std::env::args().collect();
    // Drivers that only wait or exit, and `flint submit` itself.
    match args.get(1).map(String::as_str) {
        Some("--sleep-ms") => {
            std::thread::sleep(std::time::Duration::from_millis(args[2].parse().unwrap()));
            return;
        }
        Some("--exit-code") => std::process::exit(args[2].parse().unwrap()),
        Some("--submit") => std::process::exit(submit(
            &args[2..].iter().map(String::as_str).collect::<Vec<_>>(),
        )),
        _ => {}
    }
    if args.get(1).map(String::as_str) == Some("--app") {
        // A crash marker: the first run (cluster-wide) creates it and fails.
        if let Some(marker) = args.get(4)
            && std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(marker)
                .is_ok()
        {
            eprintln!("crashing on purpose (first run)");
            std::process::exit(3);
        }
        app(&args[2], &args[3]);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text: String = (0..20_000)
        .map(|i| format!("w{} w{} common\n", i % 97, i % 13))
        .collect();
    std::fs::write(&input, text).unwrap();
    let input = input.to_str().unwrap().to_owned();
    let d = dir.path().to_path_buf();
    let (i1, i2, d2, d3) = (input.clone(), input, d.clone(), d.clone());
    let tests: Vec<harness::Test> = vec![
        (
            "client_mode_runs_the_app_here_with_the_submitted_settings",
            Box::new(move || client_mode_runs_the_app_here_with_the_submitted_settings(&d, &i1)),
        ),
        (
            "cluster_mode_runs_the_driver_on_a_worker",
            Box::new(move || cluster_mode_runs_the_driver_on_a_worker(&d2, &i2)),
        ),
        (
            "submit_tells_the_driver_s_states_while_it_waits",
            Box::new(move || submit_tells_the_driver_s_states_while_it_waits(&d3)),
        ),
    ];
    harness::run("submit", &args, tests);
}
