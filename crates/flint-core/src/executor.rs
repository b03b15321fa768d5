//! Executor mode of the application binary (the same-binary model).
//!
//! A worker starts the user's own executable with `FLINT_ROLE=executor`; the
//! application calls [`init`] first thing in `main`, which in executor mode runs
//! the executor and exits instead of returning to user code. The cluster issue
//! connects this to the driver over RPC; today executor mode speaks a minimal
//! pipe protocol (one task in on stdin, its outcome out on stdout, both
//! length-prefixed and bounded), which is what `run_in_child` drives and what the
//! cross-process tests use to prove tasks ship between processes of one binary.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::conf::FlintConf;
use crate::env::TaskEnv;
use crate::error::{FlintError, Result};
use crate::ship::Shipped;
use crate::shuffle::MapOutputTracker;
use crate::storage::BlockStore;
use crate::task::{TaskDescription, TaskEnd, TaskOutput, run_task};

/// Environment variable that selects the role of a started binary.
pub const ROLE_VAR: &str = "FLINT_ROLE";
const MAX_MESSAGE: usize = 128 << 20;

#[derive(Serialize, Deserialize)]
struct PipeTask {
    stage_id: usize,
    partition: usize,
    binary: Shipped,
}

#[derive(Serialize, Deserialize)]
enum PipeReply {
    Value(Vec<u8>),
    Failed(String),
    BuildMismatch(String),
}

/// Call first in `main`. Returns immediately in a driver; in executor mode runs
/// the executor and exits the process.
pub fn init() {
    match std::env::var(ROLE_VAR).as_deref() {
        Ok("executor") => {
            // The application's task key, from a 0600 file the launcher made:
            // with it, only envelopes signed by this application's driver run.
            if let Ok(path) = std::env::var(crate::ship::TASK_KEY_FILE_VAR) {
                match crate::ship::read_task_key_file(std::path::Path::new(&path)) {
                    Ok(key) => crate::ship::set_task_key(Some(key)),
                    Err(e) => {
                        eprintln!("flint executor: {e}");
                        std::process::exit(3);
                    }
                }
            }
            let code = match serve_pipe(&mut std::io::stdin().lock(), &mut std::io::stdout().lock())
            {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("flint executor: {e}");
                    3
                }
            };
            std::process::exit(code);
        }
        Ok(other) => {
            eprintln!("flint: unknown {ROLE_VAR}={other}; expected 'executor' or unset");
            std::process::exit(2);
        }
        Err(_) => {}
    }
}

fn read_frame(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| FlintError::io("cannot read", "executor pipe", e))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(FlintError::BadTask(format!(
            "message of {len} bytes exceeds the 128 MiB limit"
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)
        .map_err(|e| FlintError::io("cannot read", "executor pipe", e))?;
    Ok(buf)
}

fn write_frame(w: &mut impl Write, bytes: &[u8]) -> Result<()> {
    let io = |e| FlintError::io("cannot write", "executor pipe", e);
    w.write_all(&(bytes.len() as u32).to_le_bytes())
        .map_err(io)?;
    w.write_all(bytes).map_err(io)?;
    w.flush().map_err(io)
}

fn serve_pipe(input: &mut impl Read, output: &mut impl Write) -> Result<()> {
    let req: PipeTask = crate::codec::decode("pipe task", &read_frame(input)?)?;
    let dir =
        tempfile::tempdir().map_err(|e| FlintError::io("cannot create", "executor temp dir", e))?;
    let env = Arc::new(TaskEnv::new(
        FlintConf::new(),
        "pipe-executor".into(),
        dir.path().to_path_buf(),
        Arc::new(MapOutputTracker::default()),
        Arc::new(BlockStore::default()),
        1,
    )?);
    let desc = TaskDescription {
        task_id: 0,
        stage_id: req.stage_id,
        stage_attempt: 0,
        partition: req.partition,
        index: 0,
        attempt: 0,
        binary: Arc::new(req.binary),
        driver_blocks: Vec::new(),
    };
    let end = run_task(
        &desc,
        &env,
        Arc::new(AtomicBool::new(false)),
        &Arc::default(),
    );
    if let TaskEnd::Failed(e @ FlintError::BadTask(_)) = &end {
        // A refused envelope is worth a line in the executor's own log.
        eprintln!("flint executor: refused a task: {e}");
    }
    let reply = match end {
        TaskEnd::Success(TaskOutput::Value(v), _) => PipeReply::Value(v),
        TaskEnd::Success(TaskOutput::Map(_), _) => {
            PipeReply::Failed("map tasks are not supported over the pipe".into())
        }
        TaskEnd::Failed(e @ FlintError::BuildMismatch { .. }) => {
            PipeReply::BuildMismatch(e.to_string())
        }
        TaskEnd::Failed(e) => PipeReply::Failed(e.to_string()),
        TaskEnd::Killed => PipeReply::Failed("killed".into()),
    };
    write_frame(output, &crate::codec::encode("pipe reply", &reply)?)
}

/// Runs one result task in a child process started from `exe` in executor mode
/// and returns its encoded value.
pub fn run_in_child(
    exe: &std::path::Path,
    binary: &Shipped,
    stage_id: usize,
    partition: usize,
) -> Result<Vec<u8>> {
    let mut cmd = Command::new(exe);
    cmd.env(ROLE_VAR, "executor")
        .env_remove(crate::ship::TASK_KEY_FILE_VAR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // With a task key, the child gets it through a 0600 file, not argv or env.
    let key_dir = match crate::ship::task_key_for_child() {
        Some(key) => {
            let dir = tempfile::tempdir()
                .map_err(|e| FlintError::io("cannot create", "executor key dir", e))?;
            let path = crate::ship::write_task_key_file(dir.path(), &key)?;
            cmd.env(crate::ship::TASK_KEY_FILE_VAR, path);
            Some(dir)
        }
        None => None,
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| FlintError::io("cannot start executor", exe, e))?;
    let req = PipeTask {
        stage_id,
        partition,
        binary: binary.clone(),
    };
    let bytes = crate::codec::encode("pipe task", &req)?;
    let result = (|| {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| FlintError::BadTask("no stdin".into()))?;
        write_frame(&mut stdin, &bytes)?;
        drop(stdin);
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| FlintError::BadTask("no stdout".into()))?;
        let reply: PipeReply = crate::codec::decode("pipe reply", &read_frame(&mut stdout)?)?;
        match reply {
            PipeReply::Value(v) => Ok(v),
            PipeReply::Failed(m) | PipeReply::BuildMismatch(m) => Err(FlintError::User(m)),
        }
    })();
    let _ = child.wait();
    drop(key_dir);
    result
}
