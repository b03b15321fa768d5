//! Flint's standalone cluster manager: the Master (registers workers and
//! applications, decides where executors run) and the Worker (starts executor
//! processes and reports their state), speaking the deploy protocol over flint-rpc.
//!
//! Invariants: the Master never runs user code; scheduling decisions are pure
//! functions over plain data (`scheduling`); all daemon state lives inside
//! endpoint actors, so handlers need no locks.

pub mod local_cluster;
pub mod master;
pub mod messages;
pub mod scheduling;
mod webui;
pub mod worker;

pub use local_cluster::{LocalCluster, parse_local_cluster};
pub use master::{Master, MasterConf, MasterHandle};
pub use worker::{Worker, WorkerConf, WorkerHandle};

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
