//! Driver-side scheduling: the DAG scheduler cuts jobs into stages at shuffle
//! boundaries and submits task sets; the task scheduler hands tasks to a
//! scheduler backend as it offers free cores; the local backend runs them on
//! threads in this process.

pub mod backend;
pub mod dag;
pub mod pool;
pub mod task_scheduler;

pub use backend::{LocalBackend, SchedulerBackend, WorkerOffer};
pub use dag::{DagEvent, DagScheduler};
pub use pool::SchedulingMode;
pub use task_scheduler::{TaskLocation, TaskScheduler, TaskScheduling, TaskSet};
