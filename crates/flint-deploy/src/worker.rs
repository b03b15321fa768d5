//! The Worker daemon (Spark's Worker): registers with the master(s) with Spark's
//! retry schedule, heartbeats, and starts executors as real child processes
//! (ExecutorRunner), reporting their state. Every child dies with the worker.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::messages::check_id;
use flint_rpc::{Endpoint, EndpointCtx, LocalRef, Peer, Replier, RpcAddress, RpcConf, RpcEnv, Via};
use tokio::sync::oneshot;

use crate::messages::*;

/// Spark's INITIAL_REGISTRATION_RETRIES and TOTAL_REGISTRATION_RETRIES.
const INITIAL_REGISTRATION_RETRIES: u32 = 6;
const TOTAL_REGISTRATION_RETRIES: u32 = 16;
/// Grace between SIGTERM and SIGKILL when killing an executor (Spark: 10 s).
const EXECUTOR_TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct WorkerConf {
    pub masters: Vec<RpcAddress>,
    pub host: String,
    /// 0 = any free port.
    pub port: u16,
    pub cores: u32,
    pub memory_mb: u64,
    pub work_dir: PathBuf,
    pub webui_port: u16,
    /// `flint.worker.timeout`; heartbeats go every quarter of it.
    pub worker_timeout: Duration,
    /// Base of the registration retry interval: 10 s in Spark (fuzzed to 5-15 s,
    /// then 60 s fuzzed to 30-90 s after 6 attempts). Tests shorten it.
    pub registration_base: Duration,
    /// `flint.worker.cleanup.enabled` (true, as Spark 4): periodically delete
    /// work directories of stopped applications older than `cleanup_ttl`.
    pub cleanup_enabled: bool,
    /// `flint.worker.cleanup.interval` (1800 s).
    pub cleanup_interval: Duration,
    /// `flint.worker.cleanup.appDataTtl` (7 days).
    pub cleanup_ttl: Duration,
    /// Finished executors and drivers kept for the UI
    /// (`flint.worker.ui.retainedExecutors` / `retainedDrivers`).
    pub retained_executors: usize,
    pub retained_drivers: usize,
    pub rpc: RpcConf,
}

impl WorkerConf {
    /// Defaults from the machine, as Spark: all cores, total memory minus 1 GiB.
    pub fn new(masters: Vec<RpcAddress>) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        WorkerConf {
            masters,
            host: "127.0.0.1".into(),
            port: 0,
            cores,
            memory_mb: default_memory_mb(),
            work_dir: PathBuf::from("work"),
            webui_port: 8081,
            worker_timeout: Duration::from_secs(60),
            registration_base: Duration::from_secs(10),
            cleanup_enabled: true,
            cleanup_interval: Duration::from_secs(1800),
            cleanup_ttl: Duration::from_secs(7 * 24 * 3600),
            retained_executors: 1000,
            retained_drivers: 1000,
            rpc: RpcConf::default(),
        }
    }
}

/// Total RAM minus 1 GiB, at least 512 MiB.
fn default_memory_mb() -> u64 {
    let total_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(2 << 20);
    (total_kb / 1024).saturating_sub(1024).max(512)
}

struct Runner {
    app_id: String,
    exec_id: u32,
    cores: u32,
    memory_mb: u64,
    state: ExecutorState,
    kill: Option<oneshot::Sender<()>>,
    pid: Option<u32>,
}

struct DriverRun {
    desc: DriverDescription,
    state: DriverState,
    kill: Option<oneshot::Sender<()>>,
    pid: Option<u32>,
    start_ms: i64,
}

pub struct Worker {
    conf: WorkerConf,
    id: String,
    address: RpcAddress,
    webui_url: String,
    active_master: Option<RpcAddress>,
    registered: bool,
    connected: bool,
    attempts: u32,
    retry_generation: u64,
    retry_pending: bool,
    fuzz: f64,
    heartbeating: bool,
    executors: HashMap<String, Runner>,
    finished: Vec<ExecutorSummary>,
    finished_apps: Vec<String>,
    drivers: HashMap<String, DriverRun>,
    finished_drivers: Vec<DriverSummary>,
    cores_used: u32,
    memory_used: u64,
}

pub struct WorkerHandle {
    pub env: RpcEnv,
    pub worker: LocalRef<WorkerMsg>,
    pub id: String,
    pub address: RpcAddress,
    pub webui_port: u16,
}

fn master_url(a: &RpcAddress) -> String {
    format!("flint://{a}")
}

impl Worker {
    pub async fn start(conf: WorkerConf) -> Result<WorkerHandle, String> {
        let web_tls = conf.rpc.tls.clone();
        if conf.masters.is_empty() {
            return Err("no master URL given; pass flint://host:port".into());
        }
        std::fs::create_dir_all(&conf.work_dir)
            .map_err(|e| format!("cannot create work dir {}: {e}", conf.work_dir.display()))?;
        let env = RpcEnv::server(&conf.host, conf.port, &conf.host, conf.rpc.clone())
            .await
            .map_err(|e| e.to_string())?;
        let address = env.address().cloned().ok_or("no bound address")?;
        let listener = tokio::net::TcpListener::bind((conf.host.as_str(), conf.webui_port))
            .await
            .map_err(|e| {
                format!(
                    "cannot bind the worker web UI on {}:{}: {e}",
                    conf.host, conf.webui_port
                )
            })?;
        let webui_port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let id = format!(
            "worker-{}-{}-{}",
            chrono::Local::now().format("%Y%m%d%H%M%S"),
            address.host,
            address.port
        );
        // Per-worker random fuzz in [0.5, 1.5) so workers do not retry in lockstep.
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let fuzz = 0.5 + (r % 10_000) as f64 / 10_000.0;
        let worker = Worker {
            webui_url: format!("http://{}:{webui_port}", conf.host),
            conf,
            id: id.clone(),
            address: address.clone(),
            active_master: None,
            registered: false,
            connected: false,
            attempts: 0,
            retry_generation: 0,
            retry_pending: false,
            fuzz,
            heartbeating: false,
            executors: HashMap::new(),
            finished: Vec::new(),
            finished_apps: Vec::new(),
            drivers: HashMap::new(),
            finished_drivers: Vec::new(),
            cores_used: 0,
            memory_used: 0,
        };
        tracing::info!("Starting Flint worker {id} at {address}");
        let worker_ref = env.setup_endpoint(WORKER_ENDPOINT, worker);
        crate::webui::serve_worker(listener, web_tls, worker_ref.clone());
        Ok(WorkerHandle {
            env,
            worker: worker_ref,
            id,
            address,
            webui_port,
        })
    }

