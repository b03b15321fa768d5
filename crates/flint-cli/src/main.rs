//! The `flint` command: `flint master`, `flint worker`, `flint --version`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use flint_deploy::{Master, MasterConf, Worker, WorkerConf};
use flint_rpc::{RpcAddress, RpcConf};

#[derive(Parser)]
#[command(
    name = "flint",
    version,
    about = "Flint: Spark's architecture in Rust",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version.
    Version,
    /// Run an application: `flint submit [--master URL] [--deploy-mode
    /// client|cluster] [--supervise] [--conf K=V]... BINARY [ARGS...]`
    /// (`flint submit --help` lists every option).
    #[command(disable_help_flag = true)]
    Submit {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a standalone master.
    Master {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 7077)]
        port: u16,
        #[arg(long, default_value_t = 8080)]
        webui_port: u16,
        /// Where binaries uploaded by `flint submit` are kept, by hash
        /// (default: a temporary directory removed when the master stops).
        #[arg(long)]
        binaries_dir: Option<PathBuf>,
        /// Properties in Spark's spark-defaults.conf format (`key value` lines).
        #[arg(long)]
        properties_file: Option<PathBuf>,
        /// Serve a non-loopback address without authentication: anyone who can
        /// reach the port can submit and kill work. Only for trusted networks.
        #[arg(long)]
        insecure_no_auth: bool,
    },
    /// Run a standalone worker registered with MASTER_URL (flint://host:port[,host2:port2]).
    Worker {
        master_url: String,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Cores to offer (default: all).
        #[arg(long)]
        cores: Option<u32>,
        /// Memory to offer, e.g. 4g or 512m (default: total minus 1 GiB).
        #[arg(long)]
        memory: Option<String>,
        #[arg(long, default_value = "work")]
        work_dir: PathBuf,
        #[arg(long, default_value_t = 8081)]
        webui_port: u16,
        #[arg(long)]
        properties_file: Option<PathBuf>,
        /// Serve a non-loopback address without authentication: anyone who can
        /// reach the port can make this worker run programs. Only for trusted networks.
        #[arg(long)]
        insecure_no_auth: bool,
    },
}

