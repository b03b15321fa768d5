//! The standalone cluster with real processes: registration, liveness (by
//! disconnect and by heartbeat timeout), reconnection, executors as child
//! processes, robustness to bad input.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use flint_deploy::messages::{
    AppClientMsg, ApplicationDescription, Command, ExecutorState, MasterMsg,
};
use flint_rpc::{Endpoint, EndpointCtx, Replier, RpcAddress, RpcConf, RpcEnv};

const FAST: &[(&str, &str)] = &[("flint.worker.registrationRetryInterval", "200ms")];

#[test]
fn master_and_two_workers_come_up_alive() {
    // How fast is measured by flint-bench (standalone); here only that it happens.
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let w1 = start_worker(dir.path(), "w1", &m.url, 0, FAST);
    let w2 = start_worker(dir.path(), "w2", &m.url, 0, FAST);
    let json = poll("two ALIVE workers", DEADLINE, || {
        let j = get_json(m.web)?;
        (j["aliveworkers"] == 2).then_some(j)
    });
    assert_eq!(json["status"], "ALIVE");
    assert_eq!(json["url"], m.url.as_str());
    assert_eq!(json["cores"], 4);
    assert_eq!(json["memory"], 4096);
    for w in [&w1, &w2] {
        let e = json["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == w.id.as_str())
            .unwrap();
        assert_eq!(e["state"], "ALIVE");
        assert_eq!(e["coresfree"], 2);
        assert_eq!(e["port"], w.port);
        for key in [
            "host",
            "webuiaddress",
            "cores",
            "coresused",
            "memory",
            "memoryused",
            "memoryfree",
            "lastheartbeat",
        ] {
            assert!(!e[key].is_null(), "worker entry lacks {key}: {e}");
        }
    }
    for key in [
        "activeapps",
        "completedapps",
        "activedrivers",
        "completeddrivers",
        "coresused",
        "memoryused",
    ] {
        assert!(!json[key].is_null(), "master /json lacks {key}");
    }
    // The HTML pages show what Spark's do: workers, applications and drivers
    // (running and completed) on the Master; executors and drivers on a Worker.
    let page = |port: u16| get_page(port, "/").unwrap();
    let master_page = page(m.web);
    for heading in [
        "Workers",
        "Running applications",
        "Running drivers",
        "Completed applications",
        "Completed drivers",
    ] {
        assert!(
            master_page.contains(&format!("<h2>{heading}</h2>")),
            "master page lacks {heading}: {master_page}"
        );
    }
    assert!(master_page.contains(&w1.id), "{master_page}");
    // "flint worker ID listening at 127.0.0.1:P (web UI port W)"
    let worker_web: u16 =
        w1.d.line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .trim_end_matches(')')
            .parse()
            .unwrap();
    let worker_page = page(worker_web);
    for heading in ["Running executors", "Running drivers", "Finished executors"] {
        assert!(
            worker_page.contains(&format!("<h2>{heading}</h2>")),
            "worker page lacks {heading}: {worker_page}"
        );
    }
    assert!(worker_page.contains(&m.url), "{worker_page}");
}

#[derive(Clone, Default)]
struct AppLog(Arc<Mutex<Vec<AppClientMsg>>>);

struct AppClient(AppLog);

impl Endpoint for AppClient {
    type Msg = AppClientMsg;
    fn receive(
        &mut self,
        _: &EndpointCtx<AppClientMsg>,
        _: flint_rpc::Peer,
        msg: AppClientMsg,
        _: Option<Replier>,
    ) {
        self.0.0.lock().unwrap().push(msg);
    }
}

impl AppLog {
    fn wait(&self, what: &str, pred: impl Fn(&AppClientMsg) -> bool) -> AppClientMsg {
        poll(what, DEADLINE, || {
            self.0.lock().unwrap().iter().find(|m| pred(m)).cloned()
        })
    }
}

/// Registers an application from this test process (as a driver's app client would).
fn register_app(
    rt: &tokio::runtime::Runtime,
    master_port: u16,
    program: &str,
    args: &[&str],
) -> (RpcEnv, AppLog) {
    let log = AppLog::default();
    let env = rt.block_on(async {
        let env = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
            .await
            .unwrap();
        env.setup_endpoint("AppClient", AppClient(log.clone()));
        let desc = ApplicationDescription {
            name: "test-app".into(),
            binary: None,
            max_cores: None,
            memory_per_executor_mb: 512,
            cores_per_executor: None,
            command: Command {
                program: program.into(),
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec![],
            },
            app_ui_url: String::new(),
            event_log_dir: None,
            user: "test".into(),
        };
        env.send(
            &RpcAddress::new("127.0.0.1", master_port),
            "Master",
            &MasterMsg::RegisterApplication { desc },
        )
        .unwrap();
        env
    });
    (env, log)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn killed_worker_is_noticed_by_disconnect_and_its_executor_reported_lost() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let mut w = start_worker(dir.path(), "w1", &m.url, 0, FAST);
    poll("worker ALIVE", DEADLINE, || {
        (get_json(m.web)?["aliveworkers"] == 1).then_some(())
    });
    let rt = runtime();
    let (_env, log) = register_app(&rt, m.port, "sleep", &["300"]);
    log.wait("RegisteredApplication", |m| matches!(m, AppClientMsg::RegisteredApplication { app_id, .. } if app_id.starts_with("app-")));
    log.wait("ExecutorAdded", |m| {
        matches!(m, AppClientMsg::ExecutorAdded { cores: 2, .. })
    });
    log.wait("executor RUNNING", |m| {
        matches!(
            m,
            AppClientMsg::ExecutorUpdated {
                state: ExecutorState::Running,
                ..
            }
        )
    });
    let work = dir.path().join("w1-work");
    let executors = poll("executor process", DEADLINE, || {
        let p = processes_under(&work);
        (!p.is_empty()).then_some(p)
    });
    let t = Instant::now();
    w.d.kill9();
    poll("worker DEAD", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "DEAD").then_some(())
    });
    // Well under the 60 s worker timeout: the disconnect, not the timeout,
    // found it (a generous bound, so a loaded machine does not decide it).
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "disconnect noticed after {:?}",
        t.elapsed()
    );
    let lost = log.wait("executor LOST", |m| {
        matches!(
            m,
            AppClientMsg::ExecutorUpdated {
                state: ExecutorState::Lost,
                ..
            }
        )
    });
    if let AppClientMsg::ExecutorUpdated {
        worker_host,
        message,
        ..
    } = lost
    {
        assert_eq!(worker_host.as_deref(), Some("127.0.0.1"));
        assert!(message.unwrap_or_default().contains("worker lost"));
    }
    log.wait("WorkerRemoved", |m| {
        matches!(m, AppClientMsg::WorkerRemoved { .. })
    });
    // The executor process died with its worker: no orphans.
    poll("executor gone", DEADLINE, || {
        executors
            .iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
            .then_some(())
    });
}

