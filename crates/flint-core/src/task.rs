//! Tasks as the executor sees them: a stage's shipped code (`StageTask`) run on
//! one partition, producing either a result value or a map status.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::env::{TaskContext, TaskEnv};
use crate::error::{FlintError, Result};
use crate::ship::Shipped;
use crate::shuffle::MapStatus;

/// What a stage's tasks run: implemented by result stages (RDD + action function)
/// and shuffle map stages (the shuffle dependency itself).
pub trait StageTask: Send + Sync + 'static {
    fn run(&self, partition: usize, tc: &TaskContext) -> Result<TaskOutput>;
}

#[derive(Debug)]
pub enum TaskOutput {
    /// A result task's encoded value.
    Value(Vec<u8>),
    /// A shuffle map task's output location.
    Map(MapStatus),
}

fn deser_stage<S: StageTask + DeserializeOwned>(
    b: &[u8],
) -> std::result::Result<Box<dyn Any + Send>, String> {
    let s: S = postcard::from_bytes(b).map_err(|e| e.to_string())?;
    let arc: Arc<dyn StageTask> = Arc::new(s);
    Ok(Box::new(arc))
}

/// Serializes a stage's task code once; every task of the stage shares it.
pub fn ship_stage<S: StageTask + Serialize + DeserializeOwned>(s: &S) -> Result<Arc<Shipped>> {
    let payload = crate::codec::encode("task", s)?;
    Ok(Arc::new(Shipped::new(
        std::any::type_name::<S>(),
        deser_stage::<S>,
        payload,
    )))
}

/// One task attempt to run.
#[derive(Clone, Debug)]
pub struct TaskDescription {
    pub task_id: u64,
    pub stage_id: usize,
    pub stage_attempt: usize,
    pub partition: usize,
    /// Index of the task within its task set.
    pub index: usize,
    pub attempt: usize,
    pub binary: Arc<Shipped>,
    /// Driver-held blocks this task reads (see `RddBase::driver_blocks`).
    pub driver_blocks: Vec<crate::storage::BlockId>,
}

/// How a task attempt ended.
#[derive(Debug)]
pub enum TaskEnd {
    /// The output and the task's encoded accumulator updates.
    Success(TaskOutput, Vec<(usize, Vec<u8>)>),
    Failed(FlintError),
    Killed,
}

/// Runs one task attempt to completion on the calling thread (Spark's
/// TaskRunner.run): open the shipped code, run it, catch panics, and turn errors
/// recorded by iterators into failures.
pub fn run_task(desc: &TaskDescription, env: &Arc<TaskEnv>, killed: Arc<AtomicBool>) -> TaskEnd {
    let task: Arc<dyn StageTask> = match desc.binary.open() {
        Ok(t) => t,
        Err(e) => return TaskEnd::Failed(e),
    };
    let tc = TaskContext::new(
        desc.stage_id,
        desc.stage_attempt,
        desc.partition,
        desc.attempt,
        desc.task_id,
        env.clone(),
        killed,
    );
    let scope = crate::shared_vars::TaskScope::enter(env);
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| task.run(desc.partition, &tc)));
    match out {
        Ok(Ok(v)) => match tc.take_error() {
            Some(e) => TaskEnd::Failed(e),
            None if tc.is_killed() => TaskEnd::Killed,
            None => TaskEnd::Success(v, scope.take_updates()),
        },
        Ok(Err(_)) if tc.is_killed() => TaskEnd::Killed,
        Ok(Err(e)) => TaskEnd::Failed(tc.take_error().unwrap_or(e)),
        Err(panic) => TaskEnd::Failed(FlintError::User(panic_message(panic.as_ref()))),
    }
}

pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("task panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("task panicked: {s}")
    } else {
        "task panicked".to_string()
    }
}
