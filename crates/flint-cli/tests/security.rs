//! What strangers cannot do to real daemons: talk to a cluster without its
//! secret, give a worker orders without being its master, post a daemon's
//! internal messages from the network, or make a worker write outside its work
//! directory; and a daemon reachable from other machines does not start
//! without a secret.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use flint_deploy::messages::{
    ApplicationDescription, Command, MasterMsg, MasterStateResponse, WorkerMsg,
};
use flint_rpc::{Endpoint, EndpointCtx, Peer, Replier, RpcAddress, RpcConf, RpcEnv};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn log_has(d: &Daemon, what: &str) -> Option<()> {
    std::fs::read_to_string(d_log(d))
        .ok()
        .filter(|t| t.contains(what))
        .map(|_| ())
}

fn d_log(d: &Daemon) -> std::path::PathBuf {
    d.log_path()
}

/// An application whose executor command would leave a file behind if run.
fn app_that_touches(marker: &std::path::Path) -> ApplicationDescription {
    ApplicationDescription {
        name: "intruder".into(),
        binary: None,
        max_cores: Some(1),
        memory_per_executor_mb: 64,
        cores_per_executor: Some(1),
        command: Command {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), format!("touch {}", marker.display())],
            env: vec![],
        },
        app_ui_url: String::new(),
        event_log_dir: None,
        user: "mallory".into(),
    }
}

#[test]
fn a_worker_takes_orders_only_from_its_master_and_internal_messages_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let w = start_worker(dir.path(), "w1", &m.url, 0, &[]);
    poll("worker ALIVE", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "ALIVE").then_some(())
    });
    let rt = runtime();
    let stranger = rt.block_on(async { RpcEnv::client(RpcConf::default()) });
    let worker = RpcAddress::new("127.0.0.1", w.port);
    let marker = dir.path().join("pwned");
    // The master's URL in the message does not make the sender the master.
    let launch = WorkerMsg::LaunchExecutor {
        master_url: m.url.clone(),
        app_id: "app-1".into(),
        exec_id: 0,
        app_desc: app_that_touches(&marker),
        cores: 1,
        memory_mb: 64,
    };
    stranger.send(&worker, "Worker", &launch).unwrap();
    poll("the refusal in the worker's log", DEADLINE, || {
        log_has(&w.d, "refusing LaunchExecutor")
    });
    // Internal messages are not even decodable from the wire: a "Shutdown"
    // or an "ExecutorStarted" naming a pid to kill later.
    for msg in [
        WorkerMsg::Shutdown,
        WorkerMsg::ExecutorStarted {
            app_id: "app-1".into(),
            exec_id: 0,
            pid: Some(1),
        },
    ] {
        stranger.send(&worker, "Worker", &msg).unwrap();
    }
    poll("undecodable internal messages dropped", DEADLINE, || {
        let text = std::fs::read_to_string(d_log(&w.d)).ok()?;
        (text.matches("dropping undecodable message").count() >= 2).then_some(())
    });
    // The worker still serves its master: it stays ALIVE and answers.
    let json = get_json(m.web).unwrap();
    assert_eq!(worker_state(&json, &w.id).as_deref(), Some("ALIVE"));
    let state: serde_json::Value = rt
        .block_on(
            stranger.ask::<_, flint_deploy::messages::WorkerStateResponse>(
                &worker,
                "Worker",
                &WorkerMsg::RequestWorkerState,
                Duration::from_secs(10),
            ),
        )
        .map(|s| serde_json::to_value(s).unwrap())
        .unwrap();
    assert_eq!(state["executors"].as_array().map(Vec::len), Some(0));
    assert!(!marker.exists(), "the stranger's command ran");
    let mut w = w;
    assert!(w.d.is_running(), "the worker exited");
}

#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<String>>>);

/// A master that registers any worker and then sends what the test asks.
struct FakeMaster(Heard);

impl Endpoint for FakeMaster {
    type Msg = MasterMsg;
    fn receive(
        &mut self,
        ctx: &EndpointCtx<MasterMsg>,
        from: Peer,
        msg: MasterMsg,
        _: Option<Replier>,
    ) {
        let line = match &msg {
            MasterMsg::RegisterWorker { master_address, .. } => {
                let me = ctx.env.address().unwrap().clone();
                let _ = ctx.env.send(
                    &from.addr,
                    "Worker",
                    &WorkerMsg::RegisteredWorker {
                        master: me,
                        master_web_ui_url: String::new(),
                        master_address: master_address.clone(),
                        duplicate: false,
                    },
                );
                "registered".to_string()
            }
            other => format!("{other:?}"),
        };
        self.0.0.lock().unwrap().push(line);
    }
}