/// A master and one ALIVE worker, both with `flint.worker.timeout` 1 s.
fn alive_worker_with_a_1s_timeout(dir: &std::path::Path) -> (MasterProc, WorkerProc) {
    let timeout = [("flint.worker.timeout", "1")];
    let m = start_master(dir, 0, &timeout);
    let props = [("flint.worker.timeout", "1"), FAST[0]];
    let w = start_worker(dir, "w1", &m.url, 0, &props);
    poll("worker ALIVE", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "ALIVE").then_some(())
    });
    (m, w)
}

#[test]
fn silent_worker_times_out_then_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let (m, w) = alive_worker_with_a_1s_timeout(dir.path());
    // Stopped, the worker keeps its connection but sends no heartbeats.
    w.d.signal(nix::sys::signal::Signal::SIGSTOP);
    let t = Instant::now();
    poll("worker DEAD by timeout", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "DEAD").then_some(())
    });
    // Not before the 1 s timeout (it was the timeout, not the connection);
    // the upper bound is generous so a loaded machine does not decide it.
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(15),
        "timed out after {took:?}"
    );
    // Resumed, its next heartbeat gets ReconnectWorker and it registers again.
    w.d.signal(nix::sys::signal::Signal::SIGCONT);
    poll("worker ALIVE again", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "ALIVE").then_some(())
    });
}

/// A master stopped (SIGSTOP, a paused VM) for longer than the worker
/// timeout does not remove its healthy workers the moment it resumes, before
/// it has read the heartbeats they sent meanwhile: its check gives back the
/// time it did not run.
#[test]
fn a_paused_master_keeps_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (m, w) = alive_worker_with_a_1s_timeout(dir.path());
    m.d.signal(nix::sys::signal::Signal::SIGSTOP);
    // The pause under test: three times the 1 s timeout.
    std::thread::sleep(Duration::from_secs(3));
    m.d.signal(nix::sys::signal::Signal::SIGCONT);
    // Several checks (one a second) run after the resume; none may remove
    // the worker. Waiting for something not to happen is a set wait.
    std::thread::sleep(Duration::from_millis(2500));
    let log = m.d.log_tail();
    assert!(
        !log.contains("Removing worker"),
        "the resumed master removed its worker: {log}"
    );
    assert_eq!(
        worker_state(&get_json(m.web).unwrap(), &w.id).as_deref(),
        Some("ALIVE")
    );
}

