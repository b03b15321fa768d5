//! The context cleaner (Spark's ContextCleaner): when the last driver-side handle
//! on an RDD, a shuffle dependency or a broadcast is dropped, what it left behind
//! (cached and pinned blocks, shuffle files and map-output entries, broadcast
//! blocks) is removed on a background thread, so a driver that runs jobs for days
//! does not grow. Spark finds unreachable objects with weak references and a GC
//! reference queue; in Rust the drop of the last handle is that moment, so each
//! driver-side handle carries a [`CleanupOnDrop`] guard (copies deserialized on
//! executors carry none).

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::env::TaskEnv;
use crate::scheduler::backend::SchedulerBackend;
use crate::storage::BlockId;

/// What to remove; a cluster backend sends the same to every executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CleanupTask {
    Rdd(usize),
    Shuffle(usize),
    Broadcast(usize),
}

enum Msg {
    Clean(CleanupTask),
    /// Replies once every task sent before it is done (tests, `stop`).
    Flush(Sender<()>),
    Stop,
}

/// Where guards send their tasks; cheap to clone.
#[derive(Clone)]
pub(crate) struct Cleaner {
    tx: Sender<Msg>,
}

/// Sends its task to the cleaner when dropped.
pub(crate) struct CleanupOnDrop {
    task: CleanupTask,
    tx: Sender<Msg>,
}

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        // After the context stopped nobody listens; its local dir goes anyway.
        let _ = self.tx.send(Msg::Clean(self.task));
    }
}

impl Cleaner {
    /// Starts the cleaner thread over `env` (the driver's executor
    /// environment); the backend passes each task on to its executors.
    pub(crate) fn start(
        env: Arc<TaskEnv>,
        backend: Arc<dyn SchedulerBackend>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = unbounded();
        let h = std::thread::Builder::new()
            .name("flint-context-cleaner".into())
            .spawn(move || run(&env, &*backend, rx))?;
        Ok((Cleaner { tx }, h))
    }

    pub(crate) fn guard(&self, task: CleanupTask) -> CleanupOnDrop {
        CleanupOnDrop {
            task,
            tx: self.tx.clone(),
        }
    }

    /// Waits until everything sent so far has been cleaned.
    pub(crate) fn flush(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

fn run(env: &TaskEnv, backend: &dyn SchedulerBackend, rx: Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Clean(task) => {
                clean(env, task);
                backend.cleanup(task);
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
            Msg::Stop => break,
        }
    }
}

/// Removes what `task` names from one executor's environment.
pub fn clean(env: &TaskEnv, task: CleanupTask) {
    tracing::debug!("cleaning {task:?}");
    match task {
        CleanupTask::Rdd(id) => env.blocks.remove_where(|b| match b {
            BlockId::Rdd { rdd, .. } | BlockId::ParallelSlice { rdd, .. } => *rdd == id,
            BlockId::Broadcast { .. } => false,
        }),
        CleanupTask::Broadcast(id) => env
            .blocks
            .remove_where(|b| matches!(b, BlockId::Broadcast { id: i } if *i == id)),
        CleanupTask::Shuffle(id) => {
            env.map_outputs.unregister_shuffle(id);
            // Every file of the shuffle, including outputs of attempts that were
            // superseded and never registered.
            let prefix = format!("shuffle_{id}_");
            let Ok(dir) = std::fs::read_dir(env.local_dir()) else {
                return;
            };
            for e in dir.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(&prefix)
                    && (name.ends_with(".data") || name.ends_with(".index"))
                    && let Err(err) = std::fs::remove_file(e.path())
                {
                    tracing::warn!("cannot remove shuffle file {}: {err}", e.path().display());
                }
            }
        }
    }
}
