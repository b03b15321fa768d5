//! The deploy protocol (Spark's DeployMessages): what the Master, Workers and
//! application clients say to each other. Each enum is what one endpoint
//! receives; self-sent timer messages are included, marked as internal.

use flint_rpc::RpcAddress;
use serde::{Deserialize, Serialize};

pub const MASTER_ENDPOINT: &str = "Master";
pub const WORKER_ENDPOINT: &str = "Worker";
pub const APP_CLIENT_ENDPOINT: &str = "AppClient";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkerState {
    Alive,
    Dead,
    Decommissioned,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutorState {
    Launching,
    Running,
    Killed,
    Failed,
    Lost,
    Exited,
    Decommissioned,
}

impl ExecutorState {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            ExecutorState::Killed
                | ExecutorState::Failed
                | ExecutorState::Lost
                | ExecutorState::Exited
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplicationState {
    Waiting,
    Running,
    Finished,
    Failed,
    Killed,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DriverState {
    Submitted,
    Running,
    Finished,
    Relaunching,
    Unknown,
    Killed,
    Failed,
    Error,
}

impl DriverState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DriverState::Finished | DriverState::Killed | DriverState::Failed | DriverState::Error
        )
    }
}

/// A driver to run on a worker (cluster deploy mode). `{{WORKER_URL}}` and
/// `{{USER_JAR}}` (the fetched application binary's path) are replaced in the
/// command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriverDescription {
    /// Where the application binary is: a local path or `file://` URL.
    pub binary_url: String,
    pub memory_mb: u64,
    pub cores: u32,
    pub supervise: bool,
    pub command: Command,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitDriverResponse {
    pub success: bool,
    pub driver_id: Option<String>,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KillDriverResponse {
    pub driver_id: String,
    pub success: bool,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriverStatusResponse {
    pub found: bool,
    pub state: Option<DriverState>,
    pub worker_id: Option<String>,
    pub worker_host_port: Option<String>,
    pub exception: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriverSummary {
    pub id: String,
    pub starttime: i64,
    pub state: DriverState,
    pub cores: u32,
    pub memory: u64,
    pub submitdate: String,
    pub worker: String,
    pub mainclass: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecoveryState {
    Standby,
    Alive,
    Recovering,
    CompletingRecovery,
}

/// How to start a process on a worker; `{{EXECUTOR_ID}}`, `{{HOSTNAME}}`,
/// `{{CORES}}`, `{{APP_ID}}` and `{{WORKER_URL}}` in the arguments are replaced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Command {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplicationDescription {
    pub name: String,
    /// `flint.cores.max`; `None` = as many as the cluster offers.
    pub max_cores: Option<u32>,
    pub memory_per_executor_mb: u64,
    /// `flint.executor.cores`; `None` = one executor per worker taking all its cores.
    pub cores_per_executor: Option<u32>,
    pub command: Command,
    pub app_ui_url: String,
    pub event_log_dir: Option<String>,
    pub user: String,
}

/// Messages the Master receives.
#[derive(Debug, Serialize, Deserialize)]
pub enum MasterMsg {
    RegisterWorker {
        id: String,
        host: String,
        port: u16,
        cores: u32,
        memory_mb: u64,
        webui_address: String,
        /// The address the worker used to reach this master.
        master_address: RpcAddress,
    },
    Heartbeat {
        worker_id: String,
    },
    ExecutorStateChanged {
        app_id: String,
        exec_id: u32,
        state: ExecutorState,
        message: Option<String>,
        exit_status: Option<i32>,
    },
    WorkerLatestState {
        id: String,
        executors: Vec<(String, u32)>,
        driver_ids: Vec<String>,
    },
    RegisterApplication {
        desc: ApplicationDescription,
    },
    UnregisterApplication {
        app_id: String,
    },
    KillApplication {
        app_id: String,
    },
    /// Ask; answered with `MasterStateResponse`.
    RequestMasterState,
    /// Internal timer.
    CheckForWorkerTimeOut,
    /// Ask; answered with `SubmitDriverResponse`.
    RequestSubmitDriver {
        desc: DriverDescription,
    },
    /// Ask; answered with `KillDriverResponse`.
    RequestKillDriver {
        driver_id: String,
    },
    /// Ask; answered with `DriverStatusResponse`.
    RequestDriverStatus {
        driver_id: String,
    },
    DriverStateChanged {
        driver_id: String,
        state: DriverState,
        exception: Option<String>,
    },
}

/// Messages a Worker receives.
#[derive(Debug, Serialize, Deserialize)]
pub enum WorkerMsg {
    RegisteredWorker {
        master: RpcAddress,
        master_web_ui_url: String,
        master_address: RpcAddress,
        duplicate: bool,
    },
    RegisterWorkerFailed {
        message: String,
    },
    MasterInStandby,
    ReconnectWorker {
        master_url: String,
    },
    LaunchExecutor {
        master_url: String,
        app_id: String,
        exec_id: u32,
        app_desc: ApplicationDescription,
        cores: u32,
        memory_mb: u64,
    },
    KillExecutor {
        master_url: String,
        app_id: String,
        exec_id: u32,
    },
    ApplicationFinished {
        id: String,
    },
    LaunchDriver {
        driver_id: String,
        desc: DriverDescription,
    },
    KillDriver {
        driver_id: String,
    },
    /// Internal: a driver runner's final report.
    DriverStateChanged {
        driver_id: String,
        state: DriverState,
        exception: Option<String>,
    },
    /// Internal: a driver process (re)started.
    DriverStarted {
        driver_id: String,
        pid: Option<u32>,
    },
    /// Ask; answered with `WorkerStateResponse`.
    RequestWorkerState,
    /// Internal: heartbeat timer.
    SendHeartbeat,
    /// Internal: registration retry timer (carries the timer's generation).
    ReregisterWithMaster {
        generation: u64,
    },
    /// Internal: an executor process started.
    ExecutorStarted {
        app_id: String,
        exec_id: u32,
        pid: Option<u32>,
    },
    /// Internal: an executor runner's report.
    ExecutorStateChanged {
        app_id: String,
        exec_id: u32,
        state: ExecutorState,
        message: Option<String>,
        exit_status: Option<i32>,
    },
    /// Internal: periodic work-dir cleanup timer.
    WorkDirCleanup,
    /// Internal: stop, killing every child process.
    Shutdown,
}

/// Messages an application's client endpoint (in the driver) receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AppClientMsg {
    RegisteredApplication {
        app_id: String,
        master: RpcAddress,
    },
    ExecutorAdded {
        id: u32,
        worker_id: String,
        host_port: String,
        cores: u32,
        memory_mb: u64,
    },
    ExecutorUpdated {
        id: u32,
        state: ExecutorState,
        message: Option<String>,
        exit_status: Option<i32>,
        worker_host: Option<String>,
    },
    WorkerRemoved {
        id: String,
        host: String,
        message: String,
    },
    ApplicationRemoved {
        message: String,
    },
}

/// One worker as the Master reports it (the `/json` view uses Spark's names).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSummary {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub webuiaddress: String,
    pub cores: u32,
    pub coresused: u32,
    pub coresfree: u32,
    pub memory: u64,
    pub memoryused: u64,
    pub memoryfree: u64,
    pub state: WorkerState,
    pub lastheartbeat: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppSummary {
    pub id: String,
    pub starttime: i64,
    pub name: String,
    pub cores: u32,
    pub user: String,
    pub memoryperexecutor: u64,
    pub submitdate: String,
    pub state: ApplicationState,
    pub duration: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MasterStateResponse {
    pub url: String,
    pub workers: Vec<WorkerSummary>,
    pub aliveworkers: usize,
    pub cores: u32,
    pub coresused: u32,
    pub memory: u64,
    pub memoryused: u64,
    pub activeapps: Vec<AppSummary>,
    pub completedapps: Vec<AppSummary>,
    pub activedrivers: Vec<DriverSummary>,
    pub completeddrivers: Vec<DriverSummary>,
    pub status: RecoveryState,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecutorSummary {
    pub id: u32,
    pub appid: String,
    pub cores: u32,
    pub memory: u64,
    pub state: ExecutorState,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerStateResponse {
    pub id: String,
    pub masterurl: String,
    pub cores: u32,
    pub coresused: u32,
    pub memory: u64,
    pub memoryused: u64,
    pub executors: Vec<ExecutorSummary>,
    pub finishedexecutors: Vec<ExecutorSummary>,
    pub drivers: Vec<DriverSummary>,
    pub finisheddrivers: Vec<DriverSummary>,
}
