//! Flint's engine core: everything a job needs except networking.
//!
//! - [`rdd`]: the typed, lazy RDD API and the type-erased view schedulers use.
//! - [`scheduler`]: the DAG scheduler, the task scheduler, pools, and backends
//!   (local mode lives here; cluster backends plug in through `SchedulerBackend`).
//! - [`shuffle`]: sort-based shuffle files, spilling aggregation and sorting, the
//!   map-output tracker.
//! - [`ship`]: shipping monomorphised task code between processes of one binary.
//! - [`task`], [`env`]: what executors run and what a running task can reach.
//!
//! Invariants: the DAG and task schedulers never see records or user code, only
//! shipped bytes and partition indices; every task is serialized and deserialized,
//! even in local mode, so code that would break on a cluster breaks in tests.

// Pair-RDD signatures (`Rdd<(K, (Option<V>, Option<W>))>`) are the API's point;
// naming every tuple would hide, not simplify, them.
#![allow(clippy::type_complexity)]

pub mod bytes;
pub mod cleaner;
pub mod codec;
pub mod conf;
pub mod context;
pub mod env;
pub mod error;
pub mod executor;
pub mod exit_cleanup;
pub mod func;
pub mod listener;
pub mod metrics;
pub mod rdd;
pub mod scheduler;
pub mod shared_vars;
pub mod ship;
pub mod shuffle;
pub mod storage;
pub mod task;
pub mod text;
pub mod util;

pub use bytes::Bytes;
pub use conf::FlintConf;
pub use context::FlintContext;
pub use error::{FlintError, Result};
pub use executor::init;
pub use func::{Data, Func, Key};
pub use rdd::{BoxIter, Rdd};
pub use serde_closure::{Fn, FnMut, FnOnce};
pub use shared_vars::{Accumulator, Broadcast, Collect, DoubleSum, LongSum};
pub use storage::StorageLevel;
