//! Shared variables: broadcast values (read-only, shipped once per executor rather
//! than inside every task) and accumulators (tasks add, only the driver reads).
//!
//! Code inside a user closure has no task handle, so, as Spark does with its
//! thread-local TaskContext, the task runner publishes the running task's
//! environment and collects its accumulator updates through thread-locals.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::env::TaskEnv;
use crate::error::Result;
use crate::func::Data;
use crate::storage::BlockId;

thread_local! {
    static CURRENT_ENV: RefCell<Option<Arc<TaskEnv>>> = const { RefCell::new(None) };
    static TASK_ACCUMS: RefCell<Option<HashMap<usize, Box<dyn PartialAccum>>>> = const { RefCell::new(None) };
}

/// Marks the calling thread as running a task until the guard drops.
pub(crate) struct TaskScope;

impl TaskScope {
    pub(crate) fn enter(env: &Arc<TaskEnv>) -> Self {
        CURRENT_ENV.with(|c| *c.borrow_mut() = Some(env.clone()));
        TASK_ACCUMS.with(|a| *a.borrow_mut() = Some(HashMap::new()));
        TaskScope
    }

    /// Encoded accumulator updates made by the task so far.
    pub(crate) fn take_updates(&self) -> Vec<(usize, Vec<u8>)> {
        TASK_ACCUMS.with(|a| {
            a.borrow_mut()
                .as_mut()
                .map(|m| {
                    m.drain()
                        .filter_map(|(id, p)| p.encode().ok().map(|b| (id, b)))
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

impl Drop for TaskScope {
    fn drop(&mut self) {
        CURRENT_ENV.with(|c| *c.borrow_mut() = None);
        TASK_ACCUMS.with(|a| *a.borrow_mut() = None);
    }
}

// ---- broadcast -------------------------------------------------------------------

/// A read-only value available to every task. Only its id travels with tasks;
/// executors read the value from their block store (fetched once per executor).
pub struct Broadcast<T: Data> {
    id: usize,
    value: OnceLock<Arc<T>>,
    /// Driver-side handles share it: the last one dropped removes the blocks.
    cleanup: Option<Arc<crate::cleaner::CleanupOnDrop>>,
    /// Set by `FlintContext::destroy_broadcast`, shared by the driver's
    /// handles (and local mode's tasks, which hold clones of them).
    destroyed: Arc<std::sync::atomic::AtomicBool>,
}

impl<T: Data> Clone for Broadcast<T> {
    fn clone(&self) -> Self {
        let value = OnceLock::new();
        if let Some(v) = self.value.get() {
            let _ = value.set(v.clone());
        }
        Broadcast {
            id: self.id,
            value,
            cleanup: self.cleanup.clone(),
            destroyed: self.destroyed.clone(),
        }
    }
}

impl<T: Data> Broadcast<T> {
    pub(crate) fn new(id: usize, value: Arc<T>, cleanup: crate::cleaner::CleanupOnDrop) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(value);
        Broadcast {
            id,
            value: cell,
            cleanup: Some(Arc::new(cleanup)),
            destroyed: Arc::default(),
        }
    }

    pub(crate) fn mark_destroyed(&self) {
        self.destroyed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn id(&self) -> usize {
        self.id
    }

    /// The value.
    ///
    /// # Panics
    /// Inside a task whose executor has no copy of the broadcast (it was destroyed
    /// or the executor was not given it); the task then fails with this message.
    pub fn value(&self) -> &T {
        // Spark's words: a destroyed broadcast is unusable, on the driver too.
        if self.destroyed.load(std::sync::atomic::Ordering::Relaxed) {
            panic!(
                "Attempted to use Broadcast({}) after it was destroyed",
                self.id
            );
        }
        self.value.get_or_init(|| {
            let block = BlockId::Broadcast { id: self.id };
            let env = CURRENT_ENV.with(|c| c.borrow().clone());
            let local = env.as_ref().and_then(|env| env.blocks.get::<T>(block));
            // On a cluster executor: from the driver, once per executor.
            let fetched = || -> std::result::Result<Arc<T>, String> {
                let env = env.as_ref().ok_or("not inside a task")?;
                let client = env.shuffle_client.get().ok_or("local mode keeps no other copy")?;
                let bytes = client.broadcast(self.id).map_err(|e| e.to_string())?;
                let v: Arc<T> = Arc::new(
                    crate::codec::decode("a broadcast value", &bytes).map_err(|e| e.to_string())?,
                );
                env.blocks.put(block, v.clone());
                Ok(v)
            };
            local.map(Ok).unwrap_or_else(fetched).unwrap_or_else(|reason| {
                panic!(
                    "broadcast {} is not available on this executor ({reason}); it may have been destroyed",
                    self.id
                )
            })
        })
    }
}

impl<T: Data> Serialize for Broadcast<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // A task that would use a destroyed broadcast fails as it is
        // shipped, as in Spark, not on each executor in turn.
        if self.destroyed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(crate::codec::refuse(format!(
                "Attempted to use Broadcast({}) after it was destroyed",
                self.id
            )));
        }
        self.id.serialize(s)
    }
}

impl<'de, T: Data> Deserialize<'de> for Broadcast<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Broadcast {
            id: usize::deserialize(d)?,
            value: OnceLock::new(),
            cleanup: None,
            destroyed: Arc::default(),
        })
    }
}

