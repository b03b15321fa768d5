//! `flint submit` (Spark's spark-submit and standalone `Client`): runs an
//! application binary with the submitted settings, either here (client deploy
//! mode: the driver is a child of this command) or on a Worker the Master picks
//! (cluster deploy mode: the Master is asked to launch the driver, supervised
//! if `--supervise`). Also `--kill` and `--status` of a submitted driver.
//!
//! Settings reach the application through [`SUBMIT_CONF_VAR`]; a value the
//! application sets in code wins, as in Spark. In cluster mode the binary is
//! named by an absolute path every Worker can read (as Spark's `file://` jars)
//! together with its SHA-256: a Worker runs it only if the content matches.
//! The cluster secret never travels in the submission; the Worker hands its
//! own to the driver it launches.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use flint_core::conf::{SUBMIT_CONF_VAR, encode_submitted};
use flint_core::error::{FlintError, Result};
use flint_deploy::messages::{
    Command, DriverDescription, DriverState, DriverStatusResponse, KillDriverResponse,
    MASTER_ENDPOINT, MasterMsg, SubmitDriverResponse,
};
use flint_rpc::{RpcAddress, RpcConf, RpcEnv};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeployMode {
    Client,
    Cluster,
}

/// `flint submit [options] BINARY [ARGS...]`
#[derive(Parser, Debug)]
#[command(
    name = "flint submit",
    about = "Run an application on a cluster or locally"
)]
pub struct SubmitArgs {
    /// flint://host:port[,host:port], local[N] or local-cluster[N,C,M].
    #[arg(long)]
    pub master: Option<String>,
    /// Where the driver runs: here (client) or on a Worker (cluster).
    #[arg(long, value_enum, default_value = "client")]
    pub deploy_mode: DeployMode,
    #[arg(long)]
    pub name: Option<String>,
    /// A setting for the application, KEY=VALUE (repeatable).
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    pub conf: Vec<String>,
    /// Settings in spark-defaults.conf format (`key value` lines).
    #[arg(long)]
    pub properties_file: Option<PathBuf>,
    /// Memory of the driver in cluster mode, e.g. 1g (flint.driver.memory).
    #[arg(long)]
    pub driver_memory: Option<String>,
    /// Cores of the driver in cluster mode (flint.driver.cores).
    #[arg(long)]
    pub driver_cores: Option<u32>,
    #[arg(long)]
    pub executor_memory: Option<String>,
    #[arg(long)]
    pub executor_cores: Option<u32>,
    #[arg(long)]
    pub total_executor_cores: Option<u32>,
    /// Restart the driver when it fails (cluster mode).
    #[arg(long)]
    pub supervise: bool,
    /// Kill a driver submitted in cluster mode.
    #[arg(long, value_name = "DRIVER_ID", conflicts_with = "status")]
    pub kill: Option<String>,
    /// Show the state of a driver submitted in cluster mode.
    #[arg(long, value_name = "DRIVER_ID")]
    pub status: Option<String>,
    /// The application binary, then its arguments.
    // The first value ends the options: the binary's own flags follow it.
    #[arg(trailing_var_arg = true)]
    pub app: Vec<String>,
}

fn bad(msg: impl Into<String>) -> FlintError {
    FlintError::Config(msg.into())
}

/// How client deploy mode starts the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientLaunch {
    /// As a child; its exit status becomes ours (library callers, tests).
    Child,
    /// In place of this process (the `flint` command, as spark-submit runs
    /// the driver in its own JVM): signals reach the driver directly.
    Exec,
}

/// Runs `flint submit` with `args` (without the program name); returns the
/// exit code for the command.
pub fn main(args: impl IntoIterator<Item = String>) -> Result<i32> {
    main_with(args, ClientLaunch::Child)
}

pub fn main_with(args: impl IntoIterator<Item = String>, launch: ClientLaunch) -> Result<i32> {
    let a =
        match SubmitArgs::try_parse_from(std::iter::once("flint submit".to_string()).chain(args)) {
            Ok(a) => a,
            Err(e) if !e.use_stderr() => {
                // --help: print it, succeed (a closed pipe is no error).
                use std::io::Write;
                let _ = write!(std::io::stdout(), "{e}");
                return Ok(0);
            }
            Err(e) => return Err(bad(e.to_string())),
        };
    run_with(a, launch)
}

pub fn run(a: SubmitArgs) -> Result<i32> {
    run_with(a, ClientLaunch::Child)
}

