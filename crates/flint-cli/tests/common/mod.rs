//! Test harness: real `flint master` / `flint worker` processes on 127.0.0.1 with
//! ephemeral ports and temp dirs. Every process is killed by PID when its handle
//! drops; when a test fails, each process's log tail is printed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Daemon {
    pub name: String,
    child: Child,
    pub line: String,
    log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} (pid {}) log tail ----\n{}",
                self.name,
                self.pid(),
                self.log_tail()
            );
        }
        // SIGTERM first, as an operator stops a daemon, so it ends its
        // children and removes its temporary directories; SIGKILL if it has
        // not exited within a few seconds.
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `flint ARGS`, waits for its first stdout line (the address banner).
pub fn spawn(name: &str, dir: &Path, args: &[&str]) -> Daemon {
    spawn_with(name, dir, args, None)
}

/// As `spawn`, with the open-files limit set to `nofile` (through the shell's
/// ulimit; the daemon is exec'd, so its PID is the one killed on drop).
pub fn spawn_with(name: &str, dir: &Path, args: &[&str], nofile: Option<u32>) -> Daemon {
    let log = dir.join(format!("{name}.log"));
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_flint"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_flint")),
    };
    let mut child = cmd
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start flint");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the child never blocks on a full pipe.
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink);
    });
    let line = match rx.recv_timeout(DEADLINE) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "{name} printed no banner; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };
    Daemon {
        name: name.to_string(),
        child,
        line,
        log,
    }
}

pub struct MasterProc {
    pub d: Daemon,
    pub url: String,
    pub port: u16,
    pub web: u16,
}

pub fn write_props(dir: &Path, name: &str, props: &[(&str, &str)]) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    for (k, v) in props {
        writeln!(f, "{k} {v}").unwrap();
    }
    p
}

pub fn start_master(dir: &Path, port: u16, props: &[(&str, &str)]) -> MasterProc {
    let pf = write_props(dir, "master.conf", props);
    let port_s = port.to_string();
    let d = spawn(
        "master",
        dir,
        &[
            "master",
            "--port",
            &port_s,
            "--webui-port",
            "0",
            "--properties-file",
            pf.to_str().unwrap(),
        ],
    );
    // "flint master listening at flint://127.0.0.1:P (web UI http://127.0.0.1:W)"
    let url = d.line.split_whitespace().nth(4).unwrap().to_string();
    let port = url.rsplit(':').next().unwrap().parse().unwrap();
    let web = d
        .line
        .trim()
        .trim_end_matches(')')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    MasterProc { d, url, port, web }
}

pub struct WorkerProc {
    pub d: Daemon,
    pub id: String,
    pub port: u16,
}

pub fn start_worker(
    dir: &Path,
    name: &str,
    master_url: &str,
    port: u16,
    props: &[(&str, &str)],
) -> WorkerProc {
    start_worker_on(dir, name, "127.0.0.1", master_url, port, props)
}

/// A worker bound to `host`, a loopback address: 127.0.0.2, 127.0.0.3, ...
/// are distinct hosts to the cluster, all local (all of 127.0.0.0/8 is).
pub fn start_worker_on(
    dir: &Path,
    name: &str,
    host: &str,
    master_url: &str,
    port: u16,
    props: &[(&str, &str)],
) -> WorkerProc {
    let pf = write_props(dir, &format!("{name}.conf"), props);
    let work = dir.join(format!("{name}-work"));
    let port_s = port.to_string();
    let d = spawn(
        name,
        dir,
        &[
            "worker",
            master_url,
            "--host",
            host,
            "--port",
            &port_s,
            "--webui-port",
            "0",
            "--cores",
            "2",
            "--memory",
            "2g",
            "--work-dir",
            work.to_str().unwrap(),
            "--properties-file",
            pf.to_str().unwrap(),
        ],
    );
    // "flint worker ID listening at 127.0.0.1:P (web UI port W)"
    let mut parts = d.line.split_whitespace();
    let id = parts.nth(2).unwrap().to_string();
    let addr = d.line.split_whitespace().nth(5).unwrap();
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    WorkerProc { d, id, port }
}

/// GET http://127.0.0.1:PORT/json as JSON (plain HTTP/1.0 over a socket).
pub fn get_json(port: u16) -> Option<serde_json::Value> {
    serde_json::from_str(&get_page(port, "/json")?).ok()
}

/// GET http://127.0.0.1:PORT/PATH, the body (plain HTTP/1.0 over a socket).
#[allow(dead_code)]
pub fn get_page(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// Polls `f` until it returns Some, or panics after the deadline.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn worker_state(json: &serde_json::Value, id: &str) -> Option<String> {
    json["workers"]
        .as_array()?
        .iter()
        .find(|w| w["id"] == id)
        .and_then(|w| w["state"].as_str().map(str::to_string))
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// PIDs of processes whose working directory lies under `dir` (to find orphans).
pub fn processes_under(dir: &Path) -> Vec<i32> {
    let dir = dir.canonicalize().unwrap_or(dir.to_path_buf());
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(cwd) = std::fs::read_link(e.path().join("cwd"))
                && cwd.starts_with(&dir)
            {
                out.push(pid);
            }
        }
    }
    out
}

/// GET https://127.0.0.1:PORT/json, trusting only the CA in `ca_pem`.
pub fn get_json_tls(port: u16, ca_pem: &str) -> Option<serde_json::Value> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.ok()?).ok()?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").ok()?.to_owned();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).ok()?;
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut raw = Vec::new();
    // The server may close without a TLS close_notify: keep what arrived.
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let body = text.split("\r\n\r\n").nth(1)?;
    serde_json::from_str(body).ok()
}
