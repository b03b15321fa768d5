//! Cluster deploy mode on the daemons: drivers submitted to the master run on a
//! worker, are supervised with back-off, killed on request, and relaunched under a
//! new id when their worker dies.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use flint_deploy::messages::{
    Command, DriverDescription, DriverState, DriverStatusResponse, KillDriverResponse, MasterMsg,
    SubmitDriverResponse,
};
use flint_rpc::{RpcAddress, RpcConf, RpcEnv};

const FAST: &[(&str, &str)] = &[("flint.worker.registrationRetryInterval", "200ms")];

struct Client {
    rt: tokio::runtime::Runtime,
    env: RpcEnv,
    master: RpcAddress,
}

impl Client {
    fn new(port: u16) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let env = rt.block_on(async { RpcEnv::client(RpcConf::default()) });
        Client {
            rt,
            env,
            master: RpcAddress::new("127.0.0.1", port),
        }
    }

    fn ask<R: serde::de::DeserializeOwned>(&self, msg: MasterMsg) -> R {
        self.rt
            .block_on(
                self.env
                    .ask(&self.master, "Master", &msg, Duration::from_secs(10)),
            )
            .unwrap()
    }

    fn submit(&self, script: &Path, args: &[&str], supervise: bool) -> String {
        self.submit_checked(script, args, supervise, None)
    }

    /// A submission as `user`: the Master's answer.
    fn submit_as(&self, user: &str, script: &Path) -> SubmitDriverResponse {
        let mut desc = description(script, &[], false, None);
        desc.user = user.into();
        self.ask(MasterMsg::RequestSubmitDriver { desc })
    }

    fn submit_checked(
        &self,
        script: &Path,
        args: &[&str],
        supervise: bool,
        sha256: Option<String>,
    ) -> String {
        let desc = description(script, args, supervise, sha256);
        let r: SubmitDriverResponse = self.ask(MasterMsg::RequestSubmitDriver { desc });
        assert!(r.success, "{}", r.message);
        assert!(
            r.message
                .starts_with("Driver successfully submitted as driver-"),
            "{}",
            r.message
        );
        r.driver_id.unwrap()
    }

    fn status(&self, id: &str) -> DriverStatusResponse {
        self.ask(MasterMsg::RequestDriverStatus {
            driver_id: id.into(),
        })
    }

    fn wait_state(&self, id: &str, state: DriverState) -> DriverStatusResponse {
        poll(&format!("driver {id} {state:?}"), DEADLINE, || {
            let s = self.status(id);
            (s.state == Some(state)).then_some(s)
        })
    }
}

fn description(
    script: &Path,
    args: &[&str],
    supervise: bool,
    sha256: Option<String>,
) -> DriverDescription {
    DriverDescription {
        binary_url: format!("file://{}", script.display()),
        binary_sha256: sha256,
        binary: None,
        memory_mb: 256,
        cores: 1,
        supervise,
        command: Command {
            program: "{{USER_JAR}}".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
        },
        user: "tester".into(),
        name: String::new(),
    }
}

fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn cluster(dir: &Path, workers: usize) -> (MasterProc, Vec<WorkerProc>) {
    let m = start_master(dir, 0, &[]);
    let ws: Vec<WorkerProc> = (0..workers)
        .map(|i| start_worker(dir, &format!("w{i}"), &m.url, 0, FAST))
        .collect();
    poll("workers ALIVE", DEADLINE, || {
        (get_json(m.web)?["aliveworkers"] == workers).then_some(())
    });
    (m, ws)
}

#[test]
fn driver_runs_on_a_worker_to_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _ws) = cluster(dir.path(), 1);
    let app = script(
        dir.path(),
        "app.sh",
        "echo \"hello from driver, worker $1\"",
    );
    let c = Client::new(m.port);
    let id = c.submit(&app, &["{{WORKER_URL}}"], false);
    let st = c.wait_state(&id, DriverState::Finished);
    assert!(st.worker_id.is_some());
    let ddir = dir.path().join("w0-work").join(&id);
    assert!(
        ddir.join("app.sh").exists(),
        "binary fetched into the driver dir"
    );
    let out = std::fs::read_to_string(ddir.join("stdout")).unwrap();
    assert!(
        out.contains("hello from driver, worker flint://127.0.0.1:"),
        "{out}"
    );
    let json = get_json(m.web).unwrap();
    assert_eq!(json["completeddrivers"][0]["state"], "FINISHED");
    assert_eq!(json["workers"][0]["coresused"], 0);
}

#[test]
fn supervised_driver_restarts_with_backoff_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _ws) = cluster(dir.path(), 1);
    let counter = dir.path().join("runs");
    let app = script(
        dir.path(),
        "flaky.sh",
        "n=$(cat \"$1\" 2>/dev/null || echo 0); n=$((n+1)); echo $n > \"$1\"; [ $n -ge 3 ]",
    );
    let c = Client::new(m.port);
    let t = Instant::now();
    let id = c.submit(&app, &[counter.to_str().unwrap()], true);
    c.wait_state(&id, DriverState::Finished);
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "3");
    // Back-off of 1 s then 2 s between the three runs.
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "relaunched too fast: {:?}",
        t.elapsed()
    );
    // Without supervise a failure is final.
    std::fs::remove_file(&counter).unwrap();
    let id = c.submit(&app, &[counter.to_str().unwrap()], false);
    let st = c.wait_state(&id, DriverState::Failed);
    // The submitter hears why and where its output is.
    let why = st.exception.unwrap_or_default();
    assert!(
        why.contains("exited with code 1") && why.contains("stdout and stderr are in"),
        "{why}"
    );
}