/// Errors are printed as their chain of causes, one line, without the
/// backtrace anyhow's `Debug` adds when RUST_BACKTRACE is set (a mistyped URL
/// is not a crash).
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flint: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Submit { args }) => {
            let code = match flint_cluster::submit::main_with(
                args,
                flint_cluster::submit::ClientLaunch::Exec,
            ) {
                Ok(code) => code,
                // clap's own help and usage text come through here too.
                Err(flint_core_error) => {
                    eprintln!("{flint_core_error}");
                    1
                }
            };
            std::process::exit(code);
        }
        Some(Command::Version) | None => {
            println!("flint {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(Command::Master {
            host,
            port,
            webui_port,
            binaries_dir,
            properties_file,
            insecure_no_auth,
        }) => {
            let props = load_properties(properties_file.as_deref())?;
            let rpc = rpc_conf(&props)?;
            check_exposure("master", &host, rpc.secret.is_some(), insecure_no_auth)?;
            let conf = MasterConf {
                host,
                port,
                webui_port,
                worker_timeout: seconds(&props, "flint.worker.timeout", 60)?,
                spread_out: boolean(&props, "flint.deploy.spreadOut", true)?,
                max_executor_retries: number(&props, "flint.deploy.maxExecutorRetries", 10)?,
                reaper_iterations: number(&props, "flint.dead.worker.persistence", 15)?,
                retained_applications: number(&props, "flint.deploy.retainedApplications", 200)?,
                default_cores: number(&props, "flint.deploy.defaultCores", u32::MAX)?,
                rpc,
                binaries_dir,
                retained_binaries: number(&props, "flint.deploy.retainedBinaries", 10)?,
                acls: boolean(&props, "flint.acls.enable", false)?.then(|| {
                    flint_deploy::Acls::from_lists(
                        props.get("flint.admin.acls").map_or("", String::as_str),
                        props.get("flint.modify.acls").map_or("", String::as_str),
                    )
                }),
            };
            runtime()?.block_on(async move {
                let m = Master::start(conf).await.map_err(anyhow::Error::msg)?;
                println!(
                    "flint master listening at {} (web UI http://{}:{})",
                    m.url, m.address.host, m.webui_port
                );
                wait_for_signal().await;
                m.env.shutdown();
                Ok(())
            })
        }
        Some(Command::Worker {
            master_url,
            host,
            port,
            cores,
            memory,
            work_dir,
            webui_port,
            properties_file,
            insecure_no_auth,
        }) => {
            let props = load_properties(properties_file.as_deref())?;
            let mut conf = WorkerConf::new(parse_master_url(&master_url)?);
            conf.rpc = rpc_conf(&props)?;
            check_exposure("worker", &host, conf.rpc.secret.is_some(), insecure_no_auth)?;
            conf.host = host;
            conf.port = port;
            if let Some(c) = cores {
                if c == 0 {
                    bail!("--cores must be at least 1");
                }
                conf.cores = c;
            }
            if let Some(m) = memory {
                conf.memory_mb =
                    parse_mb(&m).with_context(|| format!("--memory {m}: use e.g. 4g or 512m"))?;
            }
            conf.work_dir = work_dir;
            conf.webui_port = webui_port;
            conf.worker_timeout = seconds(&props, "flint.worker.timeout", 60)?;
            if let Some(v) = props.get("flint.worker.registrationRetryInterval") {
                conf.registration_base = parse_duration(v).with_context(|| {
                    format!("flint.worker.registrationRetryInterval={v} is not a duration")
                })?;
            }
            conf.cleanup_enabled = boolean(&props, "flint.worker.cleanup.enabled", true)?;
            conf.cleanup_interval = seconds(&props, "flint.worker.cleanup.interval", 1800)?;
            conf.cleanup_ttl = seconds(&props, "flint.worker.cleanup.appDataTtl", 7 * 24 * 3600)?;
            conf.retained_executors = number(&props, "flint.worker.ui.retainedExecutors", 1000)?;
            conf.retained_drivers = number(&props, "flint.worker.ui.retainedDrivers", 1000)?;
            runtime()?.block_on(async move {
                let w = Worker::start(conf).await.map_err(anyhow::Error::msg)?;
                println!(
                    "flint worker {} listening at {} (web UI port {})",
                    w.id, w.address, w.webui_port
                );
                wait_for_signal().await;
                // Kill every executor before leaving: no orphans.
                let _ = w
                    .worker
                    .ask::<bool>(
                        flint_deploy::messages::WorkerMsg::Shutdown,
                        Duration::from_secs(5),
                    )
                    .await;
                w.env.shutdown();
                Ok(())
            })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `flint://h1:p1,h2:p2` (or `spark://`) to addresses.
fn parse_master_url(url: &str) -> anyhow::Result<Vec<RpcAddress>> {
    let rest = url
        .strip_prefix("flint://")
        .or_else(|| url.strip_prefix("spark://"))
        .with_context(|| format!("master URL '{url}' must look like flint://host:port"))?;
    rest.split(',')
        .map(|a| RpcAddress::parse(a).map_err(|e| anyhow::anyhow!("master URL '{url}': {e}")))
        .collect()
}

/// Spark's spark-defaults.conf format: `key value` or `key=value`, `#` comments.
fn load_properties(path: Option<&std::path::Path>) -> anyhow::Result<HashMap<String, String>> {
    let Some(path) = path else {
        return Ok(HashMap::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading properties file {}", path.display()))?;
    parse_properties(&text, &path.display().to_string())
}

/// Spark's spark-defaults.conf format: `key value` (or `key=value`) lines,
/// `#` comments, blank lines.
fn parse_properties(text: &str, origin: &str) -> anyhow::Result<HashMap<String, String>> {
    Ok(flint_deploy::parse_properties(text, origin)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .collect())
}

fn number<T: std::str::FromStr>(
    p: &HashMap<String, String>,
    key: &str,
    default: T,
) -> anyhow::Result<T> {
    match p.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{key}={v} is not a valid number")),
    }
}

fn boolean(p: &HashMap<String, String>, key: &str, default: bool) -> anyhow::Result<bool> {
    match p.get(key).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => bail!("{key}={v} is not true or false"),
    }
}

/// Spark gives `spark.worker.timeout` in seconds; a unit suffix is also accepted.
fn seconds(p: &HashMap<String, String>, key: &str, default: u64) -> anyhow::Result<Duration> {
    match p.get(key) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => match v.parse::<u64>() {
            Ok(s) => Ok(Duration::from_secs(s)),
            Err(_) => {
                parse_duration(v).with_context(|| format!("{key}={v} is not a number of seconds"))
            }
        },
    }
}

fn parse_duration(v: &str) -> anyhow::Result<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v[..split].parse().context("not a number")?;
    Ok(match &v[split..] {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "min" | "m" => Duration::from_secs(n * 60),
        other => bail!("unknown unit '{other}'"),
    })
}

fn parse_mb(v: &str) -> anyhow::Result<u64> {
    let v = v.trim().to_ascii_lowercase();
    let (num, mult) = match v.chars().last() {
        Some('g') => (&v[..v.len() - 1], 1024),
        Some('m') => (&v[..v.len() - 1], 1),
        Some('t') => (&v[..v.len() - 1], 1024 * 1024),
        _ => (v.as_str(), 1),
    };
    let n: u64 = num.parse().context("not a size")?;
    if n == 0 {
        bail!("memory must be positive");
    }
    Ok(n * mult)
}

