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
    PANIC_BACKTRACE.take();
    let opened = Instant::now();
    IN_TASK.set(true);
    // Opening runs the shipped types' Deserialize impls (user code too).
    let task = std::panic::catch_unwind(AssertUnwindSafe(|| desc.binary.open()));
    IN_TASK.set(false);
    let task: Arc<dyn StageTask> = match task {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return TaskEnd::Failed(e),
        Err(panic) => return TaskEnd::Failed(panicked(panic.as_ref())),
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
        Err(panic) => TaskEnd::Failed(panicked(panic.as_ref())),
    }
}

/// The failure for a panic caught in a task, with the backtrace the hook
/// recorded for it: only if that backtrace belongs to this panic (a panic
/// passed on with `resume_unwind` never reaches the hook, so an earlier,
/// caught panic's backtrace may still be there).
fn panicked(payload: &(dyn Any + Send)) -> FlintError {
    let message = panic_message(payload);
    let backtrace = PANIC_BACKTRACE
        .take()
        .filter(|(m, _)| *m == message)
        .map(|(_, bt)| cut(bt.to_string(), MAX_BACKTRACE, "backtrace"));
    FlintError::TaskPanicked { message, backtrace }
}

/// `s` cut to at most `max` bytes (on a character boundary), saying so.
fn cut(mut s: String, max: usize, what: &str) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push_str(&format!("\n... ({what} cut at {max} bytes)"));
    }
    s
}

/// A backtrace longer than this is cut (it travels in a status update).
const MAX_BACKTRACE: usize = 32 << 10;

/// A panic message longer than this is cut (the same reason).
const MAX_MESSAGE: usize = 64 << 10;

thread_local! {
    /// Set while this thread runs a task's code.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    /// The message and the (unresolved) backtrace of the last panic in a
    /// task on this thread; symbols are resolved only for a panic that fails
    /// the task, so a task that catches its own panics pays little.
    static PANIC_BACKTRACE: RefCell<Option<(String, std::backtrace::Backtrace)>> =
        const { RefCell::new(None) };
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
                let bt = std::backtrace::Backtrace::force_capture();
                PANIC_BACKTRACE.set(Some((panic_message(info.payload()), bt)));
            }
            previous(info)
        }));
    });
}

pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    let m = if let Some(s) = p.downcast_ref::<&str>() {
        format!("task panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("task panicked: {s}")
    } else {
        "task panicked".to_string()
    };
    cut(m, MAX_MESSAGE, "message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE);
        let m = panic_message(&long);
        assert!(m.len() < MAX_MESSAGE + 100, "{}", m.len());
        assert!(m.ends_with("(message cut at 65536 bytes)"), "{m}");
    }

    #[test]
    fn a_backtrace_goes_only_with_its_own_panic() {
        install_panic_hook();
        IN_TASK.set(true);
        let _ = std::panic::catch_unwind(|| panic!("first"));
        // Passed on without the hook (as join + resume_unwind does).
        let r =
            std::panic::catch_unwind(|| std::panic::resume_unwind(Box::new("second".to_string())));
        IN_TASK.set(false);
        let e = panicked(r.unwrap_err().as_ref());
        assert_eq!(e.to_string(), "task panicked: second");
        assert!(e.backtrace().is_none(), "not the first panic's backtrace");
        IN_TASK.set(true);
        let r = std::panic::catch_unwind(|| panic!("third"));
        IN_TASK.set(false);
        let e = panicked(r.unwrap_err().as_ref());
        assert!(e.backtrace().is_some_and(|b| b.contains("task.rs")));
    }
}
