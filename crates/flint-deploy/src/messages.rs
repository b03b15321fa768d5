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
    /// Its SHA-256 (hex) when submitted: a worker runs only that content.
    pub binary_sha256: Option<String>,
    /// The binary by content, fetched from the Master (`flint submit`
    /// uploaded it); when set, `binary_url` is not read.
    pub binary: Option<BinaryRef>,
    pub memory_mb: u64,
    pub cores: u32,
    pub supervise: bool,
    pub command: Command,
    /// Who submitted it (checked against the Master's ACLs when
    /// `flint.acls.enable` is on; declared by an authenticated client).
    pub user: String,
    /// What the UIs show as its main class (Spark's mainClass): the
    /// submitted binary's file name. Shown only, never run.
    pub name: String,
}

impl DriverDescription {
    /// The UIs' "main class": its name, else the program it runs.
    pub fn main_class(&self) -> String {
        if self.name.is_empty() {
            self.command.program.clone()
        } else {
            self.name.clone()
        }
    }
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
    /// The application binary by content; `{{APP_BINARY}}` in the command
    /// becomes the Worker's verified local copy. None: the command names a
    /// program on the Worker's machine (local-cluster, tests).
    pub binary: Option<BinaryRef>,
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

/// An application binary by content: its SHA-256, size, and who serves it
/// (the `Binaries` endpoint of a driver or the Master).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryRef {
    pub sha256: String,
    pub size: u64,
    pub source: RpcAddress,
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
        /// Who asks (see `DriverDescription::user`).
        user: String,
    },
    /// Ask; answered with `MasterStateResponse`.
    RequestMasterState,
    /// Ask; answered with `SubmitDriverResponse`.
    RequestSubmitDriver {
        desc: DriverDescription,
    },
    /// Ask; answered with `KillDriverResponse`.
    RequestKillDriver {
        driver_id: String,
        /// Who asks (see `DriverDescription::user`).
        user: String,
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
    /// Ask; answered with `Result<bool, String>` (true: the Master has the
    /// whole binary): a part of an application binary `flint submit` uploads,
    /// in order, at most `binaries::CHUNK` bytes each.
    UploadBinary {
        sha256: String,
        size: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Who uploads (checked against the ACLs as a submission is).
        user: String,
    },
    /// From an application's driver: end these executors of its own (say,
    /// ones that stopped heartbeating); the Master may grant replacements.
    KillExecutors {
        app_id: String,
        executor_ids: Vec<u32>,
    },
    /// Ask, from an application's driver: the number of executors it wants
    /// in all (Spark's RequestExecutors); the Master launches none past it.
    /// A stopping driver asks for 0 before it stops its executors, so their
    /// exits are not replaced. Answered with `()`.
    RequestExecutors {
        app_id: String,
        total: u32,
    },
    // Internal variants stay last: serde numbers the variants it can
    // deserialize consecutively, so a skipped one in the middle would shift
    // the wire index of every variant after it.
    /// Internal timer.
    /// Internal: posted only inside the master, never decoded from the wire.
    #[serde(skip_deserializing)]
    CheckForWorkerTimeOut,
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
    /// Ask; answered with `WorkerStateResponse`.
    RequestWorkerState,
    // Internal variants stay last: serde numbers the variants it can
    // deserialize consecutively, so a skipped one in the middle would shift
    // the wire index of every variant after it.
    /// Internal: a driver runner's final report.
    #[serde(skip_deserializing)]
    DriverStateChanged {
        driver_id: String,
        state: DriverState,
        exception: Option<String>,
    },
    /// Internal: a driver process (re)started.
    #[serde(skip_deserializing)]
    DriverStarted {
        driver_id: String,
        pid: Option<u32>,
    },
    /// Internal: heartbeat timer.
    #[serde(skip_deserializing)]
    SendHeartbeat,
    /// Internal: registration retry timer (carries the timer's generation).
    #[serde(skip_deserializing)]
    ReregisterWithMaster {
        generation: u64,
    },
    /// Internal: an executor process started.
    #[serde(skip_deserializing)]
    ExecutorStarted {
        app_id: String,
        exec_id: u32,
        pid: Option<u32>,
    },
    /// Internal: an executor runner's report.
    #[serde(skip_deserializing)]
    ExecutorStateChanged {
        app_id: String,
        exec_id: u32,
        state: ExecutorState,
        message: Option<String>,
        exit_status: Option<i32>,
    },
    /// Internal: periodic work-dir cleanup timer.
    #[serde(skip_deserializing)]
    WorkDirCleanup,
    /// Internal: stop, killing every child process.
    #[serde(skip_deserializing)]
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

impl WorkerMsg {
    /// The message's name, for logs (never its contents).
    pub fn kind(&self) -> &'static str {
        match self {
            WorkerMsg::RegisteredWorker { .. } => "RegisteredWorker",
            WorkerMsg::RegisterWorkerFailed { .. } => "RegisterWorkerFailed",
            WorkerMsg::MasterInStandby => "MasterInStandby",
            WorkerMsg::ReconnectWorker { .. } => "ReconnectWorker",
            WorkerMsg::LaunchExecutor { .. } => "LaunchExecutor",
            WorkerMsg::KillExecutor { .. } => "KillExecutor",
            WorkerMsg::ApplicationFinished { .. } => "ApplicationFinished",
            WorkerMsg::LaunchDriver { .. } => "LaunchDriver",
            WorkerMsg::KillDriver { .. } => "KillDriver",
            WorkerMsg::DriverStateChanged { .. } => "DriverStateChanged",
            WorkerMsg::DriverStarted { .. } => "DriverStarted",
            WorkerMsg::RequestWorkerState => "RequestWorkerState",
            WorkerMsg::SendHeartbeat => "SendHeartbeat",
            WorkerMsg::ReregisterWithMaster { .. } => "ReregisterWithMaster",
            WorkerMsg::ExecutorStarted { .. } => "ExecutorStarted",
            WorkerMsg::ExecutorStateChanged { .. } => "ExecutorStateChanged",
            WorkerMsg::WorkDirCleanup => "WorkDirCleanup",
            WorkerMsg::Shutdown => "Shutdown",
        }
    }
}

