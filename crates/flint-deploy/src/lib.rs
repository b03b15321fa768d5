//! Flint's standalone cluster manager: the Master (registers workers and
//! applications, decides where executors run) and the Worker (starts executor
//! processes and reports their state), speaking the deploy protocol over flint-rpc.
//!
//! Invariants: the Master never runs user code; scheduling decisions are pure
//! functions over plain data (`scheduling`); all daemon state lives inside
//! endpoint actors, so handlers need no locks.

pub mod binaries;
pub mod local_cluster;
pub mod master;
pub mod messages;
pub mod scheduling;
mod webui;
pub mod worker;

pub use local_cluster::{LocalCluster, parse_local_cluster};
pub use master::{Acls, Master, MasterConf, MasterHandle};
pub use worker::{Worker, WorkerConf, WorkerHandle};

/// Environment variable through which a Worker hands the cluster secret to a
/// driver it launches (cluster deploy mode: the driver must reach the Master).
/// Never passed to executors.
pub const SECRET_ENV: &str = "FLINT_AUTHENTICATE_SECRET";

/// Spark's spark-defaults.conf format: `key value` (or `key=value`) lines,
/// `#` comments, blank lines. `origin` names the source in errors.
pub fn parse_properties(text: &str, origin: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once(|c: char| c == '=' || c.is_whitespace())
            .ok_or_else(|| format!("{origin}: line '{line}' is not 'key value'"))?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// How `flint submit` passes settings to a driver (flint-core reads it as
/// `flint_core::conf::SUBMIT_CONF_VAR`); never inherited by executors.
pub const SUBMIT_CONF_VAR: &str = "FLINT_SUBMIT_CONF";

/// How late a periodic liveness check ran. A process that was stopped
/// (SIGSTOP, a debugger, a VM pause) or starved of CPU could read no heartbeat
/// meanwhile either: the heartbeats its peers sent are still in its sockets.
/// The check gives its peers that time back instead of declaring them dead the
/// moment it resumes, before it has read them (found stopping a driver for
/// 15 s: both healthy executors were killed on resume, their blocks and map
/// outputs lost).
#[derive(Debug)]
pub struct LateCheck {
    last: std::time::Instant,
    period: std::time::Duration,
}

impl LateCheck {
    pub fn new(period: std::time::Duration) -> Self {
        LateCheck {
            last: std::time::Instant::now(),
            period,
        }
    }

    /// Called at each check: how much later than one period after the last
    /// check this one runs (zero when on time).
    pub fn lateness(&mut self, now: std::time::Instant) -> std::time::Duration {
        let gap = now.saturating_duration_since(self.last);
        self.last = now;
        gap.saturating_sub(self.period)
    }
}

/// A peer's last heartbeat moved later by `late` (the time this process did not
/// run), never past `now`.
pub fn excuse(last: &mut std::time::Instant, late: std::time::Duration, now: std::time::Instant) {
    *last = (*last + late).min(now);
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// SHA-256 of a file, in hex.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The cluster's shared secret from `flint.authenticate.secret` or the file
/// `flint.authenticate.secret.file` names, looked up with `get` (a properties
/// file for the daemons, the application's conf for a driver).
pub fn resolve_secret<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Option<String>, String> {
    let s = match (
        get("flint.authenticate.secret"),
        get("flint.authenticate.secret.file"),
    ) {
        (Some(_), Some(_)) => {
            return Err(
                "set flint.authenticate.secret or flint.authenticate.secret.file, not both".into(),
            );
        }
        (Some(s), None) => s.to_string(),
        (None, Some(f)) => {
            let path = std::path::Path::new(f);
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read flint.authenticate.secret.file {}: {e}",
                    path.display()
                )
            })?;
            use std::os::unix::fs::PermissionsExt;
            if let Ok(md) = std::fs::metadata(path)
                && md.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    "{} is readable by other users; chmod 600 it",
                    path.display()
                );
            }
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, None) => return Ok(None),
    };
    if s.is_empty() {
        return Err(
            "the shared secret is empty; set a long random one (e.g. openssl rand -hex 32)".into(),
        );
    }
    if s.len() < 16 {
        tracing::warn!("the shared secret is shorter than 16 characters; use a long random one");
    }
    Ok(Some(s))
}

/// Spark's `SPARK_USER`: who an application acts as.
pub const USER_ENV: &str = "FLINT_USER";

/// The user a client acts as: `FLINT_USER` (Spark's `SPARK_USER`), else the
/// login name from the environment, else the name of the account running it.
/// The Master's ACLs check it.
pub fn current_user() -> String {
    [USER_ENV, "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        // As Spark falls back to the account running it.
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_late_check_gives_its_peers_the_time_it_did_not_run() {
        let period = Duration::from_secs(1);
        let mut check = LateCheck::new(period);
        let start = check.last;
        // On time: nothing given back.
        assert_eq!(check.lateness(start + period), Duration::ZERO);
        // The next check comes 10 s after that one: 9 s late.
        let now = start + period + Duration::from_secs(10);
        let late = check.lateness(now);
        assert_eq!(late, Duration::from_secs(9));
        // A heartbeat 10.5 s old counts as 1.5 s old; one newer than the
        // pause is not moved past now.
        let mut old = now - Duration::from_millis(10_500);
        excuse(&mut old, late, now);
        assert_eq!(now.duration_since(old), Duration::from_millis(1500));
        let mut fresh = now - Duration::from_millis(100);
        excuse(&mut fresh, late, now);
        assert_eq!(fresh, now);
    }
}