#[test]
fn ids_from_the_master_cannot_name_paths_outside_the_work_dir() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let heard = Heard::default();
    let master = rt.block_on(async {
        let env = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
            .await
            .unwrap();
        env.setup_endpoint("Master", FakeMaster(heard.clone()));
        env
    });
    let url = format!("flint://{}", master.address().unwrap());
    let w = start_worker(dir.path(), "w1", &url, 0, &[]);
    let wait = |what: &str| {
        poll(what, DEADLINE, || {
            heard
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(what))
                .then_some(())
        })
    };
    wait("registered");
    let worker = RpcAddress::new("127.0.0.1", w.port);
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"x").unwrap();
    let marker = dir.path().join("ran");
    // The master sends over the connection the worker opened, so these are
    // obeyed as the master's: only the ids' checks stand in the way.
    for app_id in ["../escape", "/tmp/abs", "a\0b", ".."] {
        master
            .send(
                &worker,
                "Worker",
                &WorkerMsg::LaunchExecutor {
                    master_url: url.clone(),
                    app_id: app_id.into(),
                    exec_id: 0,
                    app_desc: app_that_touches(&marker),
                    cores: 1,
                    memory_mb: 64,
                },
            )
            .unwrap();
    }
    master
        .send(
            &worker,
            "Worker",
            &WorkerMsg::ApplicationFinished {
                id: "../outside".into(),
            },
        )
        .unwrap();
    poll("four refusals reported to the master", DEADLINE, || {
        let n = heard
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("Failed") && l.contains("not a valid id"))
            .count();
        (n >= 4).then_some(())
    });
    poll("the ApplicationFinished refusal logged", DEADLINE, || {
        log_has(&w.d, "ignoring ApplicationFinished")
    });
    assert!(
        outside.join("keep").exists(),
        "a directory outside the work dir was deleted"
    );
    assert!(!dir.path().join("escape").exists());
    assert!(!marker.exists(), "an executor ran");
    // A valid id from the master is obeyed (the checks are not a blanket refusal).
    master
        .send(
            &worker,
            "Worker",
            &WorkerMsg::LaunchExecutor {
                master_url: url.clone(),
                app_id: "app-20261130-0001".into(),
                exec_id: 3,
                app_desc: app_that_touches(&marker),
                cores: 1,
                memory_mb: 64,
            },
        )
        .unwrap();
    poll("the executor ran", DEADLINE, || {
        marker.exists().then_some(())
    });
    assert!(
        dir.path()
            .join("w1-work")
            .join("app-20261130-0001")
            .join("3")
            .is_dir()
    );
}

#[test]
fn a_cluster_with_a_secret_refuses_peers_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "a long random shared secret 0123456789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let props = [(
        "flint.authenticate.secret.file",
        secret_file.to_str().unwrap(),
    )];
    let m = start_master(dir.path(), 0, &props);
    let w = start_worker(dir.path(), "w1", &m.url, 0, &props);
    poll("worker ALIVE with authentication", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "ALIVE").then_some(())
    });
    let rt = runtime();
    let master = RpcAddress::new("127.0.0.1", m.port);
    let ask = |secret: Option<&str>| {
        let env = rt.block_on(async {
            RpcEnv::client(RpcConf {
                secret: secret.map(str::to_string),
                ..RpcConf::default()
            })
        });
        rt.block_on(env.ask::<_, MasterStateResponse>(
            &master,
            "Master",
            &MasterMsg::RequestMasterState,
            Duration::from_secs(60),
        ))
    };
    let e = ask(None).unwrap_err().to_string();
    assert!(e.contains("authentication required"), "{e}");
    let e = ask(Some("guess")).unwrap_err().to_string();
    assert!(e.contains("failed to prove"), "{e}");
    let ok = ask(Some("a long random shared secret 0123456789")).unwrap();
    assert_eq!(ok.workers.len(), 1);
    // The refusals are logged by the master.
    poll("refusals logged", DEADLINE, || {
        log_has(&m.d, "authentication required")
    });
}

#[test]
fn a_daemon_reachable_from_other_machines_needs_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    // 0.0.0.0 is refused before anything is bound.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flint"))
        .args([
            "master",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--webui-port",
            "0",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve 0.0.0.0 without authentication")
            && err.contains("--insecure-no-auth"),
        "{err}"
    );
    // Asking for authentication without a secret is a clear error too.
    let pf = write_props(dir.path(), "auth.conf", &[("flint.authenticate", "true")]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flint"))
        .args([
            "master",
            "--port",
            "0",
            "--webui-port",
            "0",
            "--properties-file",
        ])
        .arg(&pf)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flint.authenticate=true needs the shared secret"),
        "{err}"
    );
}

