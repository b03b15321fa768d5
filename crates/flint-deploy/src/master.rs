//! The Master daemon (Spark's Master): registers workers and applications, tracks
//! liveness, and places executors with `scheduling::schedule_executors_on_workers`.
//! All state lives in the `Master` actor; timers and the web UI talk to it by
//! message.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use flint_rpc::{Endpoint, EndpointCtx, LocalRef, Peer, Replier, RpcAddress, RpcConf, RpcEnv};

use crate::messages::*;
use crate::scheduling::{AppDemand, WorkerFree, schedule_executors_on_workers};

#[derive(Clone, Debug)]
pub struct MasterConf {
    pub host: String,
    pub port: u16,
    pub webui_port: u16,
    /// `flint.worker.timeout` (60 s): silence after which a worker is DEAD.
    pub worker_timeout: Duration,
    /// `flint.deploy.spreadOut` (true).
    pub spread_out: bool,
    /// `flint.deploy.maxExecutorRetries` (10; negative disables).
    pub max_executor_retries: i32,
    /// `flint.dead.worker.persistence` (15): timeouts a DEAD worker stays listed.
    pub reaper_iterations: u32,
    /// `flint.deploy.retainedApplications` (200).
    pub retained_applications: usize,
    /// `flint.deploy.defaultCores`: cores for apps that set no maximum.
    pub default_cores: u32,
    pub rpc: RpcConf,
    /// Where uploaded application binaries are kept (by hash); None: a
    /// temporary directory removed when the master stops.
    pub binaries_dir: Option<std::path::PathBuf>,
    /// `flint.acls.enable` (off: None) with its lists.
    pub acls: Option<Acls>,
    /// `flint.deploy.retainedBinaries` (10): uploaded binaries kept beyond
    /// those of waiting and running drivers, most recently used first.
    pub retained_binaries: usize,
}

/// Spark's ACLs as the Master applies them: with `flint.acls.enable`, only
/// users in `flint.admin.acls` or `flint.modify.acls` (`*`: anyone) may
/// submit drivers, and a driver or application may be killed by them or by
/// the user who started it. A user is who an authenticated client says it
/// is: with one shared cluster secret, ACLs keep honest users apart, not
/// holders of the secret.
#[derive(Clone, Debug, Default)]
pub struct Acls {
    pub admin: Vec<String>,
    pub modify: Vec<String>,
}

impl Acls {
    /// From the comma-separated lists of `flint.admin.acls` and
    /// `flint.modify.acls`.
    pub fn from_lists(admin: &str, modify: &str) -> Self {
        let list = |s: &str| {
            s.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect()
        };
        Acls {
            admin: list(admin),
            modify: list(modify),
        }
    }

    fn may_modify(&self, user: &str) -> bool {
        !user.is_empty()
            && self
                .admin
                .iter()
                .chain(&self.modify)
                .any(|u| u == "*" || u == user)
    }
}

/// Whether `user` may act on something `owner` started: always without ACLs.
fn permitted(acls: &Option<Acls>, user: &str, owner: Option<&str>) -> bool {
    match acls {
        None => true,
        Some(a) => a.may_modify(user) || (!user.is_empty() && owner == Some(user)),
    }
}

/// A user name becomes a driver's `FLINT_USER` and appears in logs: visible and bounded.
fn check_user(user: &str) -> Result<(), String> {
    // No control characters, line breaks, or the invisible format, filler and
    // direction marks that could make a name (or a log line it appears in)
    // read as something else; letters of any script and spaces are fine.
    let invisible = |c: char| {
        matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
    };
    let bad = |c: char| c.is_control() || (c.is_whitespace() && c != ' ') || invisible(c);
    if user.len() > 256 || user.chars().any(bad) {
        return Err(format!(
            "invalid user name {:?}: at most 256 bytes, without control characters, line breaks or invisible marks (set FLINT_USER to the name to use)",
            user.chars().take(64).collect::<String>()
        ));
    }
    Ok(())
}

/// Why `user` may not start work on the cluster (`what`), if they may not.
fn refuse_user(acls: &Option<Acls>, user: &str, what: &str) -> Option<String> {
    check_user(user)
        .err()
        .or_else(|| (!permitted(acls, user, None)).then(|| refusal(user, what)))
}

fn refusal(user: &str, what: &str) -> String {
    format!(
        "User '{user}' is not allowed to {what}: flint.acls.enable is on; add the user to flint.modify.acls or flint.admin.acls on the Master"
    )
}

impl Default for MasterConf {
    fn default() -> Self {
        MasterConf {
            host: "127.0.0.1".into(),
            port: 7077,
            webui_port: 8080,
            worker_timeout: Duration::from_secs(60),
            spread_out: true,
            max_executor_retries: 10,
            reaper_iterations: 15,
            retained_applications: 200,
            default_cores: u32::MAX,
            rpc: RpcConf::default(),
            binaries_dir: None,
            acls: None,
            retained_binaries: 10,
        }
    }
}

struct WorkerInfo {
    id: String,
    host: String,
    port: u16,
    addr: RpcAddress,
    cores: u32,
    memory_mb: u64,
    webui: String,
    state: WorkerState,
    cores_used: u32,
    memory_used: u64,
    last_heartbeat: Instant,
    last_heartbeat_ms: i64,
    executors: HashSet<(String, u32)>,
    drivers: HashSet<String>,
}

impl WorkerInfo {
    /// Gives back what an executor or driver held.
    fn release(&mut self, cores: u32, memory_mb: u64) {
        self.cores_used = self.cores_used.saturating_sub(cores);
        self.memory_used = self.memory_used.saturating_sub(memory_mb);
    }

    fn cores_free(&self) -> u32 {
        self.cores.saturating_sub(self.cores_used)
    }
    fn memory_free(&self) -> u64 {
        self.memory_mb.saturating_sub(self.memory_used)
    }
}

struct ExecInfo {
    worker_id: String,
    cores: u32,
    memory_mb: u64,
    state: ExecutorState,
}

struct AppInfo {
    id: String,
    desc: ApplicationDescription,
    driver: RpcAddress,
    state: ApplicationState,
    executors: BTreeMap<u32, ExecInfo>,
    cores_granted: u32,
    next_exec_id: u32,
    retry_count: i32,
    start_ms: i64,
    submit_date: String,
    end_ms: Option<i64>,
    requested_cores: u32,
    /// Executors the driver wants in all (`RequestExecutors`); none are
    /// launched past it.
    executor_limit: usize,
}