    fn initial_interval(&self) -> Duration {
        self.conf.registration_base.mul_f64(self.fuzz)
    }

    fn prolonged_interval(&self) -> Duration {
        (self.conf.registration_base * 6).mul_f64(self.fuzz)
    }

    fn send_register(&self, ctx: &EndpointCtx<WorkerMsg>, master: &RpcAddress) {
        let msg = MasterMsg::RegisterWorker {
            id: self.id.clone(),
            host: self.address.host.clone(),
            port: self.address.port,
            cores: self.conf.cores,
            memory_mb: self.conf.memory_mb,
            webui_address: self.webui_url.clone(),
            master_address: master.clone(),
        };
        if let Err(e) = ctx.env.send(master, MASTER_ENDPOINT, &msg) {
            tracing::warn!("cannot send registration to {master}: {e}");
        }
    }

    fn register_with_master(&mut self, ctx: &EndpointCtx<WorkerMsg>) {
        if self.retry_pending {
            return;
        }
        self.registered = false;
        for m in self.conf.masters.clone() {
            tracing::info!("Connecting to master {}...", master_url(&m));
            self.send_register(ctx, &m);
        }
        self.attempts = 0;
        self.retry_generation += 1;
        self.retry_pending = true;
        ctx.send_self_after(
            self.initial_interval(),
            WorkerMsg::ReregisterWithMaster {
                generation: self.retry_generation,
            },
        );
    }

    fn reregister(&mut self, ctx: &EndpointCtx<WorkerMsg>, generation: u64) {
        if generation != self.retry_generation || !self.retry_pending {
            return;
        }
        self.attempts += 1;
        if self.registered {
            self.retry_pending = false;
            return;
        }
        if self.attempts > TOTAL_REGISTRATION_RETRIES {
            tracing::error!("All masters are unresponsive! Giving up.");
            eprintln!(
                "flint worker: all masters are unresponsive after {TOTAL_REGISTRATION_RETRIES} attempts; giving up"
            );
            self.kill_all();
            std::process::exit(1);
        }
        tracing::info!(
            "Retrying connection to master (attempt # {})",
            self.attempts
        );
        match self.active_master.clone() {
            // Once registered with a master, only go back to that one (SPARK-4592).
            Some(m) => self.send_register(ctx, &m),
            None => {
                for m in self.conf.masters.clone() {
                    self.send_register(ctx, &m);
                }
            }
        }
        let next = if self.attempts >= INITIAL_REGISTRATION_RETRIES {
            self.prolonged_interval()
        } else {
            self.initial_interval()
        };
        ctx.send_self_after(next, WorkerMsg::ReregisterWithMaster { generation });
    }

    fn on_registered(&mut self, ctx: &EndpointCtx<WorkerMsg>, master: RpcAddress, duplicate: bool) {
        if duplicate {
            tracing::warn!("Duplicate registration at master {}", master_url(&master));
        }
        tracing::info!(
            "Successfully registered with master {}",
            master_url(&master)
        );
        self.registered = true;
        self.connected = true;
        self.active_master = Some(master.clone());
        self.retry_pending = false;
        self.retry_generation += 1;
        if !self.heartbeating {
            self.heartbeating = true;
            ctx.this().send(WorkerMsg::SendHeartbeat);
            if self.conf.cleanup_enabled {
                ctx.send_self_after(self.conf.cleanup_interval, WorkerMsg::WorkDirCleanup);
            }
        }
        let executors = self
            .executors
            .values()
            .map(|r| (r.app_id.clone(), r.exec_id))
            .collect();
        let msg = MasterMsg::WorkerLatestState {
            id: self.id.clone(),
            executors,
            driver_ids: self.drivers.keys().cloned().collect(),
        };
        let _ = ctx.env.send(&master, MASTER_ENDPOINT, &msg);
    }

    /// Gives back what a finished executor or driver held.
    fn release(&mut self, cores: u32, memory_mb: u64) {
        self.cores_used = self.cores_used.saturating_sub(cores);
        self.memory_used = self.memory_used.saturating_sub(memory_mb);
    }