#[test]
fn worker_started_before_master_registers_when_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("flint://127.0.0.1:{port}");
    let w = start_worker(dir.path(), "w1", &url, 0, FAST);
    std::thread::sleep(Duration::from_millis(300)); // let a few attempts fail first
    let m = start_master(dir.path(), port, &[]);
    poll("late registration", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "ALIVE").then_some(())
    });
    assert!(
        w.d.log_tail().contains("Retrying connection to master"),
        "{}",
        w.d.log_tail()
    );
}

#[test]
fn restarted_worker_at_the_same_address_replaces_the_dead_entry() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let mut w = start_worker(dir.path(), "w1", &m.url, 0, FAST);
    let port = w.port;
    poll("ALIVE", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "ALIVE").then_some(())
    });
    w.d.kill9();
    poll("DEAD", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "DEAD").then_some(())
    });
    let w2 = start_worker(dir.path(), "w1b", &m.url, port, FAST);
    let json = poll("new worker ALIVE", DEADLINE, || {
        let j = get_json(m.web)?;
        (worker_state(&j, &w2.id)? == "ALIVE").then_some(j)
    });
    let at_port: Vec<_> = json["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["port"] == port)
        .collect();
    assert_eq!(
        at_port.len(),
        1,
        "the DEAD entry at the same host:port was purged: {json}"
    );
}

#[test]
fn bad_bytes_do_not_disturb_the_master() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff; 1000][..],
        &[0, 0, 0, 9, 1, 2, 3][..],
        &[0x7f, 0xff, 0xff, 0xff, 0][..],
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", m.port)).unwrap();
        let _ = s.write_all(junk);
    }
    let w = start_worker(dir.path(), "w1", &m.url, 0, FAST);
    poll("worker ALIVE after junk", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "ALIVE").then_some(())
    });
    assert_eq!(get_json(m.web).unwrap()["status"], "ALIVE");
}

#[test]
fn app_whose_executors_keep_failing_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[("flint.deploy.maxExecutorRetries", "3")]);
    let _w = start_worker(dir.path(), "w1", &m.url, 0, FAST);
    poll("worker ALIVE", DEADLINE, || {
        (get_json(m.web)?["aliveworkers"] == 1).then_some(())
    });
    let rt = runtime();
    // Spark resets the retry count whenever an executor reaches RUNNING, so only
    // executors that fail to start count toward the limit: use a missing program.
    let (_env, log) = register_app(&rt, m.port, "/nonexistent/flint-executor", &[]);
    let removed = log.wait("ApplicationRemoved", |m| {
        matches!(m, AppClientMsg::ApplicationRemoved { .. })
    });
    assert!(
        matches!(removed, AppClientMsg::ApplicationRemoved { ref message } if message == "FAILED"),
        "{removed:?}"
    );
    let failures = log
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|m| {
            matches!(
                m,
                AppClientMsg::ExecutorUpdated {
                    state: ExecutorState::Failed,
                    ..
                }
            )
        })
        .count();
    assert_eq!(failures, 3, "removed after 3 failures in a row");
    let json = get_json(m.web).unwrap();
    assert_eq!(json["completedapps"][0]["state"], "FAILED");
    assert_eq!(json["workers"][0]["coresused"], 0, "resources released");
}

#[test]
fn worker_tries_every_master_and_cleans_finished_apps() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let dead = free_port();
    let url = format!("flint://127.0.0.1:{dead},127.0.0.1:{}", m.port);
    let props = [
        FAST[0],
        ("flint.worker.cleanup.interval", "1"),
        ("flint.worker.cleanup.appDataTtl", "0"),
    ];
    let w = start_worker(dir.path(), "w1", &url, 0, &props);
    poll("registered through the second URL", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "ALIVE").then_some(())
    });
    let rt = runtime();
    let (env, log) = register_app(&rt, m.port, "sleep", &["300"]);
    let app_id = match log.wait("registered", |m| {
        matches!(m, AppClientMsg::RegisteredApplication { .. })
    }) {
        AppClientMsg::RegisteredApplication { app_id, .. } => app_id,
        _ => unreachable!(),
    };
    log.wait("executor RUNNING", |m| {
        matches!(
            m,
            AppClientMsg::ExecutorUpdated {
                state: ExecutorState::Running,
                ..
            }
        )
    });
    let app_dir = dir.path().join("w1-work").join(&app_id);
    assert!(app_dir.join("0").join("stderr").exists());
    assert!(app_dir.join("local").exists(), "app local dir created");
    env.send(
        &RpcAddress::new("127.0.0.1", m.port),
        "Master",
        &MasterMsg::UnregisterApplication {
            app_id: app_id.clone(),
        },
    )
    .unwrap();
    poll("app completed", DEADLINE, || {
        (get_json(m.web)?["completedapps"][0]["state"] == "FINISHED").then_some(())
    });
    poll("app work dir cleaned", DEADLINE, || {
        (!app_dir.exists()).then_some(())
    });
    assert!(
        processes_under(&dir.path().join("w1-work")).is_empty(),
        "executor killed"
    );
}