pub fn run_with(a: SubmitArgs, launch: ClientLaunch) -> Result<i32> {
    let conf = settings(&a)?;
    let master = conf.get("flint.master").cloned();
    if a.conf.iter().any(|kv| {
        kv.split_once('=')
            .is_some_and(|(k, _)| k == "flint.authenticate.secret")
    }) {
        return Err(bad(
            "--conf flint.authenticate.secret=...: a secret on the command line is visible to every user (ps); put it in the file --properties-file names, or use flint.authenticate.secret.file",
        ));
    }
    if let Some(id) = a.kill.as_deref().or(a.status.as_deref()) {
        let master = master.ok_or_else(|| bad("--kill and --status need --master flint://..."))?;
        let client = MasterClient::new(&master, &conf)?;
        return if a.kill.is_some() {
            let r: KillDriverResponse = client.ask_any(&MasterMsg::RequestKillDriver {
                driver_id: id.to_string(),
                user: flint_deploy::current_user(),
            })?;
            println!("{}", r.message);
            Ok(if r.success { 0 } else { 1 })
        } else {
            let r: DriverStatusResponse = client.ask_any(&MasterMsg::RequestDriverStatus {
                driver_id: id.to_string(),
            })?;
            report_status(id, &r);
            Ok(if r.found { 0 } else { 1 })
        };
    }
    let (binary, args) = a.app.split_first().ok_or_else(|| {
        bad("name the application binary to run: flint submit [options] BINARY [ARGS...]")
    })?;
    if a.deploy_mode == DeployMode::Client && a.supervise {
        return Err(bad(
            "--supervise restarts a driver a Worker runs: use it with --deploy-mode cluster",
        ));
    }
    if let Some(m) = &master {
        // Refused here, not by the application it would start.
        flint_core::conf::MasterUrl::parse(m)?;
    }
    let cluster_master = match a.deploy_mode {
        DeployMode::Client => None,
        DeployMode::Cluster => {
            let master = master.ok_or_else(|| {
                bad("cluster deploy mode needs --master flint://host:port (the driver runs on a Worker)")
            })?;
            if !master.starts_with("flint://") && !master.starts_with("spark://") {
                return Err(bad(format!(
                    "Cluster deploy mode is not compatible with master \"{master}\": use flint://host:port"
                )));
            }
            Some(master)
        }
    };
    let resolved = resolve(binary)?;
    check_binary(&resolved)?;
    let binary = &resolved.to_string_lossy().into_owned();
    match cluster_master {
        None => client_mode(binary, args, &conf, launch),
        Some(master) => cluster_mode(&a, &master, binary, args, conf),
    }
}

/// The application's settings: the properties file, then `--conf`, then the
/// named flags (each overriding the one before).
fn settings(a: &SubmitArgs) -> Result<BTreeMap<String, String>> {
    let mut conf = BTreeMap::new();
    if let Some(p) = &a.properties_file {
        let text = std::fs::read_to_string(p)
            .map_err(|e| FlintError::io("cannot read properties file", p, e))?;
        conf.extend(flint_deploy::parse_properties(&text, &p.display().to_string()).map_err(bad)?);
    }
    for kv in &a.conf {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| bad(format!("--conf {kv}: expected KEY=VALUE")))?;
        conf.insert(k.to_string(), v.to_string());
    }
    let flags = [
        ("flint.master", a.master.clone()),
        ("flint.app.name", a.name.clone()),
        ("flint.driver.memory", a.driver_memory.clone()),
        ("flint.driver.cores", a.driver_cores.map(|c| c.to_string())),
        ("flint.executor.memory", a.executor_memory.clone()),
        (
            "flint.executor.cores",
            a.executor_cores.map(|c| c.to_string()),
        ),
        (
            "flint.cores.max",
            a.total_executor_cores.map(|c| c.to_string()),
        ),
    ];
    for (k, v) in flags {
        if let Some(v) = v {
            conf.insert(k.to_string(), v);
        }
    }
    // Here as well as in the driver, so that cluster deploy mode refuses them
    // before a Worker launches a driver that would only fail.
    let mut check = flint_core::FlintConf::new();
    for (k, v) in &conf {
        check.set_mut(k.clone(), v.clone());
    }
    crate::driver::resource_settings(&check)?;
    Ok(conf)
}