    fn send_to_master(&self, ctx: &EndpointCtx<WorkerMsg>, msg: &MasterMsg) {
        match (&self.active_master, self.registered) {
            (Some(m), true) => {
                if let Err(e) = ctx.env.send(m, MASTER_ENDPOINT, msg) {
                    tracing::warn!("cannot send to master {m}: {e}");
                }
            }
            _ => tracing::warn!(
                "Dropping {msg:?} because the connection to master has not yet been established"
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_executor(
        &mut self,
        ctx: &EndpointCtx<WorkerMsg>,
        from_master: String,
        app_id: String,
        exec_id: u32,
        desc: ApplicationDescription,
        cores: u32,
        memory_mb: u64,
    ) {
        if self.active_master.as_ref().map(master_url) != Some(from_master.clone()) {
            tracing::warn!("Invalid Master ({from_master}) attempted to launch executor.");
            return;
        }
        if let Err(e) = check_id("application id", &app_id) {
            tracing::warn!("refusing to launch an executor: {e}");
            self.send_to_master(
                ctx,
                &MasterMsg::ExecutorStateChanged {
                    app_id: String::new(),
                    exec_id,
                    state: ExecutorState::Failed,
                    message: Some(e),
                    exit_status: None,
                },
            );
            return;
        }
        tracing::info!(
            "Asked to launch executor {app_id}/{exec_id} for {}",
            desc.name
        );
        let key = format!("{app_id}/{exec_id}");
        let exec_dir = self.conf.work_dir.join(&app_id).join(exec_id.to_string());
        let local_dir = self.conf.work_dir.join(&app_id).join("local");
        let prepared = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&exec_dir)?;
            std::fs::create_dir_all(&local_dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&local_dir, std::fs::Permissions::from_mode(0o700))
        })();
        if let Err(e) = prepared {
            let message = format!(
                "cannot create executor directory {}: {e}",
                exec_dir.display()
            );
            tracing::error!("{message}");
            self.send_to_master(
                ctx,
                &MasterMsg::ExecutorStateChanged {
                    app_id,
                    exec_id,
                    state: ExecutorState::Failed,
                    message: Some(message),
                    exit_status: None,
                },
            );
            return;
        }
        let (kill_tx, kill_rx) = oneshot::channel();
        self.executors.insert(
            key,
            Runner {
                app_id: app_id.clone(),
                exec_id,
                cores,
                memory_mb,
                state: ExecutorState::Launching,
                kill: Some(kill_tx),
                pid: None,
            },
        );
        self.cores_used += cores;
        self.memory_used += memory_mb;
        let subst = |s: &str| {
            s.replace("{{EXECUTOR_ID}}", &exec_id.to_string())
                .replace("{{HOSTNAME}}", &self.address.host)
                .replace("{{CORES}}", &cores.to_string())
                .replace("{{APP_ID}}", &app_id)
                .replace("{{WORKER_URL}}", &format!("flint://{}", self.address))
        };
        let program = subst(&desc.command.program);
        let args: Vec<String> = desc.command.args.iter().map(|a| subst(a)).collect();
        let env: Vec<(String, String)> = desc
            .command
            .env
            .iter()
            .map(|(k, v)| (k.clone(), subst(v)))
            .collect();
        let me = ctx.this().clone();
        let binary = desc.binary.clone().map(|b| Fetch {
            binary: b,
            env: ctx.env.clone(),
            cache: crate::binaries::cache_dir(&self.conf.work_dir),
        });
        tokio::spawn(run_executor(RunSpec {
            me,
            binary,
            app_id,
            exec_id,
            program,
            args,
            env,
            exec_dir,
            local_dir,
            kill: kill_rx,
        }));
    }

    #[allow(clippy::too_many_arguments)]
    fn executor_changed(
        &mut self,
        ctx: &EndpointCtx<WorkerMsg>,
        app_id: String,
        exec_id: u32,
        state: ExecutorState,
        message: Option<String>,
        exit_status: Option<i32>,
        pid: Option<u32>,
    ) {
        let key = format!("{app_id}/{exec_id}");
        if let Some(r) = self.executors.get_mut(&key) {
            r.state = state;
            if pid.is_some() {
                r.pid = pid;
            }
        }
        self.send_to_master(
            ctx,
            &MasterMsg::ExecutorStateChanged {
                app_id: app_id.clone(),
                exec_id,
                state,
                message,
                exit_status,
            },
        );
        if state.is_finished()
            && let Some(r) = self.executors.remove(&key)
        {
            tracing::info!(
                "Executor {key} finished with state {state:?} exit status {exit_status:?}"
            );
            self.release(r.cores, r.memory_mb);
            self.finished.push(ExecutorSummary {
                id: exec_id,
                appid: app_id.clone(),
                cores: r.cores,
                memory: r.memory_mb,
                state,
            });
            if self.finished.len() > self.conf.retained_executors {
                trim_oldest(&mut self.finished);
            }
            self.maybe_cleanup_app(&app_id);
        }
    }