fn rpc_conf(p: &HashMap<String, String>) -> anyhow::Result<RpcConf> {
    let mut c = RpcConf::default();
    // Spark's spark.rpc.message.maxSize is in MiB.
    let mib: usize = number(p, "flint.rpc.message.maxSize", 128)?;
    if mib == 0 || mib > 2047 {
        bail!("flint.rpc.message.maxSize={mib} must be between 1 and 2047 (MiB)");
    }
    c.max_message_size = mib << 20;
    c.secret = secret(p)?;
    if boolean(p, "flint.authenticate", false)? && c.secret.is_none() {
        bail!(
            "flint.authenticate=true needs the shared secret: set flint.authenticate.secret or flint.authenticate.secret.file in the properties file"
        );
    }
    if let Some(id) = p.get("flint.cluster.id") {
        c.cluster_id = id.clone();
    }
    c.max_pending_handshakes = number(p, "flint.rpc.maxPendingHandshakes", 64)?;
    c.max_queued_bytes = number(p, "flint.rpc.maxQueuedBytes", 256usize << 20)?;
    if c.max_queued_bytes < c.max_message_size {
        bail!(
            "flint.rpc.maxQueuedBytes={} must be at least flint.rpc.message.maxSize ({} bytes)",
            c.max_queued_bytes,
            c.max_message_size
        );
    }
    c.idle_timeout = seconds(p, "flint.network.timeout", 120)?;
    if boolean(p, "flint.ssl.enabled", false)? {
        let file = |k: &str| {
            p.get(k)
                .map(std::path::PathBuf::from)
                .with_context(|| format!("flint.ssl.enabled=true needs {k} (a PEM file)"))
        };
        c.tls = Some(
            flint_rpc::TlsConf::from_pem_files(
                &file("flint.ssl.certFile")?,
                &file("flint.ssl.keyFile")?,
                &file("flint.ssl.trustFile")?,
            )
            .map_err(anyhow::Error::msg)?,
        );
    }
    if c.max_pending_handshakes == 0 {
        bail!("flint.rpc.maxPendingHandshakes must be at least 1");
    }
    Ok(c)
}

/// The cluster's shared secret, from the properties file or a file it names
/// (never from the command line, which every local user can read in /proc).
fn secret(p: &HashMap<String, String>) -> anyhow::Result<Option<String>> {
    flint_deploy::resolve_secret(|k| p.get(k).map(String::as_str)).map_err(anyhow::Error::msg)
}

/// Whether `host` names only loopback addresses.
fn is_loopback(host: &str) -> bool {
    use std::net::ToSocketAddrs;
    match (host, 0u16).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// Safe by default: a daemon reachable from other machines needs a secret,
/// unless the operator says `--insecure-no-auth`.
fn check_exposure(what: &str, host: &str, has_secret: bool, insecure: bool) -> anyhow::Result<()> {
    if has_secret || is_loopback(host) {
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            "{what} serves {host} WITHOUT AUTHENTICATION (--insecure-no-auth): anyone who can reach it controls it"
        );
        eprintln!(
            "flint {what}: WARNING: serving {host} without authentication (--insecure-no-auth)"
        );
        return Ok(());
    }
    bail!(
        "refusing to serve {host} without authentication: anyone who could reach it could run programs on this machine. Set flint.authenticate.secret (or flint.authenticate.secret.file) in a properties file given with --properties-file, bind a loopback address, or pass --insecure-no-auth on a trusted network"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases per fuzz property: a short run in the tests, a long one from
    /// scripts/fuzz.sh (FLINT_FUZZ_CASES).
    fn cases() -> u32 {
        std::env::var("FLINT_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases()))]
        /// Properties files and the values in them come from operators and
        /// disks: any text is parsed or refused with a message, never a panic.
        #[test]
        fn properties_and_values_never_panic(text in "\\PC{0,300}", v in "\\PC{0,40}") {
            let _ = parse_properties(&text, "fuzz");
            let _ = parse_duration(&v);
            let _ = parse_mb(&v);
            let _ = parse_master_url(&v);
            let p: HashMap<String, String> =
                [("k".to_string(), v.clone())].into_iter().collect();
            let _ = seconds(&p, "k", 1);
            let _ = boolean(&p, "k", false);
            let _ = number::<u32>(&p, "k", 0);
        }
    }

    #[test]
    fn properties_format() {
        let p = parse_properties("# c\n\na.b 1\nc=two words\n  d\t3  \n", "t").unwrap();
        assert_eq!(p["a.b"], "1");
        assert_eq!(p["c"], "two words");
        assert_eq!(p["d"], "3");
        assert!(
            parse_properties("lonely", "t")
                .unwrap_err()
                .to_string()
                .contains("not 'key value'")
        );
    }
}