/// A supervised driver that replaces its own copy and fails is not run
/// again from the tampered copy: the hash is checked before every launch.
#[test]
fn a_supervised_relaunch_runs_only_the_submitted_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _ws) = cluster(dir.path(), 1);
    let runs = dir.path().join("runs");
    let app = script(
        dir.path(),
        "selfmod.sh",
        "echo run >> \"$1\"; printf '#!/bin/sh\\necho TAMPERED >> \"$1\"\\n' > \"$0\"; exit 1",
    );
    let sha = flint_deploy::sha256_file(&app).unwrap();
    let c = Client::new(m.port);
    let id = c.submit_checked(&app, &[runs.to_str().unwrap()], true, Some(sha));
    let st = c.wait_state(&id, DriverState::Error);
    assert!(
        st.exception.as_deref().unwrap_or("").contains("SHA-256"),
        "{st:?}"
    );
    let text = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(text, "run\n", "ran once, never the tampered copy: {text:?}");
}

#[test]
fn killing_a_driver_ends_its_process() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _ws) = cluster(dir.path(), 1);
    let app = script(dir.path(), "long.sh", "exec sleep 300");
    let c = Client::new(m.port);
    let id = c.submit(&app, &[], false);
    let work = dir.path().join("w0-work");
    let pids = poll("driver process", DEADLINE, || {
        let p = processes_under(&work);
        (!p.is_empty()).then_some(p)
    });
    let r: KillDriverResponse = c.ask(MasterMsg::RequestKillDriver {
        driver_id: id.clone(),
        user: "someone".into(),
    });
    assert!(
        r.success && r.message == format!("Kill request for {id} submitted"),
        "{}",
        r.message
    );
    c.wait_state(&id, DriverState::Killed);
    poll("driver process gone", DEADLINE, || {
        pids.iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
            .then_some(())
    });
    let r: KillDriverResponse = c.ask(MasterMsg::RequestKillDriver {
        driver_id: "driver-x".into(),
        user: "someone".into(),
    });
    assert!(!r.success && r.message.contains("has already finished or does not exist"));
    // A binary that cannot be fetched ends in ERROR with the reason.
    let id = c.submit(&dir.path().join("missing.sh"), &[], false);
    let st = c.wait_state(&id, DriverState::Error);
    assert!(
        st.exception
            .unwrap_or_default()
            .contains("cannot fetch application binary")
    );
}

#[test]
fn supervised_driver_is_relaunched_elsewhere_when_its_worker_dies() {
    let dir = tempfile::tempdir().unwrap();
    let (m, mut ws) = cluster(dir.path(), 2);
    let app = script(dir.path(), "long.sh", "exec sleep 300");
    let c = Client::new(m.port);
    let id = c.submit(&app, &[], true);
    let st = poll("driver placed", DEADLINE, || {
        let s = c.status(&id);
        (s.state == Some(DriverState::Running) && s.worker_id.is_some()).then_some(s)
    });
    let on = st.worker_id.unwrap();
    let victim = ws.iter().position(|w| w.id == on).unwrap();
    ws[victim].d.kill9();
    c.wait_state(&id, DriverState::Relaunching);
    let other = ws[1 - victim].id.clone();
    poll(
        "relaunched driver running on the other worker",
        DEADLINE,
        || {
            let j = get_json(m.web)?;
            j["activedrivers"]
                .as_array()?
                .iter()
                .any(|d| {
                    d["id"] != id.as_str()
                        && d["state"] == "RUNNING"
                        && d["worker"] == other.as_str()
                })
                .then_some(())
        },
    );
}

#[test]
fn a_driver_too_big_for_every_worker_waits_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _ws) = cluster(dir.path(), 1);
    let app = script(dir.path(), "big.sh", "true");
    let c = Client::new(m.port);
    let mut desc = description(&app, &[], false, None);
    desc.cores = 64;
    let r: SubmitDriverResponse = c.ask(MasterMsg::RequestSubmitDriver { desc });
    assert!(r.success, "{}", r.message);
    let id = r.driver_id.unwrap();
    poll("the master's warning", DEADLINE, || {
        std::fs::read_to_string(m.d.log_path())
            .ok()
            .filter(|t| t.contains(&format!("Driver {id} requires more resource")))
            .map(|_| ())
    });
    assert_eq!(c.status(&id).state, Some(DriverState::Submitted));
}