/// TLS settings for daemons in `dir` (a CA, a certificate for 127.0.0.1 it
/// signed, its key, and a shared secret), and the CA's PEM for clients.
fn tls_props(dir: &std::path::Path) -> (Vec<(&'static str, String)>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let props = vec![
        ("flint.ssl.enabled", "true".to_string()),
        ("flint.ssl.certFile", write("cert.pem", cert.pem())),
        ("flint.ssl.keyFile", write("key.pem", key.serialize_pem())),
        ("flint.ssl.trustFile", write("ca.pem", ca.pem())),
        (
            "flint.authenticate.secret",
            "a long random shared secret for tls".to_string(),
        ),
    ];
    (props, ca.pem())
}

#[test]
fn daemons_talk_over_tls_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let (props, ca_pem) = tls_props(dir.path());
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let m = start_master(dir.path(), 0, &props);
    let w = start_worker(dir.path(), "w1", &m.url, 0, &props);
    poll(
        "worker ALIVE over TLS (web UI over HTTPS)",
        DEADLINE,
        || (worker_state(&get_json_tls(m.web, &ca_pem)?, &w.id)? == "ALIVE").then_some(()),
    );
    assert!(
        get_json(m.web).is_none(),
        "the web UI does not answer plain HTTP"
    );
    // A peer speaking plain TCP is turned away at the TLS handshake.
    let rt = runtime();
    let plain = rt.block_on(async {
        RpcEnv::client(RpcConf {
            secret: Some("a long random shared secret for tls".into()),
            ..RpcConf::default()
        })
    });
    let r = rt.block_on(plain.ask::<_, MasterStateResponse>(
        &RpcAddress::new("127.0.0.1", m.port),
        "Master",
        &MasterMsg::RequestMasterState,
        Duration::from_secs(30),
    ));
    assert!(r.is_err());
    poll("TLS refusal logged", DEADLINE, || {
        log_has(&m.d, "TLS handshake failed")
    });
}

#[test]
fn idle_web_ui_clients_cannot_starve_the_daemon_of_file_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    // A master allowed 256 open files, and 300 idle clients of its web UI.
    let d = spawn_with(
        "master",
        dir.path(),
        &[
            "master",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--webui-port",
            "0",
        ],
        Some(256),
    );
    // "flint master listening at flint://127.0.0.1:P (web UI http://127.0.0.1:W)"
    let url = d.line.split_whitespace().nth(4).unwrap().to_string();
    let web: u16 = d
        .line
        .rsplit(':')
        .next()
        .unwrap()
        .trim()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    let idle: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", web)).ok())
        .collect();
    assert!(idle.len() > 200, "only {} connections opened", idle.len());
    // The master still accepts a worker over RPC.
    let w = start_worker(dir.path(), "w1", &url, 0, &[]);
    let rt = runtime();
    let client = rt.block_on(async { RpcEnv::client(RpcConf::default()) });
    let master = RpcAddress::parse(url.trim_start_matches("flint://")).unwrap();
    poll("the worker registered over RPC", DEADLINE, || {
        let s = rt
            .block_on(client.ask::<_, MasterStateResponse>(
                &master,
                "Master",
                &MasterMsg::RequestMasterState,
                Duration::from_secs(5),
            ))
            .ok()?;
        s.workers.iter().any(|x| x.id == w.id).then_some(())
    });
    drop(idle);
    poll("the web UI answers again", DEADLINE, || get_json(web));
    drop(d);
}

/// Sockets that send nothing (or trickle a byte now and then, which the
/// idle limit alone would not stop), from several hosts, fill the web UI's
/// connection slots and stay open: a new client still gets its answer at once,
/// in place of the oldest of them, well before the 10 s idle limit.
#[test]
fn web_ui_sockets_held_open_from_many_hosts_cannot_keep_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let web = m.web;
    // 8 hosts x 24 sockets: more than the UI's 128 slots, each host within
    // its quarter.
    let idle = hold_sockets_from_hosts(web, 8, 24);
    assert!(idle.len() > 128, "only {} connections opened", idle.len());
    let started = std::time::Instant::now();
    poll(
        "the web UI answers while idle sockets are open",
        DEADLINE,
        || get_json(web),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    drop(idle);
    drop(m);
}