// ---- accumulators -------------------------------------------------------------------

/// How an accumulator combines values.
pub trait AccumulatorKind: Send + Sync + 'static {
    type In;
    type Value: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    fn zero() -> Self::Value;
    fn add(acc: &mut Self::Value, x: Self::In);
    fn merge(acc: &mut Self::Value, other: Self::Value);
}

/// Sums of `i64` (Spark's LongAccumulator).
pub struct LongSum;
impl AccumulatorKind for LongSum {
    type In = i64;
    type Value = i64;
    fn zero() -> i64 {
        0
    }
    fn add(acc: &mut i64, x: i64) {
        *acc = acc.wrapping_add(x);
    }
    fn merge(acc: &mut i64, o: i64) {
        *acc = acc.wrapping_add(o);
    }
}

/// Sums of `f64` (Spark's DoubleAccumulator).
pub struct DoubleSum;
impl AccumulatorKind for DoubleSum {
    type In = f64;
    type Value = f64;
    fn zero() -> f64 {
        0.0
    }
    fn add(acc: &mut f64, x: f64) {
        *acc += x;
    }
    fn merge(acc: &mut f64, o: f64) {
        *acc += o;
    }
}

/// All added elements (Spark's CollectionAccumulator).
pub struct Collect<T>(std::marker::PhantomData<fn() -> T>);
impl<T: Data> AccumulatorKind for Collect<T> {
    type In = T;
    type Value = Vec<T>;
    fn zero() -> Vec<T> {
        Vec::new()
    }
    fn add(acc: &mut Vec<T>, x: T) {
        acc.push(x);
    }
    fn merge(acc: &mut Vec<T>, mut o: Vec<T>) {
        acc.append(&mut o);
    }
}

trait PartialAccum {
    fn as_any(&mut self) -> &mut dyn Any;
    fn encode(&self) -> Result<Vec<u8>>;
}

struct Partial<K: AccumulatorKind>(K::Value);
impl<K: AccumulatorKind> PartialAccum for Partial<K> {
    fn as_any(&mut self) -> &mut dyn Any {
        &mut self.0
    }
    fn encode(&self) -> Result<Vec<u8>> {
        crate::codec::encode("accumulator update", &self.0)
    }
}

/// Driver-side merge target of one accumulator.
pub(crate) trait AccumSink: Send + Sync {
    fn merge_encoded(&self, bytes: &[u8]) -> Result<()>;
}

struct Sink<K: AccumulatorKind>(Mutex<K::Value>);
impl<K: AccumulatorKind> AccumSink for Sink<K> {
    fn merge_encoded(&self, bytes: &[u8]) -> Result<()> {
        let v: K::Value = crate::codec::decode("accumulator update", bytes)?;
        K::merge(&mut self.0.lock(), v);
        Ok(())
    }
}

/// The driver's accumulators by id, held weakly: an accumulator whose last
/// driver handle is dropped is gone (late updates for it are ignored).
#[derive(Default)]
pub(crate) struct AccumRegistry {
    sinks: Mutex<HashMap<usize, Weak<dyn AccumSink>>>,
}