fn encode(conf: &BTreeMap<String, String>) -> Result<String> {
    encode_submitted(conf.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The bytes `flint::init` keeps in a binary, stored here XOR 0x5a so that
/// this code (linked into every application) does not itself contain them.
const MARKER_XOR: [u8; 31] = {
    let plain = *b"\0flint-application-calls-init\0\0";
    let mut out = [0u8; 31];
    let mut i = 0;
    while i < 31 {
        out[i] = plain[i] ^ 0x5a;
        i += 1;
    }
    out
};

/// Whether the binary at `path` calls `flint::init()` (carries its marker).
pub fn is_flint_application(path: &std::path::Path) -> std::io::Result<bool> {
    use std::io::Read;
    let marker: Vec<u8> = MARKER_XOR.iter().map(|b| b ^ 0x5a).collect();
    let finder = memchr::memmem::Finder::new(&marker);
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; (4 << 20) + marker.len()];
    let mut keep = 0;
    loop {
        let n = f.read(&mut buf[keep..])?;
        if n == 0 {
            return Ok(false);
        }
        let end = keep + n;
        if finder.find(&buf[..end]).is_some() {
            return Ok(true);
        }
        // Keep a tail so a marker across two reads is still found.
        keep = end.min(marker.len() - 1);
        buf.copy_within(end - keep..end, 0);
    }
}

/// ELF machine of this build (e_machine).
const fn this_machine() -> Option<u16> {
    if cfg!(target_arch = "x86_64") {
        Some(62)
    } else if cfg!(target_arch = "aarch64") {
        Some(183)
    } else {
        None
    }
}

/// Refuses, before anything is launched, what cannot run as a Flint
/// application here: a missing or non-executable file, another
/// architecture's binary, or a program that never calls `flint::init()`.
pub fn check_binary(path: &std::path::Path) -> Result<()> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let md = std::fs::metadata(path)
        .map_err(|e| FlintError::io("cannot find application binary", path, e))?;
    if !md.is_file() {
        return Err(bad(format!("{shown} is not a file")));
    }
    if md.permissions().mode() & 0o111 == 0 {
        return Err(bad(format!(
            "{shown} is not executable (chmod +x it, or build it with cargo)"
        )));
    }
    let mut head = [0u8; 20];
    let elf = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head[..4] == *b"\x7fELF";
    if !elf {
        return Err(bad(format!(
            "{shown} is not a compiled program (no ELF header): submit the binary cargo built, not a script"
        )));
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    if let Some(want) = this_machine()
        && head[5] == 1
        && machine != want
    {
        return Err(bad(format!(
            "{shown} is built for another architecture (ELF machine {machine}, this machine's is {want}): build it for {}",
            std::env::consts::ARCH
        )));
    }
    if !is_flint_application(path).map_err(|e| FlintError::io("cannot read", path, e))? {
        return Err(bad(format!(
            "{shown} is not a Flint application: its main must call flint::init() first"
        )));
    }
    Ok(())
}

/// A binary named without a slash is looked up in PATH, as a shell would.
fn resolve(binary: &str) -> Result<PathBuf> {
    // A path, or a file in this directory (as spark-submit takes its jar),
    // else a command in PATH.
    if binary.contains('/') || std::path::Path::new(binary).is_file() {
        return Ok(PathBuf::from(binary));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            bad(format!(
                "application binary {binary} is not in PATH; give its path"
            ))
        })
}