/// Checks an id that becomes a file name under a work directory (application,
/// driver and worker ids): 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with
/// a dot, so it can never be `..`, absolute, empty, or carry a NUL or a slash.
pub fn check_id(kind: &str, id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        let shown: String = id.chars().take(64).collect();
        Err(format!(
            "{kind} {shown:?} is not a valid id (1-128 of A-Z a-z 0-9 . _ -, not starting with '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_a_directory_are_refused() {
        for good in ["app-20261130120000-0001", "driver-1", "w1", "a.b_c-d"] {
            assert!(check_id("id", good).is_ok(), "{good}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc",
            "a\0b",
            ".hidden",
            "é",
            long.as_str(),
            "a b",
        ] {
            assert!(check_id("id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn internal_messages_cannot_be_decoded_from_the_wire() {
        for m in [
            WorkerMsg::Shutdown,
            WorkerMsg::SendHeartbeat,
            WorkerMsg::WorkDirCleanup,
            WorkerMsg::ExecutorStarted {
                app_id: "a".into(),
                exec_id: 0,
                pid: Some(1),
            },
            WorkerMsg::DriverStarted {
                driver_id: "d".into(),
                pid: Some(1),
            },
        ] {
            let bytes = postcard::to_stdvec(&m).unwrap();
            assert!(
                postcard::from_bytes::<WorkerMsg>(&bytes).is_err(),
                "{} decoded from bytes",
                m.kind()
            );
        }
        let bytes = postcard::to_stdvec(&MasterMsg::CheckForWorkerTimeOut).unwrap();
        assert!(postcard::from_bytes::<MasterMsg>(&bytes).is_err());
        // Wire messages keep their indices (the last of each enum decodes as
        // itself, so no skipped variant shifted it).
        let bytes = postcard::to_stdvec(&WorkerMsg::RequestWorkerState).unwrap();
        assert!(matches!(
            postcard::from_bytes::<WorkerMsg>(&bytes),
            Ok(WorkerMsg::RequestWorkerState)
        ));
        let bytes = postcard::to_stdvec(&MasterMsg::DriverStateChanged {
            driver_id: "d".into(),
            state: DriverState::Finished,
            exception: None,
        })
        .unwrap();
        assert!(matches!(
            postcard::from_bytes::<MasterMsg>(&bytes),
            Ok(MasterMsg::DriverStateChanged { .. })
        ));
    }

    fn cases() -> u32 {
        std::env::var("FLINT_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512)
    }

    fn samples() -> Vec<Vec<u8>> {
        let cmd = Command {
            program: "p".into(),
            args: vec!["a".into()],
            env: vec![("K".into(), "V".into())],
        };
        let desc = ApplicationDescription {
            name: "n".into(),
            binary: None,
            max_cores: Some(2),
            memory_per_executor_mb: 512,
            cores_per_executor: None,
            command: cmd.clone(),
            app_ui_url: String::new(),
            event_log_dir: None,
            user: "u".into(),
        };
        vec![
            postcard::to_stdvec(&WorkerMsg::LaunchExecutor {
                master_url: "flint://h:1".into(),
                app_id: "app-1".into(),
                exec_id: 1,
                app_desc: desc.clone(),
                cores: 1,
                memory_mb: 1,
            })
            .unwrap(),
            postcard::to_stdvec(&MasterMsg::RegisterApplication { desc }).unwrap(),
            postcard::to_stdvec(&MasterMsg::RequestSubmitDriver {
                desc: DriverDescription {
                    binary_url: "file:///x".into(),
                    binary_sha256: None,
                    binary: None,
                    memory_mb: 1,
                    cores: 1,
                    supervise: true,
                    command: cmd,
                    user: "u".into(),
                    name: "x".into(),
                },
            })
            .unwrap(),
            postcard::to_stdvec(&AppClientMsg::ExecutorUpdated {
                id: 3,
                state: ExecutorState::Lost,
                message: Some("m".into()),
                exit_status: Some(1),
                worker_host: None,
            })
            .unwrap(),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases()))]
        /// Deploy messages arrive from the network: random and mutated valid
        /// encodings decode to a message or an error, never a panic.
        #[test]
        fn deploy_messages_from_bytes_never_panic(
            random in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            pick in 0usize..4,
            flips in proptest::collection::vec((0usize..512, 1u8..=255), 0..6),
            cut in proptest::option::of(0usize..512),
        ) {
            let _ = postcard::from_bytes::<WorkerMsg>(&random);
            let _ = postcard::from_bytes::<MasterMsg>(&random);
            let _ = postcard::from_bytes::<AppClientMsg>(&random);
            let _ = postcard::from_bytes::<crate::binaries::BinaryMsg>(&random);
            let mut b = samples()[pick].clone();
            let n = b.len();
            for (at, x) in flips {
                b[at % n] ^= x;
            }
            if let Some(c) = cut {
                b.truncate(c % (n + 1));
            }
            let _ = postcard::from_bytes::<WorkerMsg>(&b);
            let _ = postcard::from_bytes::<MasterMsg>(&b);
            let _ = postcard::from_bytes::<AppClientMsg>(&b);
            let _ = postcard::from_bytes::<crate::binaries::BinaryMsg>(&b);
        }
    }
}