impl AccumRegistry {
    /// Applies a finished task's updates; bad bytes are logged.
    pub(crate) fn apply(&self, updates: &[(usize, Vec<u8>)]) {
        let sinks = self.sinks.lock();
        for (id, bytes) in updates {
            match sinks.get(id).and_then(Weak::upgrade) {
                Some(s) => {
                    if let Err(e) = s.merge_encoded(bytes) {
                        tracing::warn!("dropping update of accumulator {id}: {e}");
                    }
                }
                None => tracing::debug!("update for dropped accumulator {id} ignored"),
            }
        }
    }

    fn register(&self, id: usize, sink: Weak<dyn AccumSink>) {
        let mut sinks = self.sinks.lock();
        sinks.retain(|_, s| s.strong_count() > 0);
        sinks.insert(id, sink);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sinks.lock().len()
    }
}

/// A variable tasks add to and only the driver reads. Updates from a result
/// stage's task count once per partition even if the task re-runs; updates from
/// shuffle map stages may count again when a map task is recomputed (as in Spark).
pub struct Accumulator<K: AccumulatorKind> {
    id: usize,
    name: String,
    driver: Option<Arc<Sink<K>>>,
}

impl<K: AccumulatorKind> Clone for Accumulator<K> {
    fn clone(&self) -> Self {
        Accumulator {
            id: self.id,
            name: self.name.clone(),
            driver: self.driver.clone(),
        }
    }
}

impl<K: AccumulatorKind> Accumulator<K> {
    pub(crate) fn register(registry: &AccumRegistry, id: usize, name: &str) -> Self {
        let sink = Arc::new(Sink::<K>(Mutex::new(K::zero())));
        let weak: Weak<dyn AccumSink> = Arc::downgrade(&sink) as Weak<dyn AccumSink>;
        registry.register(id, weak);
        Accumulator {
            id,
            name: name.to_string(),
            driver: Some(sink),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `x`: inside a task to the task's partial value (sent to the driver
    /// when the task succeeds), on the driver directly.
    pub fn add(&self, x: K::In) {
        let mut x = Some(x);
        TASK_ACCUMS.with(|a| {
            if let Some(map) = a.borrow_mut().as_mut() {
                let p = map
                    .entry(self.id)
                    .or_insert_with(|| Box::new(Partial::<K>(K::zero())));
                if let Some(v) = p.as_any().downcast_mut::<K::Value>()
                    && let Some(x) = x.take()
                {
                    K::add(v, x);
                }
            }
        });
        if let (Some(x), Some(d)) = (x, &self.driver) {
            K::add(&mut d.0.lock(), x);
        }
    }

    /// The merged value, on the driver.
    ///
    /// # Panics
    /// Inside a task (an executor's copy has no value), as Spark refuses to
    /// read an accumulator in a task; use [`Accumulator::try_value`] to check.
    pub fn value(&self) -> K::Value {
        self.try_value().unwrap_or_else(|| {
            panic!(
                "accumulator '{}' can only be read on the driver, not inside a task",
                self.name
            )
        })
    }

    /// The merged value on the driver, `None` inside a task.
    pub fn try_value(&self) -> Option<K::Value> {
        self.driver.as_ref().map(|d| d.0.lock().clone())
    }
}

impl<K: AccumulatorKind> Serialize for Accumulator<K> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (self.id, &self.name).serialize(s)
    }
}

impl<'de, K: AccumulatorKind> Deserialize<'de> for Accumulator<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (id, name) = <(usize, String)>::deserialize(d)?;
        Ok(Accumulator {
            id,
            name,
            driver: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_accumulators_leave_the_registry() {
        let reg = AccumRegistry::default();
        let a = Accumulator::<LongSum>::register(&reg, 0, "a");
        let keep = Accumulator::<LongSum>::register(&reg, 1, "keep");
        let a2 = a.clone();
        drop(a);
        reg.apply(&[(0, crate::codec::encode("t", &5i64).unwrap())]);
        assert_eq!(a2.value(), 5, "a clone keeps it alive");
        drop(a2);
        // Updates for a dropped accumulator are ignored; registering prunes it.
        reg.apply(&[(0, crate::codec::encode("t", &5i64).unwrap())]);
        let _b = Accumulator::<LongSum>::register(&reg, 2, "b");
        assert_eq!(reg.len(), 2);
        assert_eq!(keep.value(), 0);
    }
}