/// The driver runs here: in place of this process, or as a child whose exit
/// status is ours (128 + the signal that killed it, as a shell reports).
fn client_mode(
    binary: &str,
    args: &[String],
    conf: &BTreeMap<String, String>,
    launch: ClientLaunch,
) -> Result<i32> {
    let mut cmd = std::process::Command::new(binary);
    cmd.args(args).env(SUBMIT_CONF_VAR, encode(conf)?);
    if launch == ClientLaunch::Exec {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        return Err(FlintError::io("cannot run application binary", binary, e));
    }
    let status = cmd
        .status()
        .map_err(|e| FlintError::io("cannot run application binary", binary, e))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

fn cluster_mode(
    a: &SubmitArgs,
    master: &str,
    binary: &str,
    args: &[String],
    mut conf: BTreeMap<String, String>,
) -> Result<i32> {
    let path = std::fs::canonicalize(binary)
        .map_err(|e| FlintError::io("cannot find application binary", binary, e))?;
    let sha256 = flint_deploy::sha256_file(&path)
        .map_err(|e| FlintError::io("cannot read application binary", &path, e))?;
    let size = std::fs::metadata(&path)
        .map_err(|e| FlintError::io("cannot read application binary", &path, e))?
        .len();
    let client = MasterClient::new(master, &conf)?;
    // The secret stays here: the Worker gives the driver its own.
    conf.remove("flint.authenticate.secret");
    conf.remove("flint.authenticate.secret.file");
    let memory_mb = match conf.get("flint.driver.memory") {
        Some(m) => parse_mb(m)?,
        None => 1024,
    };
    let cores = match conf.get("flint.driver.cores") {
        Some(c) => c
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| bad(format!("flint.driver.cores={c} is not a positive number")))?,
        None => 1,
    };
    let wait = conf
        .get("flint.standalone.submit.waitAppCompletion")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut desc = DriverDescription {
        binary_url: String::new(),
        binary_sha256: Some(sha256.clone()),
        binary: None,
        memory_mb,
        cores,
        supervise: a.supervise,
        command: Command {
            program: "{{USER_JAR}}".into(),
            args: args.to_vec(),
            env: vec![(SUBMIT_CONF_VAR.into(), encode(&conf)?)],
        },
        user: flint_deploy::current_user(),
        name: std::path::Path::new(binary)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    // The binary goes to a Master (content-addressed), which Workers fetch it
    // from; a standby Master refuses the driver, so the next one is tried.
    let mut last = None;
    for m in &client.masters {
        if let Err(e) = client.upload(m, &path, &sha256, size) {
            eprintln!("cannot upload the application binary to {m}: {e}");
            continue;
        }
        desc.binary = Some(flint_deploy::messages::BinaryRef {
            sha256: sha256.clone(),
            size,
            source: m.clone(),
        });
        match client
            .ask::<SubmitDriverResponse>(m, &MasterMsg::RequestSubmitDriver { desc: desc.clone() })
        {
            Ok(r) if r.success => {
                last = Some(r);
                break;
            }
            Ok(r) => last = Some(r),
            Err(e) => eprintln!("master {m}: {e}"),
        }
    }
    let r = last.ok_or_else(|| bad("All masters are unresponsive! Giving up."))?;
    println!("{}", r.message);
    let Some(id) = r.driver_id.filter(|_| r.success) else {
        return Ok(1);
    };
    // Spark's Client reports the driver's state once it leaves SUBMITTED;
    // with waitAppCompletion it waits for the end.
    let started = Instant::now();
    let mut last_state = None;
    let mut hinted = false;
    loop {
        let st: DriverStatusResponse = client.ask_any(&MasterMsg::RequestDriverStatus {
            driver_id: id.clone(),
        })?;
        if !st.found {
            // Forgotten (say, a master that failed over): waiting would
            // never end.
            report_status(&id, &st);
            return Ok(1);
        }
        let state = st.state;
        let finished = matches!(
            state,
            Some(
                DriverState::Finished
                    | DriverState::Failed
                    | DriverState::Error
                    | DriverState::Killed
            )
        );
        let placed = !matches!(state, None | Some(DriverState::Submitted));
        // While waiting for the end, each change of state is told (a driver
        // that waits for a Worker, or is relaunched again and again, is not
        // a silent terminal).
        if wait && !finished && st.state != last_state {
            if let Some(s) = st.state {
                println!("State of {id} is {}", format!("{s:?}").to_uppercase());
                if s == DriverState::Relaunching
                    && let Some(e) = &st.exception
                {
                    println!("  ({e})");
                }
            }
            last_state = st.state;
        }
        if wait
            && state == Some(DriverState::Submitted)
            && !hinted
            && started.elapsed() > Duration::from_secs(10)
        {
            println!(
                "  (no Worker has taken it yet: one with the cores and memory it asks for, --driver-cores and --driver-memory, must be free; see the Master's web UI)"
            );
            hinted = true;
        }
        if finished || (!wait && (placed || started.elapsed() > Duration::from_secs(10))) {
            report_status(&id, &st);
            return Ok(match state {
                Some(DriverState::Failed | DriverState::Error | DriverState::Killed) => 1,
                _ => 0,
            });
        }
        // A quarter of the time waited so far, 10 to 200 ms: the end of a
        // short application is seen within a quarter of its run (a fixed 200
        // ms added 100 ms on average to a 0.15 s one), and a long one costs the
        // Master five requests a second.
        let pause =
            (started.elapsed() / 4).clamp(Duration::from_millis(10), Duration::from_millis(200));
        std::thread::sleep(pause);
    }
}

fn report_status(id: &str, st: &DriverStatusResponse) {
    if !st.found {
        println!("ERROR: Cluster master did not recognize {id}");
        return;
    }
    if let Some(s) = st.state {
        println!("State of {id} is {}", format!("{s:?}").to_uppercase());
    }
    if let (Some(w), Some(hp)) = (&st.worker_id, &st.worker_host_port) {
        println!("Driver running on {hp} ({w})");
    }
    if let Some(e) = &st.exception {
        println!("Exception from cluster was: {e}");
    }
}

fn parse_mb(v: &str) -> Result<u64> {
    let t = v.trim().to_ascii_lowercase();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t.as_str(), 1),
        Some((i, _)) => (
            &t[..i],
            match t[i..].trim_end_matches('b') {
                "m" => 1,
                "g" => 1024,
                "t" => 1024 * 1024,
                _ => return Err(bad(format!("driver memory {v}: use e.g. 1g or 512m"))),
            },
        ),
    };
    num.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| bad(format!("driver memory {v}: use e.g. 1g or 512m")))
}