impl AppInfo {
    fn cores_left(&self) -> u32 {
        self.requested_cores.saturating_sub(self.cores_granted)
    }

    fn summary(&self) -> AppSummary {
        AppSummary {
            id: self.id.clone(),
            starttime: self.start_ms,
            name: self.desc.name.clone(),
            cores: self.cores_granted,
            user: self.desc.user.clone(),
            memoryperexecutor: self.desc.memory_per_executor_mb,
            submitdate: self.submit_date.clone(),
            state: self.state,
            duration: self.end_ms.unwrap_or_else(now_ms) - self.start_ms,
        }
    }
}

struct DriverInfo {
    id: String,
    desc: DriverDescription,
    state: DriverState,
    worker: Option<String>,
    exception: Option<String>,
    start_ms: i64,
    submit_date: String,
}

impl DriverInfo {
    fn summary(&self) -> DriverSummary {
        DriverSummary {
            id: self.id.clone(),
            starttime: self.start_ms,
            state: self.state,
            cores: self.desc.cores,
            memory: self.desc.memory_mb,
            submitdate: self.submit_date.clone(),
            worker: self.worker.clone().unwrap_or_else(|| "None".into()),
            mainclass: self.desc.main_class(),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub struct Master {
    conf: MasterConf,
    /// How late each worker-timeout check runs (see `LateCheck`).
    timeout_check: crate::LateCheck,
    url: String,
    address: RpcAddress,
    webui_url: String,
    state: RecoveryState,
    workers: BTreeMap<String, WorkerInfo>,
    address_to_worker: HashMap<RpcAddress, String>,
    apps: HashMap<String, AppInfo>,
    waiting_apps: Vec<String>,
    completed_apps: Vec<AppInfo>,
    address_to_app: HashMap<RpcAddress, String>,
    next_app_number: u32,
    drivers: BTreeMap<String, DriverInfo>,
    waiting_drivers: Vec<String>,
    completed_drivers: Vec<DriverInfo>,
    next_driver_number: u32,
    shuffle_seed: u64,
    binaries_dir: std::path::PathBuf,
    served: crate::binaries::Served,
    uploads: crate::binaries::Uploads,
}

/// A running master: its RPC environment, its actor and its bound ports.
pub struct MasterHandle {
    pub env: RpcEnv,
    pub master: LocalRef<MasterMsg>,
    pub url: String,
    pub address: RpcAddress,
    pub webui_port: u16,
    /// A temporary binaries directory (no `--binaries-dir`), removed when
    /// the handle is dropped: the actor itself may never be, and a process
    /// that exits runs no destructors of what its runtime still holds.
    _binaries_tmp: Option<tempfile::TempDir>,
}

impl Master {
    /// Binds the RPC port and the web UI, starts the actor and its timers.
    pub async fn start(conf: MasterConf) -> Result<MasterHandle, String> {
        let web_tls = conf.rpc.tls.clone();
        let env = RpcEnv::server(&conf.host, conf.port, &conf.host, conf.rpc.clone())
            .await
            .map_err(|e| e.to_string())?;
        let address = env.address().cloned().ok_or("no bound address")?;
        let url = format!("flint://{address}");
        let listener = tokio::net::TcpListener::bind((conf.host.as_str(), conf.webui_port))
            .await
            .map_err(|e| {
                format!(
                    "cannot bind the web UI on {}:{}: {e}",
                    conf.host, conf.webui_port
                )
            })?;
        let webui_port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (binaries_dir, binaries_tmp) = match &conf.binaries_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("flint-master-binaries-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a directory for binaries: {e}"))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let served = crate::binaries::Served::default();
        // A kept directory still holds the last run's uploads: supervised
        // drivers relaunched later need them.
        served.load(&binaries_dir);
        env.setup_endpoint(
            crate::binaries::BINARY_ENDPOINT,
            crate::binaries::BinaryServer(served.clone()),
        );
        let master = Master {
            binaries_dir,
            served,
            uploads: crate::binaries::Uploads::default(),
            url: url.clone(),
            address: address.clone(),
            webui_url: format!("http://{}:{webui_port}", conf.host),
            state: RecoveryState::Alive,
            workers: BTreeMap::new(),
            address_to_worker: HashMap::new(),
            apps: HashMap::new(),
            waiting_apps: Vec::new(),
            completed_apps: Vec::new(),
            address_to_app: HashMap::new(),
            next_app_number: 0,
            drivers: BTreeMap::new(),
            waiting_drivers: Vec::new(),
            completed_drivers: Vec::new(),
            next_driver_number: 0,
            shuffle_seed: {
                use std::hash::{BuildHasher, Hasher};
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            },
            timeout_check: crate::LateCheck::new(conf.worker_timeout),
            conf,
        };
        let master_ref = env.setup_endpoint(MASTER_ENDPOINT, master);
        crate::webui::serve_master(listener, web_tls, master_ref.clone());
        tracing::info!("Starting Flint master at {url}; web UI at port {webui_port}");
        Ok(MasterHandle {
            env,
            master: master_ref,
            url,
            address,
            webui_port,
            _binaries_tmp: binaries_tmp,
        })
    }

    fn send_worker(&self, ctx: &EndpointCtx<MasterMsg>, addr: &RpcAddress, msg: &WorkerMsg) {
        if let Err(e) = ctx.env.send(addr, WORKER_ENDPOINT, msg) {
            tracing::warn!("cannot send to worker at {addr}: {e}");
        }
    }

    fn send_app(&self, ctx: &EndpointCtx<MasterMsg>, addr: &RpcAddress, msg: &AppClientMsg) {
        if let Err(e) = ctx.env.send(addr, APP_CLIENT_ENDPOINT, msg) {
            tracing::warn!("cannot send to application at {addr}: {e}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn register_worker(
        &mut self,
        ctx: &EndpointCtx<MasterMsg>,
        from: RpcAddress,
        id: String,
        host: String,
        port: u16,
        cores: u32,
        memory_mb: u64,
        webui: String,
        master_address: RpcAddress,
    ) {
        if self.state == RecoveryState::Standby {
            self.send_worker(ctx, &from, &WorkerMsg::MasterInStandby);
            return;
        }
        tracing::info!("Registering worker {host}:{port} with {cores} cores, {memory_mb} MiB RAM");
        if let Some(w) = self.workers.get(&id)
            && w.state != WorkerState::Dead
        {
            self.send_worker(ctx, &from, &self.registered(master_address, true));
            return;
        }
        // A DEAD entry at the same host and port is replaced by the newcomer.
        self.workers
            .retain(|_, w| !(w.state == WorkerState::Dead && w.host == host && w.port == port));
        if let Some(other) = self.address_to_worker.get(&from)
            && self
                .workers
                .get(other)
                .is_some_and(|w| w.state != WorkerState::Dead)
        {
            let message = format!("Attempted to re-register worker at same address: {from}");
            tracing::warn!("{message}");
            self.send_worker(ctx, &from, &WorkerMsg::RegisterWorkerFailed { message });
            return;
        }
        self.address_to_worker.insert(from.clone(), id.clone());
        self.workers.insert(
            id.clone(),
            WorkerInfo {
                id,
                host,
                port,
                addr: from.clone(),
                cores,
                memory_mb,
                webui,
                state: WorkerState::Alive,
                cores_used: 0,
                memory_used: 0,
                last_heartbeat: Instant::now(),
                last_heartbeat_ms: now_ms(),
                executors: HashSet::new(),
                drivers: HashSet::new(),
            },
        );
        self.send_worker(ctx, &from, &self.registered(master_address, false));
        self.schedule(ctx);
    }

    fn registered(&self, master_address: RpcAddress, duplicate: bool) -> WorkerMsg {
        WorkerMsg::RegisteredWorker {
            master: self.address.clone(),
            master_web_ui_url: self.webui_url.clone(),
            master_address,
            duplicate,
        }
    }

    fn remove_worker(&mut self, ctx: &EndpointCtx<MasterMsg>, id: &str, msg: &str) {
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        if w.state == WorkerState::Dead {
            return;
        }
        tracing::info!("Removing worker {id} on {}:{}: {msg}", w.host, w.port);
        w.state = WorkerState::Dead;
        let host = w.host.clone();
        let addr = w.addr.clone();
        let execs: Vec<(String, u32)> = w.executors.drain().collect();
        let drivers: Vec<String> = w.drivers.drain().collect();
        w.cores_used = 0;
        w.memory_used = 0;
        self.address_to_worker.remove(&addr);
        for d in drivers {
            let supervise = self.drivers.get(&d).is_some_and(|x| x.desc.supervise);
            if supervise {
                tracing::info!("Re-launching {d}");
                self.relaunch_driver(&d);
            } else {
                self.remove_driver(ctx, &d, DriverState::Error, None);
            }
        }
        for (app_id, exec_id) in execs {
            if let Some(app) = self.apps.get_mut(&app_id) {
                if let Some(e) = app.executors.remove(&exec_id) {
                    app.cores_granted = app.cores_granted.saturating_sub(e.cores);
                }
                let driver = app.driver.clone();
                self.send_app(
                    ctx,
                    &driver,
                    &AppClientMsg::ExecutorUpdated {
                        id: exec_id,
                        state: ExecutorState::Lost,
                        message: Some(format!("worker lost: {msg}")),
                        exit_status: None,
                        worker_host: Some(host.clone()),
                    },
                );
            }
        }
        let drivers: Vec<RpcAddress> = self.apps.values().map(|a| a.driver.clone()).collect();
        for d in drivers {
            self.send_app(
                ctx,
                &d,
                &AppClientMsg::WorkerRemoved {
                    id: id.to_string(),
                    host: host.clone(),
                    message: msg.to_string(),
                },
            );
        }
        self.schedule(ctx);
    }

    fn new_app_id(&mut self) -> String {
        let ts = chrono::Local::now().format("%Y%m%d%H%M%S");
        let id = format!("app-{ts}-{:04}", self.next_app_number);
        self.next_app_number += 1;
        id
    }

    fn register_application(
        &mut self,
        ctx: &EndpointCtx<MasterMsg>,
        from: RpcAddress,
        mut desc: ApplicationDescription,
    ) {
        if self.state == RecoveryState::Standby {
            return;
        }
        if let Some(existing) = self.address_to_app.get(&from) {
            tracing::warn!(
                "application at {from} is already registered as {existing}; ignoring the new registration"
            );
            return;
        }
        // Workers fetch an application's binary from its driver: the one
        // that registered, whatever address the description names.
        if let Some(b) = &mut desc.binary {
            b.source = from.clone();
        }
        let refused = refuse_user(&self.conf.acls, &desc.user, "register applications").or_else(
            || {
                // Executors with no cores or memory could run nothing, and
                // would be launched again and again.
                (desc.cores_per_executor == Some(0)
                    || desc.max_cores == Some(0)
                    || desc.memory_per_executor_mb == 0)
                    .then(|| {
                        format!(
                            "application {} asks for executors with no cores or no memory (flint.executor.cores, flint.cores.max and flint.executor.memory must be positive)",
                            desc.name
                        )
                    })
            },
        );
        if let Some(message) = refused {
            tracing::warn!("{message} (from {from})");
            self.send_app(ctx, &from, &AppClientMsg::ApplicationRemoved { message });
            return;
        }
        let id = self.new_app_id();
        tracing::info!("Registering app {} as {id}", desc.name);
        let requested = desc.max_cores.unwrap_or(self.conf.default_cores);
        let app = AppInfo {
            id: id.clone(),
            driver: from.clone(),
            state: ApplicationState::Waiting,
            executors: BTreeMap::new(),
            cores_granted: 0,
            next_exec_id: 0,
            retry_count: 0,
            start_ms: now_ms(),
            submit_date: chrono::Utc::now().to_rfc2822(),
            end_ms: None,
            requested_cores: requested,
            executor_limit: usize::MAX,
            desc,
        };
        self.apps.insert(id.clone(), app);
        self.waiting_apps.push(id.clone());
        self.address_to_app.insert(from.clone(), id.clone());
        self.send_app(
            ctx,
            &from,
            &AppClientMsg::RegisteredApplication {
                app_id: id,
                master: self.address.clone(),
            },
        );
        self.schedule(ctx);
    }

    /// An application's driver ends executors of its own (only over the
    /// connection it registered from); the freed cores go to scheduling.
    fn kill_executors(
        &mut self,
        ctx: &EndpointCtx<MasterMsg>,
        from: &RpcAddress,
        app_id: &str,
        executor_ids: Vec<u32>,
    ) {
        let Some(app) = self.apps.get_mut(app_id) else {
            return;
        };
        if &app.driver != from {
            tracing::warn!("refusing to kill executors of {app_id} for {from}: not its driver");
            return;
        }
        let mut removed = Vec::new();
        for exec_id in executor_ids {
            let Some(e) = app.executors.remove(&exec_id) else {
                continue;
            };
            app.cores_granted = app.cores_granted.saturating_sub(e.cores);
            tracing::info!("Killing executor {app_id}/{exec_id} at its driver's request");
            removed.push((exec_id, e));
        }
        for (exec_id, e) in removed {
            self.kill_on_worker(ctx, app_id, exec_id, &e);
        }
        self.schedule(ctx);
    }

    /// Frees an executor's resources on its worker and tells the worker to
    /// end it.
    fn kill_on_worker(
        &mut self,
        ctx: &EndpointCtx<MasterMsg>,
        app_id: &str,
        exec_id: u32,
        e: &ExecInfo,
    ) {
        let Some(w) = self.workers.get_mut(&e.worker_id) else {
            return;
        };
        w.executors.remove(&(app_id.to_string(), exec_id));
        w.release(e.cores, e.memory_mb);
        let addr = w.addr.clone();
        self.send_worker(
            ctx,
            &addr,
            &WorkerMsg::KillExecutor {
                master_url: self.url.clone(),
                app_id: app_id.to_string(),
                exec_id,
            },
        );
    }

    fn remove_application(
        &mut self,
        ctx: &EndpointCtx<MasterMsg>,
        app_id: &str,
        state: ApplicationState,
    ) {
        let Some(mut app) = self.apps.remove(app_id) else {
            return;
        };
        tracing::info!("Removing app {app_id} ({state:?})");
        self.waiting_apps.retain(|a| a != app_id);
        self.address_to_app.remove(&app.driver);
        let execs: Vec<(u32, ExecInfo)> = std::mem::take(&mut app.executors).into_iter().collect();
        for (exec_id, e) in execs {
            self.kill_on_worker(ctx, app_id, exec_id, &e);
        }
        app.state = state;
        app.end_ms = Some(now_ms());
        if state != ApplicationState::Finished {
            let driver = app.driver.clone();
            self.send_app(
                ctx,
                &driver,
                &AppClientMsg::ApplicationRemoved {
                    message: format!("{state:?}").to_uppercase(),
                },
            );
        }
        if self.completed_apps.len() >= self.conf.retained_applications {
            let drop = (self.conf.retained_applications / 10).max(1);
            self.completed_apps
                .drain(..drop.min(self.completed_apps.len()));
        }
        self.completed_apps.push(app);
        let alive: Vec<RpcAddress> = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Alive)
            .map(|w| w.addr.clone())
            .collect();
        for addr in alive {
            self.send_worker(
                ctx,
                &addr,
                &WorkerMsg::ApplicationFinished {
                    id: app_id.to_string(),
                },
            );
        }
        self.schedule(ctx);
    }

    fn executor_state_changed(
        &mut self,
        ctx: &EndpointCtx<MasterMsg>,
        app_id: String,
        exec_id: u32,
        state: ExecutorState,
        message: Option<String>,
        exit_status: Option<i32>,
    ) {
        let Some(app) = self.apps.get_mut(&app_id) else {
            // The usual end of an application: its executors report their
            // end after the Master has let it go.
            if self.completed_apps.iter().any(|a| a.id == app_id) {
                tracing::debug!(
                    "status update for executor {app_id}/{exec_id} of a finished application"
                );
            } else {
                tracing::warn!("Got status update for unknown executor {app_id}/{exec_id}");
            }
            return;
        };
        let Some(exec) = app.executors.get_mut(&exec_id) else {
            // Already removed (its driver asked for it to be killed).
            tracing::debug!("Got status update for unknown executor {app_id}/{exec_id}");
            return;
        };
        exec.state = state;
        if state == ExecutorState::Running {
            app.retry_count = 0;
        }
        let driver = app.driver.clone();
        self.send_app(
            ctx,
            &driver,
            &AppClientMsg::ExecutorUpdated {
                id: exec_id,
                state,
                message: message.clone(),
                exit_status,
                worker_host: None,
            },
        );
        if !state.is_finished() {
            return;
        }
        tracing::info!("Removing executor {app_id}/{exec_id} because it is {state:?}");
        let Some(app) = self.apps.get_mut(&app_id) else {
            return;
        };
        if let Some(e) = app.executors.remove(&exec_id) {
            app.cores_granted = app.cores_granted.saturating_sub(e.cores);
            if let Some(w) = self.workers.get_mut(&e.worker_id) {
                w.executors.remove(&(app_id.clone(), exec_id));
                w.release(e.cores, e.memory_mb);
            }
        }
        let max = self.conf.max_executor_retries;
        if exit_status != Some(0) && max >= 0 {
            app.retry_count += 1;
            if app.retry_count >= max
                && !app
                    .executors
                    .values()
                    .any(|e| e.state == ExecutorState::Running)
            {
                tracing::error!(
                    "Application {} with ID {app_id} failed {} times; removing it",
                    app.desc.name,
                    app.retry_count
                );
                self.remove_application(ctx, &app_id, ApplicationState::Failed);
                return;
            }
        }
        self.schedule(ctx);
    }

    fn new_driver_id(&mut self) -> String {
        let ts = chrono::Local::now().format("%Y%m%d%H%M%S");
        let id = format!("driver-{ts}-{:04}", self.next_driver_number);
        self.next_driver_number += 1;
        id
    }

    fn add_driver(&mut self, desc: DriverDescription) -> String {
        let id = self.new_driver_id();
        if let Some(b) = &desc.binary {
            self.served.touch(&b.sha256);
        }
        self.drivers.insert(
            id.clone(),
            DriverInfo {
                id: id.clone(),
                desc,
                state: DriverState::Submitted,
                worker: None,
                exception: None,
                start_ms: now_ms(),
                submit_date: chrono::Utc::now().to_rfc2822(),
            },
        );
        self.waiting_drivers.push(id.clone());
        id
    }

    /// A supervised driver whose worker is gone starts again under a new id, so
    /// late reports from the old one cannot touch it (SPARK-19900).
    fn relaunch_driver(&mut self, old: &str) {
        let Some(mut d) = self.drivers.remove(old) else {
            return;
        };
        let desc = d.desc.clone();
        d.state = DriverState::Relaunching;
        d.worker = None;
        self.completed_drivers.push(d);
        let new_id = self.add_driver(desc);
        tracing::info!("Driver {old} relaunched as {new_id}");
    }

    fn remove_driver(
        &mut self,
        ctx: &EndpointCtx<MasterMsg>,
        id: &str,
        state: DriverState,
        exception: Option<String>,
    ) {
        let Some(mut d) = self.drivers.remove(id) else {
            tracing::warn!("Asked to remove unknown driver: {id}");
            return;
        };
        tracing::info!("Removing driver: {id} ({state:?})");
        self.waiting_drivers.retain(|x| x != id);
        if let Some(w) = d.worker.as_ref().and_then(|w| self.workers.get_mut(w)) {
            w.drivers.remove(id);
            w.release(d.desc.cores, d.desc.memory_mb);
        }
        d.state = state;
        d.exception = exception;
        if self.completed_drivers.len() >= 200 {
            self.completed_drivers.drain(..20);
        }
        self.completed_drivers.push(d);
        self.prune_binaries();
        self.schedule(ctx);
    }

    /// Keeps the binaries of waiting and running drivers and the
    /// `retained_binaries` most recently used others; deletes the rest.
    fn prune_binaries(&mut self) {
        let needed: std::collections::HashSet<String> = self
            .drivers
            .values()
            .filter_map(|d| d.desc.binary.as_ref().map(|b| b.sha256.clone()))
            .collect();
        for sha in self
            .served
            .prune(&needed, self.conf.retained_binaries.max(1))
        {
            tracing::info!("removed uploaded binary {sha} (flint.deploy.retainedBinaries)");
        }
    }

    /// Drivers first: ALIVE workers in random order, visited round robin from a
    /// shared cursor; the first with enough free memory and cores runs it.
    fn schedule_drivers(&mut self, ctx: &EndpointCtx<MasterMsg>) {
        let mut alive: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Alive)
            .map(|w| w.id.clone())
            .collect();
        // Fisher-Yates with a SplitMix step; reseeded each call.
        for i in (1..alive.len()).rev() {
            self.shuffle_seed = self.shuffle_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.shuffle_seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^= z >> 31;
            alive.swap(i, (z % (i as u64 + 1)) as usize);
        }
        let n = alive.len();
        let mut cursor = 0;
        for driver_id in self.waiting_drivers.clone() {
            let Some(d) = self.drivers.get(&driver_id) else {
                continue;
            };
            let (mem, cores) = (d.desc.memory_mb, d.desc.cores);
            let mut launched = false;
            let mut visited = 0;
            while visited < n && !launched {
                let wid = alive[cursor].clone();
                if let Some(w) = self.workers.get_mut(&wid)
                    && w.memory_free() >= mem
                    && w.cores_free() >= cores
                {
                    w.cores_used += cores;
                    w.memory_used += mem;
                    w.drivers.insert(driver_id.clone());
                    let addr = w.addr.clone();
                    if let Some(d) = self.drivers.get_mut(&driver_id) {
                        d.worker = Some(wid.clone());
                        d.state = DriverState::Running;
                        tracing::info!("Launching driver {driver_id} on worker {wid}");
                        let msg = WorkerMsg::LaunchDriver {
                            driver_id: driver_id.clone(),
                            desc: d.desc.clone(),
                        };
                        self.send_worker(ctx, &addr, &msg);
                    }
                    self.waiting_drivers.retain(|x| x != &driver_id);
                    launched = true;
                }
                cursor = (cursor + 1) % n;
                visited += 1;
            }
            let idle = self
                .workers
                .values()
                .filter(|w| w.state == WorkerState::Alive)
                .all(|w| w.executors.is_empty() && w.drivers.is_empty());
            if !launched && idle {
                tracing::warn!(
                    "Driver {driver_id} requires more resource than any of Workers could have."
                );
            }
        }
    }

    /// Spark's schedule(): drivers first, then executors for waiting
    /// applications in FIFO order.
    fn schedule(&mut self, ctx: &EndpointCtx<MasterMsg>) {
        if self.state != RecoveryState::Alive {
            return;
        }
        self.schedule_drivers(ctx);
        for app_id in self.waiting_apps.clone() {
            let Some(app) = self.apps.get(&app_id) else {
                continue;
            };
            let cpe = app.desc.cores_per_executor;
            let mem = app.desc.memory_per_executor_mb;
            let executor_limit = app.executor_limit.saturating_sub(app.executors.len());
            if app.cores_left() < cpe.unwrap_or(1) || executor_limit == 0 {
                continue;
            }
            let mut usable: Vec<&WorkerInfo> = self
                .workers
                .values()
                .filter(|w| {
                    w.state == WorkerState::Alive
                        && w.memory_free() >= mem
                        && w.cores_free() >= cpe.unwrap_or(1)
                })
                .collect();
            usable.sort_by(|a, b| {
                b.cores_free()
                    .cmp(&a.cores_free())
                    .then_with(|| a.id.cmp(&b.id))
            });
            if usable.is_empty() && self.waiting_apps.len() == 1 && app.executors.is_empty() {
                tracing::warn!(
                    "App {app_id} requires more resource than any of Workers could have."
                );
            }
            let frees: Vec<WorkerFree> = usable
                .iter()
                .map(|w| WorkerFree {
                    cores_free: w.cores_free(),
                    memory_free_mb: w.memory_free(),
                })
                .collect();
            let demand = AppDemand {
                cores_left: app.cores_left(),
                cores_per_executor: cpe,
                memory_per_executor_mb: mem,
                executor_limit,
            };
            let assigned = schedule_executors_on_workers(demand, &frees, self.conf.spread_out);
            let ids: Vec<String> = usable.iter().map(|w| w.id.clone()).collect();
            for (wid, cores) in ids.into_iter().zip(assigned) {
                if cores > 0 {
                    self.allocate(ctx, &app_id, &wid, cores);
                }
            }
        }
    }

    fn allocate(
        &mut self,
        ctx: &EndpointCtx<MasterMsg>,
        app_id: &str,
        worker_id: &str,
        assigned: u32,
    ) {
        let (Some(app), Some(w)) = (self.apps.get_mut(app_id), self.workers.get_mut(worker_id))
        else {
            return;
        };
        let cpe = app.desc.cores_per_executor;
        let n = cpe.map(|c| assigned / c.max(1)).unwrap_or(1);
        let cores = cpe.unwrap_or(assigned);
        let mem = app.desc.memory_per_executor_mb;
        for _ in 0..n {
            let exec_id = app.next_exec_id;
            app.next_exec_id += 1;
            app.cores_granted += cores;
            app.executors.insert(
                exec_id,
                ExecInfo {
                    worker_id: worker_id.to_string(),
                    cores,
                    memory_mb: mem,
                    state: ExecutorState::Launching,
                },
            );
            app.state = ApplicationState::Running;
            w.cores_used += cores;
            w.memory_used += mem;
            w.executors.insert((app_id.to_string(), exec_id));
            tracing::info!("Launching executor {app_id}/{exec_id} on worker {worker_id}");
            let launch = WorkerMsg::LaunchExecutor {
                master_url: self.url.clone(),
                app_id: app_id.to_string(),
                exec_id,
                app_desc: app.desc.clone(),
                cores,
                memory_mb: mem,
            };
            if let Err(e) = ctx.env.send(&w.addr, WORKER_ENDPOINT, &launch) {
                tracing::warn!("cannot send LaunchExecutor to {}: {e}", w.addr);
            }
            let added = AppClientMsg::ExecutorAdded {
                id: exec_id,
                worker_id: worker_id.to_string(),
                host_port: format!("{}:{}", w.host, w.port),
                cores,
                memory_mb: mem,
            };
            if let Err(e) = ctx.env.send(&app.driver, APP_CLIENT_ENDPOINT, &added) {
                tracing::warn!("cannot send ExecutorAdded to {}: {e}", app.driver);
            }
        }
    }

    fn check_worker_timeouts(&mut self, ctx: &EndpointCtx<MasterMsg>) {
        let timeout = self.conf.worker_timeout;
        let reap = timeout * (self.conf.reaper_iterations + 1);
        let now = Instant::now();
        let late = self.timeout_check.lateness(now);
        if late > Duration::from_millis(500) {
            tracing::warn!(
                "the master did not run for {} ms (stopped or starved of CPU): workers' heartbeat deadlines extended by as much",
                late.as_millis()
            );
        }
        for w in self.workers.values_mut() {
            crate::excuse(&mut w.last_heartbeat, late, now);
        }
        let expired: Vec<String> = self
            .workers
            .values()
            .filter(|w| {
                w.state != WorkerState::Dead && now.duration_since(w.last_heartbeat) > timeout
            })
            .map(|w| w.id.clone())
            .collect();
        for id in expired {
            let msg = format!("Not receiving heartbeat for {} seconds", timeout.as_secs());
            tracing::warn!(
                "Removing worker {id} because we got no heartbeat in {} seconds",
                timeout.as_secs()
            );
            self.remove_worker(ctx, &id, &msg);
        }
        self.workers.retain(|_, w| {
            !(w.state == WorkerState::Dead && now.duration_since(w.last_heartbeat) > reap)
        });
    }

    fn state_response(&self) -> MasterStateResponse {
        let workers: Vec<WorkerSummary> = self
            .workers
            .values()
            .map(|w| WorkerSummary {
                id: w.id.clone(),
                host: w.host.clone(),
                port: w.port,
                webuiaddress: w.webui.clone(),
                cores: w.cores,
                coresused: w.cores_used,
                coresfree: w.cores_free(),
                memory: w.memory_mb,
                memoryused: w.memory_used,
                memoryfree: w.memory_free(),
                state: w.state,
                lastheartbeat: w.last_heartbeat_ms,
            })
            .collect();
        let alive = || {
            self.workers
                .values()
                .filter(|w| w.state == WorkerState::Alive)
        };
        let mut active: Vec<AppSummary> = self.apps.values().map(AppInfo::summary).collect();
        active.sort_by(|a, b| a.id.cmp(&b.id));
        MasterStateResponse {
            url: self.url.clone(),
            aliveworkers: alive().count(),
            // Saturating: a worker's claimed sizes must not overflow a sum.
            cores: alive().fold(0, |a, w| a.saturating_add(w.cores)),
            coresused: alive().fold(0, |a, w| a.saturating_add(w.cores_used)),
            memory: alive().fold(0, |a, w| a.saturating_add(w.memory_mb)),
            memoryused: alive().fold(0, |a, w| a.saturating_add(w.memory_used)),
            workers,
            activeapps: active,
            completedapps: self.completed_apps.iter().map(AppInfo::summary).collect(),
            activedrivers: self.drivers.values().map(DriverInfo::summary).collect(),
            completeddrivers: self
                .completed_drivers
                .iter()
                .map(DriverInfo::summary)
                .collect(),
            status: self.state,
        }
    }
}

impl Endpoint for Master {
    type Msg = MasterMsg;

    fn on_start(&mut self, ctx: &EndpointCtx<MasterMsg>) {
        ctx.send_self_after(self.conf.worker_timeout, MasterMsg::CheckForWorkerTimeOut);
    }

    fn receive(
        &mut self,
        ctx: &EndpointCtx<MasterMsg>,
        peer: Peer,
        msg: MasterMsg,
        reply: Option<Replier>,
    ) {
        // With authentication on (flint.authenticate.secret), every peer has
        // proved it holds the cluster's secret before any message arrives.
        // Reports about executors and drivers must come from the worker that
        // runs them; timers only from inside.
        let from = peer.addr;
        let from_worker = self.address_to_worker.get(&from).cloned();
        let refused = match &msg {
            MasterMsg::CheckForWorkerTimeOut => peer.via != flint_rpc::Via::Local,
            MasterMsg::ExecutorStateChanged {
                app_id, exec_id, ..
            } => {
                let runs_it = self
                    .apps
                    .get(app_id)
                    .and_then(|a| a.executors.get(exec_id))
                    .map(|e| Some(&e.worker_id) == from_worker.as_ref());
                runs_it == Some(false)
            }
            MasterMsg::DriverStateChanged { driver_id, .. } => {
                let runs_it = self
                    .drivers
                    .get(driver_id)
                    .map(|d| d.worker.is_some() && d.worker == from_worker);
                runs_it == Some(false)
            }
            MasterMsg::Heartbeat { worker_id }
            | MasterMsg::WorkerLatestState { id: worker_id, .. } => {
                from_worker.as_ref().is_some_and(|w| w != worker_id)
            }
            _ => false,
        };
        if refused {
            tracing::warn!(
                "refusing a message from {from}: it may only come from the worker (or timer) it concerns: {msg:?}"
            );
            if let Some(r) = reply {
                r.fail("refused: not from the worker this concerns");
            }
            return;
        }
        match msg {
            MasterMsg::RegisterWorker {
                id,
                host,
                port,
                cores,
                memory_mb,
                webui_address,
                master_address,
            } => self.register_worker(
                ctx,
                from,
                id,
                host,
                port,
                cores,
                memory_mb,
                webui_address,
                master_address,
            ),
            MasterMsg::Heartbeat { worker_id } => match self.workers.get_mut(&worker_id) {
                Some(w) if w.state != WorkerState::Dead => {
                    w.last_heartbeat = Instant::now();
                    w.last_heartbeat_ms = now_ms();
                }
                Some(_) => {
                    tracing::warn!(
                        "Got heartbeat from dead worker {worker_id}; asking it to re-register"
                    );
                    self.send_worker(
                        ctx,
                        &from,
                        &WorkerMsg::ReconnectWorker {
                            master_url: self.url.clone(),
                        },
                    );
                }
                None => {
                    tracing::debug!("Got heartbeat from unregistered worker {worker_id}; ignoring")
                }
            },
            MasterMsg::ExecutorStateChanged {
                app_id,
                exec_id,
                state,
                message,
                exit_status,
            } => {
                self.executor_state_changed(ctx, app_id, exec_id, state, message, exit_status);
                if let Some(r) = reply {
                    r.reply(&true);
                }
            }
            MasterMsg::WorkerLatestState {
                id,
                executors,
                driver_ids,
            } => {
                let Some(w) = self.workers.get(&id) else {
                    return;
                };
                let addr = w.addr.clone();
                for (app_id, exec_id) in executors {
                    if !w.executors.contains(&(app_id.clone(), exec_id)) {
                        self.send_worker(
                            ctx,
                            &addr,
                            &WorkerMsg::KillExecutor {
                                master_url: self.url.clone(),
                                app_id,
                                exec_id,
                            },
                        );
                    }
                }
                // A driver this master does not place on that worker (say,
                // relaunched elsewhere while the worker was away) must not
                // run twice: kill it, as Spark does.
                for driver_id in driver_ids {
                    let known = self
                        .drivers
                        .get(&driver_id)
                        .is_some_and(|d| d.worker.as_deref() == Some(id.as_str()));
                    if !known {
                        tracing::info!("Killing driver {driver_id} on worker {id}: not known here");
                        self.send_worker(ctx, &addr, &WorkerMsg::KillDriver { driver_id });
                    }
                }
            }
            MasterMsg::RegisterApplication { desc } => self.register_application(ctx, from, desc),
            MasterMsg::UnregisterApplication { app_id } => {
                // Only the application's own driver ends it this way; anyone
                // else uses KillApplication, which the ACLs check.
                if self.address_to_app.get(&from) == Some(&app_id) {
                    self.remove_application(ctx, &app_id, ApplicationState::Finished);
                    // A driver that asks waits to know it is done before it
                    // closes its connection.
                    if let Some(r) = reply {
                        r.reply(&());
                    }
                } else {
                    tracing::warn!("refusing to unregister {app_id} for {from}: not its driver");
                    if let Some(r) = reply {
                        r.fail(format!("{app_id} is not this connection's application"));
                    }
                }
            }
            MasterMsg::KillApplication { app_id, user } => {
                let owner = self.apps.get(&app_id).map(|a| a.desc.user.as_str());
                if let Err(e) = check_user(&user) {
                    tracing::warn!("refusing to kill {app_id} for {from}: {e}");
                } else if permitted(&self.conf.acls, &user, owner) {
                    self.remove_application(ctx, &app_id, ApplicationState::Killed)
                } else {
                    tracing::warn!(
                        "{} (from {from})",
                        refusal(&user, &format!("kill application {app_id}"))
                    );
                }
            }
            MasterMsg::KillExecutors {
                app_id,
                executor_ids,
            } => self.kill_executors(ctx, &from, &app_id, executor_ids),
            MasterMsg::RequestExecutors { app_id, total } => match self.apps.get_mut(&app_id) {
                Some(app) if app.driver == from => {
                    tracing::info!("Application {app_id} requested {total} executors in all");
                    app.executor_limit = total as usize;
                    if let Some(r) = reply {
                        r.reply(&());
                    }
                    self.schedule(ctx);
                }
                _ => {
                    tracing::warn!(
                        "refusing an executor request for {app_id:?} from {from}: not its driver"
                    );
                    if let Some(r) = reply {
                        r.fail(format!("{app_id} is not this connection's application"));
                    }
                }
            },
            MasterMsg::UploadBinary {
                sha256,
                size,
                offset,
                data,
                user,
            } => {
                if let Some(why) = refuse_user(&self.conf.acls, &user, "upload binaries") {
                    tracing::warn!("{why} (from {from})");
                    if let Some(rp) = reply {
                        rp.reply(&Err::<bool, String>(why));
                    }
                    return;
                }
                if self.state != RecoveryState::Alive {
                    if let Some(rp) = reply {
                        rp.reply(&Err::<bool, String>(format!(
                            "this master is {:?}, not ALIVE: upload to the active master",
                            self.state
                        )));
                    }
                    return;
                }
                let r = self.uploads.part(
                    &self.binaries_dir,
                    &self.served,
                    &from,
                    &sha256,
                    size,
                    offset,
                    &data,
                );
                if let Err(e) = &r {
                    tracing::warn!("refusing an upload from {from}: {e}");
                }
                if r == Ok(true) {
                    self.prune_binaries();
                }
                if let Some(rp) = reply {
                    rp.reply(&r);
                }
            }
            MasterMsg::RequestMasterState => {
                if let Some(r) = reply {
                    r.reply(&self.state_response());
                }
            }
            MasterMsg::RequestSubmitDriver { mut desc } => {
                let mut refused = refuse_user(&self.conf.acls, &desc.user, "submit drivers");
                // A submitted binary is one uploaded here, and Workers fetch
                // it from this Master, whatever address the request names.
                if let Some(b) = &mut desc.binary {
                    if self.served.contains(&b.sha256) {
                        b.source = self.address.clone();
                    } else {
                        refused.get_or_insert_with(|| {
                            format!(
                                "binary {} was not uploaded to this master; flint submit uploads it before submitting",
                                b.sha256
                            )
                        });
                    }
                }
                let resp = if let Some(message) = refused {
                    tracing::warn!("{message} (from {from})");
                    SubmitDriverResponse {
                        success: false,
                        driver_id: None,
                        message,
                    }
                } else if self.state != RecoveryState::Alive {
                    SubmitDriverResponse {
                        success: false,
                        driver_id: None,
                        message: format!(
                            "Current state is not alive: {:?}. Can only accept driver submissions in ALIVE state.",
                            self.state
                        ),
                    }
                } else {
                    let id = self.add_driver(desc);
                    tracing::info!("Driver submitted {id}");
                    self.schedule(ctx);
                    SubmitDriverResponse {
                        success: true,
                        message: format!("Driver successfully submitted as {id}"),
                        driver_id: Some(id),
                    }
                };
                if let Some(r) = reply {
                    r.reply(&resp);
                }
            }
            MasterMsg::RequestKillDriver { driver_id, user } => {
                let resp = match self.drivers.get(&driver_id) {
                    Some(d)
                        if check_user(&user).is_err()
                            || !permitted(&self.conf.acls, &user, Some(&d.desc.user)) =>
                    {
                        let message = check_user(&user)
                            .err()
                            .unwrap_or_else(|| refusal(&user, &format!("kill driver {driver_id}")));
                        tracing::warn!("{message} (from {from})");
                        KillDriverResponse {
                            message,
                            driver_id,
                            success: false,
                        }
                    }
                    Some(d) => {
                        if self.waiting_drivers.contains(&driver_id) {
                            self.remove_driver(ctx, &driver_id, DriverState::Killed, None);
                        } else if let Some(addr) = d
                            .worker
                            .as_ref()
                            .and_then(|w| self.workers.get(w))
                            .map(|w| w.addr.clone())
                        {
                            self.send_worker(
                                ctx,
                                &addr,
                                &WorkerMsg::KillDriver {
                                    driver_id: driver_id.clone(),
                                },
                            );
                        }
                        KillDriverResponse {
                            message: format!("Kill request for {driver_id} submitted"),
                            driver_id,
                            success: true,
                        }
                    }
                    None => KillDriverResponse {
                        message: format!(
                            "Driver {driver_id} has already finished or does not exist"
                        ),
                        driver_id,
                        success: false,
                    },
                };
                if let Some(r) = reply {
                    r.reply(&resp);
                }
            }
            MasterMsg::RequestDriverStatus { driver_id } => {
                let found = self.drivers.get(&driver_id).or_else(|| {
                    self.completed_drivers
                        .iter()
                        .rev()
                        .find(|d| d.id == driver_id)
                });
                let resp = match found {
                    Some(d) => {
                        let w = d.worker.as_ref().and_then(|w| self.workers.get(w));
                        DriverStatusResponse {
                            found: true,
                            state: Some(d.state),
                            worker_id: d.worker.clone(),
                            worker_host_port: w.map(|w| format!("{}:{}", w.host, w.port)),
                            exception: d.exception.clone(),
                        }
                    }
                    None => DriverStatusResponse {
                        found: false,
                        state: None,
                        worker_id: None,
                        worker_host_port: None,
                        exception: None,
                    },
                };
                if let Some(r) = reply {
                    r.reply(&resp);
                }
            }
            MasterMsg::DriverStateChanged {
                driver_id,
                state,
                exception,
            } => {
                if state.is_terminal() {
                    self.remove_driver(ctx, &driver_id, state, exception);
                } else {
                    tracing::warn!("Unexpected state {state:?} reported for driver {driver_id}");
                }
            }
            MasterMsg::CheckForWorkerTimeOut => {
                self.check_worker_timeouts(ctx);
                ctx.send_self_after(self.conf.worker_timeout, MasterMsg::CheckForWorkerTimeOut);
            }
        }
    }

    fn on_disconnected(&mut self, ctx: &EndpointCtx<MasterMsg>, peer: &RpcAddress) {
        self.uploads.forget(peer);
        if let Some(id) = self.address_to_worker.get(peer).cloned() {
            self.remove_worker(ctx, &id, &format!("{peer} got disassociated"));
        }
        if let Some(app_id) = self.address_to_app.get(peer).cloned() {
            tracing::info!("{peer} got disassociated, removing it.");
            self.remove_application(ctx, &app_id, ApplicationState::Finished);
        }
    }
}

#[cfg(test)]
mod user_tests {
    use super::*;

    #[test]
    fn user_names_of_any_script_pass_and_invisible_marks_do_not() {
        for ok in [
            "alice",
            "josé",
            "李雷",
            "o'brien",
            "user@realm",
            "john smith",
            "",
        ] {
            assert!(check_user(ok).is_ok(), "{ok}");
        }
        for bad in [
            "al\tice",
            "al\nice",
            "soft\u{00AD}hyphen",
            "tag\u{E0041}",
            "\u{1b}[31mroot",
            "evil\u{202E}nimda",
            "zero\u{200B}width",
        ] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        assert!(check_user(&"a".repeat(257)).is_err());
        let acls = Some(Acls::from_lists("ops", "alice, bob"));
        assert!(permitted(&acls, "bob", None));
        assert!(!permitted(&acls, "", None));
        assert!(permitted(&acls, "carol", Some("carol")), "owners may act");
        assert!(
            !permitted(&acls, "", Some("")),
            "an empty name owns nothing"
        );
        assert!(permitted(&None, "", None), "no ACLs: anyone");
    }
}