/// With `flint.acls.enable`, only users in the modify or admin ACL submit
/// drivers; a driver is killed by them or its submitter; an application by
/// them or the user who started it. Everything refused is logged.
#[test]
fn acls_decide_who_submits_and_kills() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(
        dir.path(),
        0,
        &[
            ("flint.acls.enable", "true"),
            ("flint.modify.acls", "alice, bob"),
            ("flint.admin.acls", "ops"),
        ],
    );
    let _w = start_worker(dir.path(), "w0", &m.url, 0, FAST);
    poll("worker ALIVE", DEADLINE, || {
        (get_json(m.web)?["aliveworkers"] == 1).then_some(())
    });
    // The driver runs as its submitter, not as the Worker's user.
    let who = dir.path().join("driver-user");
    let app = script(
        dir.path(),
        "long.sh",
        &format!("echo \"$FLINT_USER\" > {}; exec sleep 300", who.display()),
    );
    let c = Client::new(m.port);
    let r = c.submit_as("mallory", &app);
    assert!(
        !r.success
            && r.message
                .contains("User 'mallory' is not allowed to submit drivers"),
        "{}",
        r.message
    );
    assert!(c.submit_as("", &app).message.contains("not allowed"));
    assert!(
        c.submit_as("al\nice", &app)
            .message
            .contains("invalid user name")
    );
    let r = c.submit_as("alice", &app);
    assert!(r.success, "{}", r.message);
    let id = r.driver_id.unwrap();
    poll("the driver's user", DEADLINE, || {
        let u = std::fs::read_to_string(&who).ok()?;
        (u.trim() == "alice").then_some(())
    });
    let kill = |user: &str| -> KillDriverResponse {
        c.ask(MasterMsg::RequestKillDriver {
            driver_id: id.clone(),
            user: user.into(),
        })
    };
    let r = kill("mallory");
    assert!(
        !r.success && r.message.contains("not allowed to kill driver"),
        "{}",
        r.message
    );
    assert_ne!(c.status(&id).state, Some(DriverState::Killed));
    assert!(kill("ops").success, "an admin may kill any driver");
    c.wait_state(&id, DriverState::Killed);
    // Applications: an unlisted user cannot register one; bob's is killed
    // by bob, not by mallory, and only its driver's connection unregisters it.
    let app_as = |user: &str| flint_deploy::messages::ApplicationDescription {
        name: format!("{user}-app"),
        binary: None,
        max_cores: Some(1),
        memory_per_executor_mb: 64,
        cores_per_executor: Some(1),
        command: Command {
            program: "/bin/sleep".into(),
            args: vec!["300".into()],
            env: vec![],
        },
        app_ui_url: String::new(),
        event_log_dir: None,
        user: user.into(),
    };
    let log_has = |what: &str| {
        poll(what, DEADLINE, || {
            std::fs::read_to_string(m.d.log_path())
                .ok()?
                .contains(what)
                .then_some(())
        })
    };
    let dave = Client::new(m.port);
    dave.env
        .send(
            &dave.master,
            "Master",
            &MasterMsg::RegisterApplication {
                desc: app_as("dave"),
            },
        )
        .unwrap();
    log_has("User 'dave' is not allowed to register applications");
    c.env
        .send(
            &c.master,
            "Master",
            &MasterMsg::RegisterApplication {
                desc: app_as("bob"),
            },
        )
        .unwrap();
    let active = || -> Vec<String> {
        get_json(m.web).map_or(Vec::new(), |j| {
            j["activeapps"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        })
    };
    let app_id = poll("bob's application", DEADLINE, || {
        let j = get_json(m.web)?;
        j["activeapps"]
            .as_array()?
            .iter()
            .find_map(|a| (a["name"] == "bob-app").then(|| a["id"].as_str().map(str::to_string))?)
    });
    assert_eq!(active(), vec!["bob-app".to_string()], "dave's was refused");
    let kill_app = |user: &str| {
        c.env
            .send(
                &c.master,
                "Master",
                &MasterMsg::KillApplication {
                    app_id: app_id.clone(),
                    user: user.into(),
                },
            )
            .unwrap()
    };
    kill_app("mallory");
    log_has("User 'mallory' is not allowed to kill application");
    dave.env
        .send(
            &dave.master,
            "Master",
            &MasterMsg::UnregisterApplication {
                app_id: app_id.clone(),
            },
        )
        .unwrap();
    log_has("not its driver");
    assert_eq!(active(), vec!["bob-app".to_string()], "still running");
    kill_app("bob");
    poll("the application killed by its owner", DEADLINE, || {
        active().is_empty().then_some(())
    });
}

/// A driver whose binary is named by hash runs only a binary uploaded to the
/// Master (Workers fetch it from the Master, not from an address the
/// request names).
#[test]
fn a_submitted_binary_must_have_been_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let m = start_master(dir.path(), 0, &[]);
    let c = Client::new(m.port);
    let mut desc = description(Path::new("/bin/true"), &[], false, None);
    desc.binary = Some(flint_deploy::messages::BinaryRef {
        sha256: "ab".repeat(32),
        size: 10,
        source: RpcAddress::new("127.0.0.1", 9),
    });
    let r: SubmitDriverResponse = c.ask(MasterMsg::RequestSubmitDriver { desc });
    assert!(
        !r.success && r.message.contains("was not uploaded to this master"),
        "{}",
        r.message
    );
}