/// Silent sockets from several hosts, more than the HTTPS web UI's 64 TLS
/// handshake slots: a new client's handshake takes the oldest one's place
/// and it gets its answer at once, not after their 5 s handshake timeout.
#[test]
fn silent_sockets_cannot_keep_clients_out_of_the_https_web_ui() {
    let dir = tempfile::tempdir().unwrap();
    let (props, ca_pem) = tls_props(dir.path());
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let m = start_master(dir.path(), 0, &props);
    poll("the HTTPS web UI answers", DEADLINE, || {
        get_json_tls(m.web, &ca_pem)
    });
    let idle = hold_sockets_from_hosts(m.web, 8, 24);
    assert!(idle.len() > 64, "only {} connections opened", idle.len());
    let started = std::time::Instant::now();
    poll(
        "the HTTPS web UI answers while silent sockets are open",
        DEADLINE,
        || get_json_tls(m.web, &ca_pem),
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    drop(idle);
    drop(m);
}

/// `per_host` connections to 127.0.0.1:`port` from each of `hosts` loopback
/// addresses (127.0.0.2 on), held open and silent until dropped.
fn hold_sockets_from_hosts(port: u16, hosts: u8, per_host: usize) -> Vec<std::net::TcpStream> {
    let mut v = Vec::new();
    for host in 2..2 + hosts {
        for _ in 0..per_host {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&std::net::SocketAddr::from(([127, 0, 0, host], 0)).into())
                .unwrap();
            if sock
                .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
                .is_ok()
            {
                v.push(sock.into());
            }
        }
    }
    v
}

/// The `sleep` processes running with a working directory under `dir`.
fn sleepers_under(dir: &std::path::Path) -> Vec<i32> {
    processes_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
        .collect()
}

#[test]
fn only_an_application_s_driver_kills_its_executors() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let w = start_worker(dir.path(), "w1", &m.url, 0, &[]);
    poll("worker ALIVE", DEADLINE, || {
        (worker_state(&get_json(m.web)?, &w.id)? == "ALIVE").then_some(())
    });
    let rt = runtime();
    let master = RpcAddress::new("127.0.0.1", m.port);
    let (driver, stranger) = rt.block_on(async {
        (
            RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
                .await
                .unwrap(),
            RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
                .await
                .unwrap(),
        )
    });
    let mut desc = app_that_touches(&dir.path().join("unused"));
    desc.name = "sleeper".into();
    desc.command = Command {
        program: "/bin/sleep".into(),
        args: vec!["600".into()],
        env: vec![],
    };
    driver
        .send(&master, "Master", &MasterMsg::RegisterApplication { desc })
        .unwrap();
    let app_id = poll("the application registered", DEADLINE, || {
        Some(
            get_json(m.web)?["activeapps"]
                .as_array()?
                .first()?
                .get("id")?
                .as_str()?
                .to_string(),
        )
    });
    let pid = poll("its executor running", DEADLINE, || {
        sleepers_under(dir.path()).first().copied()
    });
    let kill = MasterMsg::KillExecutors {
        app_id: app_id.clone(),
        executor_ids: vec![0],
    };
    // Knowing the application's id does not make a peer its driver.
    stranger.send(&master, "Master", &kill).unwrap();
    poll("the refusal in the master's log", DEADLINE, || {
        log_has(&m.d, "refusing to kill executors")
    });
    assert!(
        sleepers_under(dir.path()).contains(&pid),
        "a stranger's KillExecutors ended the executor"
    );
    // Its driver may: the executor ends, and the Master grants a new one.
    driver.send(&master, "Master", &kill).unwrap();
    poll(
        "the executor ended at its driver's request",
        DEADLINE,
        || (!sleepers_under(dir.path()).contains(&pid)).then_some(()),
    );
    poll("the master logged why", DEADLINE, || {
        log_has(
            &m.d,
            &format!("Killing executor {app_id}/0 at its driver's request"),
        )
    });
    let replacement = poll("a replacement executor", DEADLINE, || {
        sleepers_under(dir.path()).into_iter().find(|p| *p != pid)
    });
    // Only its driver may say how many executors it wants (a stopping
    // driver asks for none, so the executors it stops are not replaced).
    let none = MasterMsg::RequestExecutors {
        app_id: app_id.clone(),
        total: 0,
    };
    let e = rt
        .block_on(stranger.ask::<_, ()>(&master, "Master", &none, DEADLINE))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not this connection's application"), "{e}");
    rt.block_on(driver.ask::<_, ()>(&master, "Master", &none, DEADLINE))
        .unwrap();
    let kill = MasterMsg::KillExecutors {
        app_id: app_id.clone(),
        executor_ids: vec![1],
    };
    driver.send(&master, "Master", &kill).unwrap();
    poll("the second executor ended", DEADLINE, || {
        (!sleepers_under(dir.path()).contains(&replacement)).then_some(())
    });
    // The Master decides launches as it handles the kill, and logs them
    // first: none followed this one.
    poll("the master logged the kill", DEADLINE, || {
        log_has(
            &m.d,
            &format!("Killing executor {app_id}/1 at its driver's request"),
        )
    });
    assert!(
        log_has(&m.d, &format!("Launching executor {app_id}/2")).is_none(),
        "an executor was launched past the 0 the driver asked for"
    );
    assert!(sleepers_under(dir.path()).is_empty());
}