    /// Deletes a finished application's local dirs once none of its executors run.
    fn maybe_cleanup_app(&mut self, app_id: &str) {
        if self.finished_apps.iter().any(|a| a == app_id)
            && !self.executors.values().any(|r| r.app_id == app_id)
        {
            let dir = self.conf.work_dir.join(app_id).join("local");
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("cannot delete {}: {e}", dir.display());
            }
            self.finished_apps.retain(|a| a != app_id);
        }
    }

    fn launch_driver(
        &mut self,
        ctx: &EndpointCtx<WorkerMsg>,
        driver_id: String,
        desc: DriverDescription,
    ) {
        tracing::info!("Asked to launch driver {driver_id}");
        if let Err(e) = check_id("driver id", &driver_id) {
            tracing::warn!("refusing to launch a driver: {e}");
            return;
        }
        let (kill_tx, kill_rx) = oneshot::channel();
        self.cores_used += desc.cores;
        self.memory_used += desc.memory_mb;
        self.drivers.insert(
            driver_id.clone(),
            DriverRun {
                desc: desc.clone(),
                state: DriverState::Running,
                kill: Some(kill_tx),
                pid: None,
                start_ms: chrono::Utc::now().timestamp_millis(),
            },
        );
        let fetch = desc.binary.clone().map(|b| Fetch {
            binary: b,
            env: ctx.env.clone(),
            cache: crate::binaries::cache_dir(&self.conf.work_dir),
        });
        tokio::spawn(run_driver(DriverSpec {
            me: ctx.this().clone(),
            fetch,
            secret: self.conf.rpc.secret.clone(),
            dir: self.conf.work_dir.join(&driver_id),
            worker_url: format!("flint://{}", self.address),
            driver_id,
            desc,
            kill: kill_rx,
        }));
    }

    fn driver_finished(
        &mut self,
        ctx: &EndpointCtx<WorkerMsg>,
        driver_id: String,
        state: DriverState,
        exception: Option<String>,
    ) {
        tracing::info!("Driver {driver_id} ended in state {state:?}");
        if let Some(d) = self.drivers.remove(&driver_id) {
            self.release(d.desc.cores, d.desc.memory_mb);
            self.finished_drivers.push(DriverSummary {
                id: driver_id.clone(),
                starttime: d.start_ms,
                state,
                cores: d.desc.cores,
                memory: d.desc.memory_mb,
                submitdate: String::new(),
                worker: self.id.clone(),
                mainclass: d.desc.main_class(),
            });
            if self.finished_drivers.len() > self.conf.retained_drivers {
                trim_oldest(&mut self.finished_drivers);
            }
        }
        self.send_to_master(
            ctx,
            &MasterMsg::DriverStateChanged {
                driver_id,
                state,
                exception,
            },
        );
    }

    /// Ends every child process now (worker shutdown): each child's whole
    /// process group, so grandchildren die too. The pids are those this worker
    /// got back from its own spawns (an internal message no peer can send).
    fn kill_all(&mut self) {
        for d in self.drivers.values_mut() {
            if let Some(pid) = d.pid {
                kill_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
            if let Some(k) = d.kill.take() {
                let _ = k.send(());
            }
        }
        for r in self.executors.values_mut() {
            if let Some(pid) = r.pid {
                kill_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
            if let Some(k) = r.kill.take() {
                let _ = k.send(());
            }
        }
    }

    /// Who may send what: the master's orders only over the connection this
    /// worker dialed to the master it registered with (a peer claiming the
    /// master's address on its own connection is refused), registration
    /// answers only from a configured master, internal events only from inside
    /// the process (they cannot be decoded from the wire either).
    fn admit(&self, from: &Peer, msg: &WorkerMsg) -> Result<(), String> {
        let dialed_master =
            |set: &[RpcAddress]| from.via == Via::Dialed && set.contains(&from.addr);
        match msg {
            WorkerMsg::RegisteredWorker { .. }
            | WorkerMsg::RegisterWorkerFailed { .. }
            | WorkerMsg::MasterInStandby => {
                if dialed_master(&self.conf.masters) {
                    Ok(())
                } else {
                    Err("registration answers come only from a configured master, over the connection this worker opened".into())
                }
            }
            WorkerMsg::ReconnectWorker { .. }
            | WorkerMsg::LaunchExecutor { .. }
            | WorkerMsg::KillExecutor { .. }
            | WorkerMsg::ApplicationFinished { .. }
            | WorkerMsg::LaunchDriver { .. }
            | WorkerMsg::KillDriver { .. } => {
                let active: Vec<RpcAddress> = self.active_master.iter().cloned().collect();
                if dialed_master(&active) {
                    Ok(())
                } else {
                    Err("only the master this worker is registered with may send it, over the connection this worker opened".into())
                }
            }
            WorkerMsg::RequestWorkerState => Ok(()),
            WorkerMsg::SendHeartbeat
            | WorkerMsg::ReregisterWithMaster { .. }
            | WorkerMsg::ExecutorStarted { .. }
            | WorkerMsg::ExecutorStateChanged { .. }
            | WorkerMsg::DriverStarted { .. }
            | WorkerMsg::DriverStateChanged { .. }
            | WorkerMsg::WorkDirCleanup
            | WorkerMsg::Shutdown => {
                if from.via == Via::Local {
                    Ok(())
                } else {
                    Err("an internal message".into())
                }
            }
        }
    }

    fn state_response(&self) -> WorkerStateResponse {
        WorkerStateResponse {
            id: self.id.clone(),
            masterurl: self
                .active_master
                .as_ref()
                .map(master_url)
                .unwrap_or_default(),
            cores: self.conf.cores,
            coresused: self.cores_used,
            memory: self.conf.memory_mb,
            memoryused: self.memory_used,
            executors: self
                .executors
                .values()
                .map(|r| ExecutorSummary {
                    id: r.exec_id,
                    appid: r.app_id.clone(),
                    cores: r.cores,
                    memory: r.memory_mb,
                    state: r.state,
                })
                .collect(),
            finishedexecutors: self.finished.clone(),
            drivers: self
                .drivers
                .iter()
                .map(|(id, d)| DriverSummary {
                    id: id.clone(),
                    starttime: d.start_ms,
                    state: d.state,
                    cores: d.desc.cores,
                    memory: d.desc.memory_mb,
                    submitdate: String::new(),
                    worker: self.id.clone(),
                    mainclass: d.desc.main_class(),
                })
                .collect(),
            finisheddrivers: self.finished_drivers.clone(),
        }
    }
}

impl Endpoint for Worker {
    type Msg = WorkerMsg;

    fn on_start(&mut self, ctx: &EndpointCtx<WorkerMsg>) {
        self.register_with_master(ctx);
    }

    fn receive(
        &mut self,
        ctx: &EndpointCtx<WorkerMsg>,
        from: Peer,
        msg: WorkerMsg,
        reply: Option<Replier>,
    ) {
        if let Err(why) = self.admit(&from, &msg) {
            tracing::warn!(
                "refusing {} from {from} ({:?}): {why}",
                msg.kind(),
                from.via
            );
            if let Some(r) = reply {
                r.fail(format!("refused: {why}"));
            }
            return;
        }
        match msg {
            WorkerMsg::RegisteredWorker { duplicate, .. } => {
                // The master is the address this worker dialed, not what the
                // message says about itself.
                self.on_registered(ctx, from.addr, duplicate)
            }
            WorkerMsg::RegisterWorkerFailed { message } => {
                if !self.registered {
                    tracing::error!("Worker registration failed: {message}");
                    eprintln!("flint worker: registration failed: {message}");
                    self.kill_all();
                    std::process::exit(1);
                }
            }
            WorkerMsg::MasterInStandby => {}
            WorkerMsg::ReconnectWorker { master_url } => {
                tracing::info!("Master with url {master_url} requested this worker to reconnect.");
                self.register_with_master(ctx);
            }
            WorkerMsg::LaunchExecutor {
                master_url,
                app_id,
                exec_id,
                app_desc,
                cores,
                memory_mb,
            } => self.launch_executor(ctx, master_url, app_id, exec_id, app_desc, cores, memory_mb),
            WorkerMsg::KillExecutor {
                master_url: url,
                app_id,
                exec_id,
            } => {
                if self.active_master.as_ref().map(master_url) != Some(url.clone()) {
                    tracing::warn!(
                        "Invalid Master ({url}) attempted to kill executor {app_id}/{exec_id}"
                    );
                    return;
                }
                match self.executors.get_mut(&format!("{app_id}/{exec_id}")) {
                    Some(r) => {
                        tracing::info!("Asked to kill executor {app_id}/{exec_id}");
                        if let Some(k) = r.kill.take() {
                            let _ = k.send(());
                        }
                    }
                    None => tracing::info!("Asked to kill unknown executor {app_id}/{exec_id}"),
                }
            }
            WorkerMsg::ApplicationFinished { id } => {
                if let Err(e) = check_id("application id", &id) {
                    tracing::warn!("ignoring ApplicationFinished: {e}");
                    return;
                }
                self.finished_apps.push(id.clone());
                self.maybe_cleanup_app(&id);
            }
            WorkerMsg::RequestWorkerState => {
                if let Some(r) = reply {
                    r.reply(&self.state_response());
                }
            }
            WorkerMsg::SendHeartbeat => {
                if self.connected
                    && let Some(m) = &self.active_master
                {
                    let _ = ctx.env.send(
                        m,
                        MASTER_ENDPOINT,
                        &MasterMsg::Heartbeat {
                            worker_id: self.id.clone(),
                        },
                    );
                }
                ctx.send_self_after(self.conf.worker_timeout / 4, WorkerMsg::SendHeartbeat);
            }
            WorkerMsg::ReregisterWithMaster { generation } => self.reregister(ctx, generation),
            WorkerMsg::ExecutorStateChanged {
                app_id,
                exec_id,
                state,
                message,
                exit_status,
            } => self.executor_changed(ctx, app_id, exec_id, state, message, exit_status, None),
            WorkerMsg::ExecutorStarted {
                app_id,
                exec_id,
                pid,
            } => self.executor_changed(
                ctx,
                app_id,
                exec_id,
                ExecutorState::Running,
                None,
                None,
                pid,
            ),
            WorkerMsg::LaunchDriver { driver_id, desc } => self.launch_driver(ctx, driver_id, desc),
            WorkerMsg::KillDriver { driver_id } => match self.drivers.get_mut(&driver_id) {
                Some(d) => {
                    tracing::info!("Asked to kill driver {driver_id}");
                    if let Some(k) = d.kill.take() {
                        let _ = k.send(());
                    }
                }
                None => tracing::error!("Asked to kill unknown driver {driver_id}"),
            },
            WorkerMsg::DriverStarted { driver_id, pid } => {
                if let Some(d) = self.drivers.get_mut(&driver_id) {
                    d.pid = pid;
                }
            }
            WorkerMsg::DriverStateChanged {
                driver_id,
                state,
                exception,
            } => self.driver_finished(ctx, driver_id, state, exception),
            WorkerMsg::WorkDirCleanup => {
                // Ids still in use: running apps' executors and drivers.
                let mut live: std::collections::HashSet<String> =
                    self.executors.values().map(|r| r.app_id.clone()).collect();
                live.extend(self.drivers.keys().cloned());
                let dir = self.conf.work_dir.clone();
                let ttl = self.conf.cleanup_ttl;
                tokio::task::spawn_blocking(move || cleanup_work_dir(&dir, &live, ttl));
                ctx.send_self_after(self.conf.cleanup_interval, WorkerMsg::WorkDirCleanup);
            }
            WorkerMsg::Shutdown => {
                self.kill_all();
                if let Some(r) = reply {
                    r.reply(&true);
                }
            }
        }
    }

    fn on_disconnected(&mut self, ctx: &EndpointCtx<WorkerMsg>, peer: &RpcAddress) {
        // (Only the connection this worker dialed to its master counts: the
        // RPC layer reports a peer gone when no connection to it is left.)
        if self.active_master.as_ref() == Some(peer) {
            tracing::info!(
                "{peer} Disassociated! Connection to master failed! Waiting for master to reconnect..."
            );
            self.connected = false;
            self.register_with_master(ctx);
        }
    }

    fn on_stop(&mut self) {
        self.kill_all();
    }
}

/// A binary to fetch by hash into the Worker's cache before launching.
struct Fetch {
    binary: crate::messages::BinaryRef,
    env: flint_rpc::RpcEnv,
    cache: PathBuf,
}

impl Fetch {
    async fn local_copy(&self) -> Result<PathBuf, String> {
        crate::binaries::ensure(&self.env, &self.cache, &self.binary).await
    }
}

struct RunSpec {
    me: LocalRef<WorkerMsg>,
    binary: Option<Fetch>,
    app_id: String,
    exec_id: u32,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    exec_dir: PathBuf,
    local_dir: PathBuf,
    kill: oneshot::Receiver<()>,
}

/// Spark's ExecutorRunner: start the process with stdout/stderr in its
/// directory, report RUNNING, then EXITED (with its code) or KILLED.
async fn run_executor(spec: RunSpec) {
    let report = |state, message: Option<String>, exit_status| {
        spec.me.send(WorkerMsg::ExecutorStateChanged {
            app_id: spec.app_id.clone(),
            exec_id: spec.exec_id,
            state,
            message,
            exit_status,
        })
    };
    let env: Vec<(String, String)> = spec
        .env
        .iter()
        .cloned()
        .chain([(
            "FLINT_EXECUTOR_DIRS".to_string(),
            spec.local_dir.to_string_lossy().into_owned(),
        )])
        .collect();
    let mut program = spec.program.clone();
    if spec.binary.is_some() && program != "{{APP_BINARY}}" {
        report(
            ExecutorState::Failed,
            Some("an application sent by hash must run {{APP_BINARY}}".into()),
            None,
        );
        return;
    }
    if let Some(f) = &spec.binary {
        match f.local_copy().await {
            Ok(p) => program = program.replace("{{APP_BINARY}}", &p.to_string_lossy()),
            Err(e) => {
                report(
                    ExecutorState::Failed,
                    Some(format!("cannot get the application binary: {e}")),
                    None,
                );
                return;
            }
        }
    }
    let launch = Launch {
        program: &program,
        args: &spec.args,
        env: &env,
        dir: &spec.exec_dir,
        header: "Flint Executor Command",
        append: false,
    };
    let mut child = match launch.spawn() {
        Ok(c) => c,
        Err(e) => {
            report(
                ExecutorState::Failed,
                Some(format!("Error running executor: {e}")),
                None,
            );
            return;
        }
    };
    let pid = child.id();
    spec.me.send(WorkerMsg::ExecutorStarted {
        app_id: spec.app_id.clone(),
        exec_id: spec.exec_id,
        pid,
    });
    let mut kill = spec.kill;
    tokio::select! {
        status = child.wait() => {
            let (code, how) = exit_description(status);
            report(ExecutorState::Exited, Some(format!("Command {how}")), Some(code));
        }
        _ = &mut kill => {
            let code = terminate(&mut child).await;
            report(
                ExecutorState::Killed,
                Some(format!("Runner thread for executor {}/{} interrupted", spec.app_id, spec.exec_id)),
                code,
            );
        }
    }
}

/// A child process to start: stdout and stderr go to files in `dir`, stderr
/// beginning with a `header: command` line, as Spark's runners write them.
struct Launch<'a> {
    program: &'a str,
    args: &'a [String],
    env: &'a [(String, String)],
    dir: &'a std::path::Path,
    header: &'a str,
    /// Append to the log files (a supervised driver's restarts) or start fresh.
    append: bool,
}

