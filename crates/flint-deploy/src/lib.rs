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