#[derive(Clone, Default)]
struct WorkerLog(Arc<Mutex<Vec<String>>>);

struct FakeWorker(WorkerLog);

impl Endpoint for FakeWorker {
    type Msg = flint_deploy::messages::WorkerMsg;
    fn receive(
        &mut self,
        _: &EndpointCtx<Self::Msg>,
        _: flint_rpc::Peer,
        msg: Self::Msg,
        _: Option<Replier>,
    ) {
        use flint_deploy::messages::WorkerMsg;
        let line = match msg {
            WorkerMsg::RegisteredWorker { duplicate, .. } => {
                format!("registered duplicate={duplicate}")
            }
            WorkerMsg::RegisterWorkerFailed { message } => format!("failed: {message}"),
            other => format!("{other:?}"),
        };
        self.0.0.lock().unwrap().push(line);
    }
}

#[test]
fn duplicate_worker_ids_and_addresses_are_handled_as_spark_does() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let rt = runtime();
    let log = WorkerLog::default();
    let env = rt.block_on(async {
        let env = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
            .await
            .unwrap();
        env.setup_endpoint("Worker", FakeWorker(log.clone()));
        env
    });
    let me = env.address().unwrap().clone();
    let master = RpcAddress::new("127.0.0.1", m.port);
    let register = |id: &str| MasterMsg::RegisterWorker {
        id: id.into(),
        host: me.host.clone(),
        port: me.port,
        cores: 1,
        memory_mb: 512,
        webui_address: "http://127.0.0.1:1".into(),
        master_address: master.clone(),
    };
    let wait = |what: &str| {
        poll(what, DEADLINE, || {
            log.0
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(what))
                .then_some(())
        })
    };
    env.send(&master, "Master", &register("worker-a")).unwrap();
    wait("registered duplicate=false");
    // The same id again (a quick restart before the master noticed): duplicate.
    env.send(&master, "Master", &register("worker-a")).unwrap();
    wait("registered duplicate=true");
    // Another id from an address where an ALIVE worker is registered: refused.
    env.send(&master, "Master", &register("worker-b")).unwrap();
    wait("failed: Attempted to re-register worker at same address");
    assert_eq!(get_json(m.web).unwrap()["aliveworkers"], 1);
}

#[test]
fn the_master_kills_drivers_a_worker_reports_but_it_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let rt = runtime();
    let log = WorkerLog::default();
    let env = rt.block_on(async {
        let env = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
            .await
            .unwrap();
        env.setup_endpoint("Worker", FakeWorker(log.clone()));
        env
    });
    let me = env.address().unwrap().clone();
    let master = RpcAddress::new("127.0.0.1", m.port);
    let wait = |what: &str| {
        poll(what, DEADLINE, || {
            log.0
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(what))
                .then_some(())
        })
    };
    env.send(
        &master,
        "Master",
        &MasterMsg::RegisterWorker {
            id: "worker-z".into(),
            host: me.host.clone(),
            port: me.port,
            cores: 1,
            memory_mb: 512,
            webui_address: "http://127.0.0.1:1".into(),
            master_address: master.clone(),
        },
    )
    .unwrap();
    wait("registered duplicate=false");
    // Back from a partition, the worker still runs a driver the master has
    // since relaunched elsewhere (or never knew): it must not run twice.
    env.send(
        &master,
        "Master",
        &MasterMsg::WorkerLatestState {
            id: "worker-z".into(),
            executors: vec![("app-gone".into(), 0)],
            driver_ids: vec!["driver-ghost".into()],
        },
    )
    .unwrap();
    wait("KillDriver { driver_id: \"driver-ghost\" }");
    wait("KillExecutor");
}

#[test]
fn workers_on_distinct_loopback_addresses_are_distinct_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let a = start_worker_on(dir.path(), "wa", "127.0.0.2", &m.url, 0, FAST);
    let b = start_worker_on(dir.path(), "wb", "127.0.0.3", &m.url, 0, FAST);
    let json = poll("both ALIVE", DEADLINE, || {
        let j = get_json(m.web)?;
        (j["aliveworkers"] == 2).then_some(j)
    });
    let host_of = |id: &str| {
        json["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .map(|w| w["host"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(host_of(&a.id), "127.0.0.2");
    assert_eq!(host_of(&b.id), "127.0.0.3");
}