impl Launch<'_> {
    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(self.append)
                .truncate(!self.append)
                .open(self.dir.join(name))
        };
        let out = open("stdout")?;
        let mut err = open("stderr")?;
        use std::io::Write;
        writeln!(
            err,
            "{}: {} {}",
            self.header,
            self.program,
            self.args.join(" ")
        )?;
        writeln!(err, "{}\n", "=".repeat(40))?;
        let mut cmd = tokio::process::Command::new(self.program);
        // Only a driver gets the cluster secret, and only from its Worker;
        // settings flint submit gave a driver are not its executors'.
        cmd.env_remove(crate::SECRET_ENV);
        cmd.env_remove(crate::SUBMIT_CONF_VAR);
        cmd.args(self.args)
            .envs(self.env.iter().cloned())
            .current_dir(self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Its own process group, so killing it reaches its children too.
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        cmd.spawn()
    }
}

/// SIGTERM, then SIGKILL if the process is still there after the grace period;
/// returns the exit code if there is one.
async fn terminate(child: &mut tokio::process::Child) -> Option<i32> {
    let pid = child.id();
    if let Some(p) = pid {
        kill_group(p, nix::sys::signal::Signal::SIGTERM);
        // A stopped (hung, SIGSTOPped) process acts on SIGTERM only once
        // continued; without this it would take the whole grace period.
        kill_group(p, nix::sys::signal::Signal::SIGCONT);
    }
    let status = match tokio::time::timeout(EXECUTOR_TERMINATE_TIMEOUT, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            if let Some(p) = pid {
                kill_group(p, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    };
    if let Some(p) = pid {
        // Whatever the child left behind in its group goes with it.
        kill_group(p, nix::sys::signal::Signal::SIGKILL);
    }
    status.and_then(|s| s.code())
}

/// Signals the process group led by `pid`, a child this worker spawned as a
/// group leader.
fn kill_group(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(p) = i32::try_from(pid)
        && p > 1
    {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// Spark's trimming of finished executors and drivers: once over the limit,
/// drop the oldest tenth (at least one).
fn trim_oldest<T>(v: &mut Vec<T>) {
    let n = (v.len() / 10).max(1).min(v.len());
    v.drain(..n);
}

/// Deletes subdirectories of the work dir that belong to no running application
/// or driver and hold no file modified within `ttl` (Spark's WorkDirCleanup).
fn cleanup_work_dir(
    dir: &std::path::Path,
    live: &std::collections::HashSet<String>,
    ttl: Duration,
) {
    // The newest file inside (Spark's doesDirectoryContainAnyNewFiles): a
    // directory's own timestamp changes when anything in it is deleted, so it
    // says nothing about whether the application is still writing.
    fn newest(p: &std::path::Path) -> Option<std::time::SystemTime> {
        let md = std::fs::symlink_metadata(p).ok()?;
        if !md.is_dir() {
            return md.modified().ok();
        }
        let mut t: Option<std::time::SystemTime> = None;
        for e in std::fs::read_dir(p).ok()?.flatten() {
            if let Some(c) = newest(&e.path()) {
                t = Some(t.map_or(c, |x| x.max(c)));
            }
        }
        t
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    let aged = |t: std::time::SystemTime| now.duration_since(t).is_ok_and(|age| age >= ttl);
    // Cached binaries not used within the TTL (each use renews a binary's
    // time; a running process keeps its file even when it is removed).
    if let Ok(cached) = std::fs::read_dir(crate::binaries::cache_dir(dir)) {
        for b in cached.flatten() {
            let old = b.metadata().and_then(|m| m.modified()).is_ok_and(aged);
            if old {
                tracing::info!("Removing unused binary: {}", b.path().display());
                let _ = std::fs::remove_file(b.path());
            }
        }
    }
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // The binary cache is not an application's directory.
        if live.contains(&name) || !e.path().is_dir() || e.path() == crate::binaries::cache_dir(dir)
        {
            continue;
        }
        // No file at all counts as old.
        let old = newest(&e.path()).is_none_or(aged);
        if old {
            tracing::info!("Removing directory: {}", e.path().display());
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!("cannot remove {}: {err}", e.path().display());
            }
        }
    }
}

struct DriverSpec {
    me: LocalRef<WorkerMsg>,
    /// The binary by hash (else `desc.binary_url`).
    fetch: Option<Fetch>,
    /// The cluster secret, for the driver to reach the Master.
    secret: Option<String>,
    dir: PathBuf,
    worker_url: String,
    driver_id: String,
    desc: DriverDescription,
    kill: oneshot::Receiver<()>,
}

/// How long a run must last to reset the supervise back-off (Spark: 5 s).
const SUCCESSFUL_RUN_DURATION: Duration = Duration::from_secs(5);

/// Spark's DriverRunner: fetch the application binary into the driver's dir,
/// run it (again and again with back-off when supervised and failing), and
/// report FINISHED (exit 0), FAILED, KILLED or ERROR.
async fn run_driver(spec: DriverSpec) {
    let me = spec.me.clone();
    let id = spec.driver_id.clone();
    let report = move |state, exception: Option<String>| {
        me.send(WorkerMsg::DriverStateChanged {
            driver_id: id.clone(),
            state,
            exception,
        })
    };
    let by_hash = spec.fetch.is_some() || spec.desc.binary_sha256.is_some();
    if by_hash && spec.desc.command.program != "{{USER_JAR}}" {
        // The hash vouches for the binary only if the binary is what runs.
        report(
            DriverState::Error,
            Some("a driver submitted by hash must run {{USER_JAR}}".into()),
        );
        return;
    }
    let mut kill = spec.kill;
    let mut wait = Duration::from_secs(1);
    loop {
        // Fetched and checked before every launch, relaunches included: the
        // copy that runs is the one that was submitted.
        let binary = match &spec.fetch {
            Some(f) => match std::fs::create_dir_all(&spec.dir) {
                Ok(()) => f.local_copy().await,
                Err(e) => Err(format!("cannot create {}: {e}", spec.dir.display())),
            },
            None => fetch_binary(
                &spec.desc.binary_url,
                spec.desc.binary_sha256.as_deref(),
                &spec.dir,
            ),
        };
        let binary = match binary {
            Ok(p) => p,
            Err(e) => {
                report(DriverState::Error, Some(e));
                return;
            }
        };
        let subst = |s: &str| {
            s.replace("{{WORKER_URL}}", &spec.worker_url)
                .replace("{{USER_JAR}}", &binary.to_string_lossy())
        };
        let program = subst(&spec.desc.command.program);
        let args: Vec<String> = spec.desc.command.args.iter().map(|a| subst(a)).collect();
        let mut env: Vec<(String, String)> = spec
            .desc
            .command
            .env
            .iter()
            .map(|(k, v)| (k.clone(), subst(v)))
            .collect();
        if let Some(s) = &spec.secret {
            env.push((crate::SECRET_ENV.into(), s.clone()));
        }
        // The driver acts as its submitter (the Master checked the name), not
        // as the Worker's account: last, so nothing in the command overrides it.
        if !spec.desc.user.is_empty() {
            env.push((crate::USER_ENV.into(), spec.desc.user.clone()));
        }
        let launch = Launch {
            program: &program,
            args: &args,
            env: &env,
            dir: &spec.dir,
            header: "Launch Command",
            append: true,
        };
        let mut child = match launch.spawn() {
            Ok(c) => c,
            Err(e) => {
                report(
                    DriverState::Error,
                    Some(format!("cannot launch driver {program}: {e}")),
                );
                return;
            }
        };
        let pid = child.id();
        spec.me.send(WorkerMsg::DriverStarted {
            driver_id: spec.driver_id.clone(),
            pid,
        });
        let started = std::time::Instant::now();
        let (code, how) = tokio::select! {
            status = child.wait() => exit_description(status),
            _ = &mut kill => {
                terminate(&mut child).await;
                report(DriverState::Killed, None);
                return;
            }
        };
        // The process is reaped: its pid may be reused, so forget it before
        // any back-off (kill_all must never signal someone else's process).
        spec.me.send(WorkerMsg::DriverStarted {
            driver_id: spec.driver_id.clone(),
            pid: None,
        });
        if !(spec.desc.supervise && code != 0) {
            if code == 0 {
                report(DriverState::Finished, None);
            } else {
                // What `flint submit` prints: why, and where to look.
                report(
                    DriverState::Failed,
                    Some(format!(
                        "the driver {how}; its stdout and stderr are in {} on this Worker",
                        spec.dir.display()
                    )),
                );
            }
            return;
        }
        if started.elapsed() > SUCCESSFUL_RUN_DURATION {
            wait = Duration::from_secs(1);
        }
        tracing::info!("Command {how}, re-launching after {} s.", wait.as_secs());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut kill => {
                report(DriverState::Killed, None);
                return;
            }
        }
        wait *= 2;
    }
}

/// A process's end as a code (0 for success; -1 when it has none) and in
/// words ("exited with code 3", "was killed by signal 6 (SIGABRT)").
fn exit_description(status: std::io::Result<std::process::ExitStatus>) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => (c, format!("exited with code {c}")),
            (None, Some(sig)) => {
                let name = nix::sys::signal::Signal::try_from(sig)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                (-1, format!("was killed by signal {sig}{name}"))
            }
            (None, None) => (-1, "ended with no exit code".into()),
        },
        Err(e) => (-1, format!("could not be waited for: {e}")),
    }
}

