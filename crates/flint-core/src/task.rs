//! Tasks as the executor sees them: a stage's shipped code (`StageTask`) run on
//! one partition, producing either a result value or a map status.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Once};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::env::{TaskContext, TaskEnv};
use crate::error::{FlintError, Result};
use crate::metrics::LiveMetrics;
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
/// TaskRunner.run): open the shipped code, run it, catch panics (with their
/// backtrace), and turn errors recorded by iterators into failures. Times and
/// shuffle counts go to `metrics`.
pub fn run_task(
    desc: &TaskDescription,
    env: &Arc<TaskEnv>,
    killed: Arc<AtomicBool>,
    metrics: &Arc<LiveMetrics>,
) -> TaskEnd {
    install_panic_hook();
    let opened = Instant::now();
    let task: Arc<dyn StageTask> = match desc.binary.open() {
        Ok(t) => t,
        Err(e) => return TaskEnd::Failed(e),
    };
    let started = Instant::now();
    let tc = TaskContext::new(desc, env.clone(), killed, metrics.clone());
    let scope = crate::shared_vars::TaskScope::enter(env);
    IN_TASK.set(true);
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| task.run(desc.partition, &tc)));
    IN_TASK.set(false);
    metrics.set_times(
        started.duration_since(opened).as_millis() as u64,
        started.elapsed().as_millis() as u64,
    );
    match out {
        Ok(Ok(v)) => match tc.take_error() {
            Some(e) => TaskEnd::Failed(e),
            None if tc.is_killed() => TaskEnd::Killed,
            None => {
                if let TaskOutput::Value(bytes) = &v {
                    metrics.set_result_size(bytes.len() as u64);
                }
                TaskEnd::Success(v, scope.take_updates())
            }
        },
        Ok(Err(_)) if tc.is_killed() => TaskEnd::Killed,
        Ok(Err(e)) => TaskEnd::Failed(tc.take_error().unwrap_or(e)),
        Err(panic) => TaskEnd::Failed(FlintError::TaskPanicked {
            message: panic_message(panic.as_ref()),
            backtrace: PANIC_BACKTRACE.take(),
        }),
    }
}

/// A backtrace longer than this is cut (it travels in a status update).
const MAX_BACKTRACE: usize = 32 << 10;

thread_local! {
    /// Set while this thread runs a task's code.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    /// The backtrace of the last panic in a task on this thread.
    static PANIC_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Chains a panic hook that records, for panics inside tasks, where they
/// happened (the payload alone says only what): Spark's ExceptionFailure
/// carries the stack trace to the driver. Panics elsewhere are untouched.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TASK.get() {
                let mut bt = std::backtrace::Backtrace::force_capture().to_string();
                if bt.len() > MAX_BACKTRACE {
                    let mut cut = MAX_BACKTRACE;
                    while !bt.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    bt.truncate(cut);
                    bt.push_str("\n... (backtrace cut)");
                }
                PANIC_BACKTRACE.set(Some(bt));
            }
            previous(info)
        }));
    });
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