/// Talks to the masters of a `flint://` URL with the cluster secret.
struct MasterClient {
    rt: tokio::runtime::Runtime,
    env: RpcEnv,
    masters: Vec<RpcAddress>,
}

impl MasterClient {
    fn new(url: &str, conf: &BTreeMap<String, String>) -> Result<Self> {
        let masters = crate::driver::masters_of(&url.replacen("spark://", "flint://", 1))?;
        let secret = flint_deploy::resolve_secret(|k| conf.get(k).map(String::as_str))
            .map_err(bad)?
            .or_else(|| std::env::var(flint_deploy::SECRET_ENV).ok());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| FlintError::io("cannot start", "an RPC runtime", e))?;
        let env = rt.block_on(async {
            RpcEnv::client(RpcConf {
                secret,
                ..RpcConf::default()
            })
        });
        Ok(MasterClient { rt, env, masters })
    }

    fn ask<R: serde::de::DeserializeOwned>(&self, m: &RpcAddress, msg: &MasterMsg) -> Result<R> {
        self.ask_raw(m, msg)
            .map_err(|e| FlintError::Cluster(e.to_string()))
    }

    fn ask_raw<R: serde::de::DeserializeOwned>(
        &self,
        m: &RpcAddress,
        msg: &MasterMsg,
    ) -> std::result::Result<R, flint_rpc::RpcError> {
        self.rt.block_on(
            self.env
                .ask::<_, R>(m, MASTER_ENDPOINT, msg, Duration::from_secs(30)),
        )
    }

    /// Sends the binary to master `m` in parts (nothing if it has it).
    fn upload(
        &self,
        m: &RpcAddress,
        path: &std::path::Path,
        sha256: &str,
        size: u64,
    ) -> Result<()> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)
            .map_err(|e| FlintError::io("cannot read application binary", path, e))?;
        let mut offset = 0u64;
        let mut busy = 0;
        let chunk = flint_deploy::binaries::chunk_for(&self.env);
        let mut buf = vec![0u8; chunk as usize];
        while offset < size {
            let want = (size - offset).min(chunk) as usize;
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(offset))
                .and_then(|_| f.read_exact(&mut buf[..want]))
                .map_err(|e| FlintError::io("cannot read application binary", path, e))?;
            let done: std::result::Result<bool, String> = self.ask(
                m,
                &MasterMsg::UploadBinary {
                    sha256: sha256.to_string(),
                    size,
                    offset,
                    data: buf[..want].to_vec(),
                    user: flint_deploy::current_user(),
                },
            )?;
            match done {
                Ok(true) => return Ok(()),
                Ok(false) => offset += want as u64,
                // The Master's upload slots are busy: wait for one (bounded).
                Err(e) if offset == 0 && e.contains("try again") && busy < 30 => {
                    busy += 1;
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(bad(e)),
            }
        }
        Err(bad("the master did not confirm the upload"))
    }

    /// The first master that answers (a standby one answers with a refusal,
    /// which is an answer too; the caller reports it).
    fn ask_any<R: serde::de::DeserializeOwned>(&self, msg: &MasterMsg) -> Result<R> {
        let mut errors = Vec::new();
        for m in &self.masters {
            match self.ask_raw::<R>(m, msg) {
                Ok(r) => return Ok(r),
                Err(e) => errors.push(format!("{m}: {e}")),
            }
        }
        Err(bad(format!(
            "All masters are unresponsive! Giving up. ({})",
            errors.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> SubmitArgs {
        SubmitArgs::try_parse_from(std::iter::once("flint submit").chain(v.iter().copied()))
            .unwrap()
    }

    #[test]
    fn flags_override_conf_which_overrides_the_properties_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("defaults.conf");
        std::fs::write(&p, "flint.app.name from-file\nflint.x 1\nflint.y 2\n").unwrap();
        let a = args(&[
            "--properties-file",
            p.to_str().unwrap(),
            "--conf",
            "flint.x=3",
            "--conf",
            "flint.app.name=from-conf",
            "--name",
            "from-flag",
            "--executor-memory",
            "2g",
            "--master",
            "local[2]",
            "app",
            "--flag-of-the-app",
            "x",
        ]);
        let c = settings(&a).unwrap();
        assert_eq!(c["flint.app.name"], "from-flag");
        assert_eq!(c["flint.x"], "3");
        assert_eq!(c["flint.y"], "2");
        assert_eq!(c["flint.executor.memory"], "2g");
        assert_eq!(c["flint.master"], "local[2]");
        assert_eq!(a.app, vec!["app", "--flag-of-the-app", "x"]);
    }

    #[test]
    fn only_flint_applications_for_this_machine_are_submitted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8], mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let e = |p: &std::path::Path| check_binary(p).unwrap_err().to_string();
        assert!(e(&dir.path().join("missing")).contains("cannot find"));
        assert!(e(&write("data", b"\x7fELF", 0o644)).contains("not executable"));
        assert!(
            e(&write("script", b"#!/bin/sh\necho hi\n", 0o755)).contains("not a compiled program")
        );
        // An ELF header for another machine (62 = x86-64, 183 = aarch64).
        let mut other = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        other.resize(18, 0);
        let foreign = if this_machine() == Some(62) {
            183u16
        } else {
            62
        };
        other.extend_from_slice(&foreign.to_le_bytes());
        other.resize(64, 0);
        assert!(e(&write("foreign", &other, 0o755)).contains("another architecture"));
        // A real program of this machine that is not a Flint application.
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        assert!(e(&sh).contains("not a Flint application"));
        // This test binary links flint-cluster, not the flint facade's init:
        // the searched-for bytes are not in it by accident.
        let me = std::env::current_exe().unwrap();
        assert!(!is_flint_application(&me).unwrap());
        // The marker found across a read boundary.
        let mut big = vec![0u8; (4 << 20) - 5];
        big.extend(MARKER_XOR.iter().map(|b| b ^ 0x5a));
        assert!(is_flint_application(&write("marked", &big, 0o755)).unwrap());
    }

    #[test]
    fn bad_submissions_say_what_to_do() {
        let e = |v: &[&str]| run(args(v)).unwrap_err().to_string();
        assert!(e(&["--conf", "novalue", "app"]).contains("expected KEY=VALUE"));
        assert!(e(&[]).contains("name the application binary"));
        assert!(e(&["--supervise", "app"]).contains("--deploy-mode cluster"));
        assert!(
            e(&["--deploy-mode", "cluster", "--master", "local[2]", "app"])
                .contains("Cluster deploy mode is not compatible with master \"local[2]\"")
        );
        assert!(
            e(&[
                "--deploy-mode",
                "cluster",
                "--master",
                "flint://127.0.0.1:1",
                "/nonexistent/app"
            ])
            .contains("/nonexistent/app")
        );
        assert_eq!(parse_mb("1g").unwrap(), 1024);
        assert_eq!(parse_mb("512m").unwrap(), 512);
        assert!(parse_mb("lots").is_err());
        assert!(parse_mb("20000000000000t").is_err(), "overflow is an error");
        assert!(
            e(&["--conf", "flint.authenticate.secret=s3cret", "app"])
                .contains("visible to every user")
        );
        // Options end at the binary; a mistyped option is not taken for it.
        assert!(
            SubmitArgs::try_parse_from(["flint submit", "--maser", "x", "app"]).is_err(),
            "an unknown option is an error"
        );
        let a = args(&["--master", "local[1]", "app", "--master", "mine", "-v"]);
        assert_eq!(a.master.as_deref(), Some("local[1]"));
        assert_eq!(a.app, vec!["app", "--master", "mine", "-v"]);
    }
}