/// Copies the application binary (local path or `file://` URL) into `dir`.
fn fetch_binary(url: &str, sha256: Option<&str>, dir: &std::path::Path) -> Result<PathBuf, String> {
    let src = std::path::Path::new(url.strip_prefix("file://").unwrap_or(url));
    let name = src
        .file_name()
        .ok_or_else(|| format!("application binary URL '{url}' names no file"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dst = dir.join(name);
    if !dst.exists() {
        std::fs::copy(src, &dst)
            .map_err(|e| format!("cannot fetch application binary from {url}: {e}"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot make {} executable: {e}", dst.display()))?;
    }
    // Checked on every (re)launch: the copy runs only if it is what was
    // submitted.
    if let Some(want) = sha256 {
        let got =
            crate::sha256_file(&dst).map_err(|e| format!("cannot read {}: {e}", dst.display()))?;
        if !got.eq_ignore_ascii_case(want) {
            let _ = std::fs::remove_file(&dst);
            return Err(format!(
                "application binary {url} has SHA-256 {got}, not {want} as submitted: it changed after submission; submit it again"
            ));
        }
    }
    Ok(dst)
}

/// Makes the child receive SIGKILL when the worker dies, even by SIGKILL, so no
/// executor outlives its worker.
fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec; it only calls
    // prctl(PR_SET_PDEATHSIG), a single async-signal-safe system call, and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_runs_only_with_the_submitted_content() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app");
        std::fs::write(&src, b"#!/bin/sh\necho v1\n").unwrap();
        let sha = crate::sha256_file(&src).unwrap();
        let url = format!("file://{}", src.display());
        let run1 = dir.path().join("driver-1");
        let got = fetch_binary(&url, Some(&sha), &run1).unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), b"#!/bin/sh\necho v1\n");
        // Changed after submission: refused, and no copy is left to run.
        std::fs::write(&src, b"#!/bin/sh\necho v2\n").unwrap();
        let run2 = dir.path().join("driver-2");
        let e = fetch_binary(&url, Some(&sha), &run2).unwrap_err();
        assert!(e.contains("changed after submission"), "{e}");
        assert!(!run2.join("app").exists());
        // A copy tampered with between supervised relaunches is refused too.
        std::fs::write(&got, b"tampered").unwrap();
        assert!(fetch_binary(&url, Some(&sha), &run1).is_err());
    }

    #[test]
    fn finished_lists_lose_their_oldest_tenth() {
        let mut v: Vec<u32> = (0..1001).collect();
        trim_oldest(&mut v);
        assert_eq!(v.len(), 901);
        assert_eq!(v[0], 100);
        let mut small = vec![1, 2, 3];
        trim_oldest(&mut small);
        assert_eq!(small, vec![2, 3]);
    }

    #[test]
    fn work_dir_cleanup_looks_at_the_newest_file_inside_not_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let day_ago = std::time::SystemTime::now() - Duration::from_secs(24 * 3600);
        let old_file = |p: std::path::PathBuf| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let f = std::fs::File::create(&p).unwrap();
            f.set_modified(day_ago).unwrap();
        };
        // Old files only, in a directory touched just now: removed.
        old_file(dir.path().join("app-old/0/stdout"));
        std::fs::write(dir.path().join("app-old/scratch"), b"x").unwrap();
        std::fs::remove_file(dir.path().join("app-old/scratch")).unwrap();
        // A new file deep inside: kept.
        old_file(dir.path().join("app-new/0/stdout"));
        std::fs::write(dir.path().join("app-new/0/stderr"), b"x").unwrap();
        // Old but still running: kept.
        old_file(dir.path().join("app-live/0/stdout"));
        // No files at all: removed.
        std::fs::create_dir_all(dir.path().join("app-empty/0")).unwrap();
        // Cached binaries: one unused for a day goes, one used recently stays
        // (the cache itself is not an application's directory).
        let cache = crate::binaries::cache_dir(dir.path());
        old_file(cache.join("aa"));
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("bb"), b"x").unwrap();
        let live = ["app-live".to_string()].into_iter().collect();
        cleanup_work_dir(dir.path(), &live, Duration::from_secs(3600));
        assert!(!cache.join("aa").exists());
        assert!(cache.join("bb").exists());
        assert!(!dir.path().join("app-old").exists());
        assert!(dir.path().join("app-new").exists());
        assert!(dir.path().join("app-live").exists());
        assert!(!dir.path().join("app-empty").exists());
    }
}
