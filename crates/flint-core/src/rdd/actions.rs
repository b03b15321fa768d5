//! Transformations and actions on every RDD, and the result-stage task that runs
//! an action's per-partition function.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::narrow::*;
use super::{BoxIter, Ph, Rdd};
use crate::env::TaskContext;
use crate::error::{FlintError, Result};
use crate::func::{Data, Func, Key, engine_fn};
use crate::task::{StageTask, TaskOutput};

/// The per-partition half of an action: runs on executors, its output is sent to
/// the driver.
pub trait PartitionFn<T>: Serialize + DeserializeOwned + Send + Sync + 'static {
    type Out: Data;
    fn apply(&self, it: BoxIter<T>, tc: &TaskContext) -> Result<Self::Out>;
}

/// A result stage's task code: the final RDD and the action's function.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct ResultStageTask<T: Data, F: PartitionFn<T>> {
    pub rdd: Rdd<T>,
    pub func: F,
}

impl<T: Data, F: PartitionFn<T>> StageTask for ResultStageTask<T, F> {
    fn run(&self, partition: usize, tc: &TaskContext) -> Result<TaskOutput> {
        let it = interruptible(self.rdd.iterator(partition, tc)?, tc);
        let out = self.func.apply(it, tc)?;
        if let Some(e) = tc.take_error() {
            return Err(e);
        }
        Ok(TaskOutput::Value(crate::codec::encode(
            "task result",
            &out,
        )?))
    }
}

/// Stops a task's record stream soon after the task is killed (Spark's
/// InterruptibleIterator), checking the flag every 1024 records.
pub(crate) fn interruptible<T: 'static>(it: BoxIter<T>, tc: &TaskContext) -> BoxIter<T> {
    let flag = tc.kill_flag();
    let errors = tc.errors();
    let mut n = 0u32;
    let mut it = it;
    Box::new(std::iter::from_fn(move || {
        n = n.wrapping_add(1);
        if n.is_multiple_of(1024) && flag.load(std::sync::atomic::Ordering::Relaxed) {
            errors.fail(FlintError::User("task killed".into()));
            return None;
        }
        it.next()
    }))
}

// ---- engine functions used by actions --------------------------------------

#[derive(Serialize, Deserialize)]
pub struct CollectFn;
impl<T: Data> PartitionFn<T> for CollectFn {
    type Out = Vec<T>;
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<Vec<T>> {
        Ok(it.collect())
    }
}

#[derive(Serialize, Deserialize)]
pub struct CountFn;
impl<T: Data> PartitionFn<T> for CountFn {
    type Out = u64;
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<u64> {
        Ok(it.count() as u64)
    }
}

#[derive(Serialize, Deserialize)]
pub struct TakeFn(pub usize);
impl<T: Data> PartitionFn<T> for TakeFn {
    type Out = Vec<T>;
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<Vec<T>> {
        Ok(it.take(self.0).collect())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ReduceFn<T: Data, F: Func<(T, T), Output = T>>(pub F, #[serde(skip)] pub Ph<T>);
impl<T: Data, F: Func<(T, T), Output = T>> PartitionFn<T> for ReduceFn<T, F> {
    type Out = Option<T>;
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<Option<T>> {
        Ok(it.reduce(|a, b| self.0.call((a, b))))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct AggregateFn<T: Data, U: Data, F: Func<(U, T), Output = U>> {
    zero: U,
    seq: F,
    #[serde(skip)]
    _p: Ph<T>,
}
impl<T: Data, U: Data, F: Func<(U, T), Output = U>> PartitionFn<T> for AggregateFn<T, U, F> {
    type Out = U;
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<U> {
        Ok(it.fold(self.zero.clone(), |a, b| self.seq.call((a, b))))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ForeachPartitionFn<T: Data, F: Func<(BoxIter<T>,), Output = ()>>(
    F,
    #[serde(skip)] Ph<T>,
);
impl<T: Data, F: Func<(BoxIter<T>,), Output = ()>> PartitionFn<T> for ForeachPartitionFn<T, F> {
    type Out = ();
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<()> {
        self.0.call((it,));
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ForeachFn<T: Data, F: Func<(T,), Output = ()>>(F, #[serde(skip)] Ph<T>);
impl<T: Data, F: Func<(T,), Output = ()>> PartitionFn<T> for ForeachFn<T, F> {
    type Out = ();
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<()> {
        for x in it {
            self.0.call((x,));
        }
        Ok(())
    }
}

/// The `n` smallest (or largest) elements of a partition, sorted.
#[derive(Serialize, Deserialize)]
pub struct TakeOrderedFn {
    n: usize,
    ascending: bool,
}
impl<T: Key> PartitionFn<T> for TakeOrderedFn {
    type Out = Vec<T>;
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<Vec<T>> {
        Ok(take_ordered(it, self.n, self.ascending))
    }
}

fn take_ordered<T: Ord>(it: impl Iterator<Item = T>, n: usize, ascending: bool) -> Vec<T> {
    use std::collections::BinaryHeap;
    if n == 0 {
        return Vec::new();
    }
    let mut v: Vec<T> = if ascending {
        let mut heap = BinaryHeap::with_capacity(n + 1);
        for x in it {
            heap.push(x);
            if heap.len() > n {
                heap.pop();
            }
        }
        heap.into_vec()
    } else {
        let mut heap = BinaryHeap::with_capacity(n + 1);
        for x in it {
            heap.push(std::cmp::Reverse(x));
            if heap.len() > n {
                heap.pop();
            }
        }
        heap.into_iter().map(|r| r.0).collect()
    };
    v.sort();
    if !ascending {
        v.reverse();
    }
    v
}

/// Writes a partition as `part-NNNNN` through a temporary attempt file that is
/// moved into place only when the whole partition was written (a simple output
/// committer): a failed or killed attempt leaves nothing behind.
fn write_part_file<T>(
    dir: &std::path::Path,
    it: BoxIter<T>,
    tc: &TaskContext,
    mut write: impl FnMut(&mut std::io::BufWriter<std::fs::File>, T) -> std::io::Result<()>,
) -> Result<()> {
    let name = format!("part-{:05}", tc.partition);
    let tmp = dir
        .join("_temporary")
        .join(format!("{name}-attempt-{}", tc.task_id));
    let f = std::fs::File::create(&tmp).map_err(|e| FlintError::io("cannot create", &tmp, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let written = (|| {
        for x in it {
            write(&mut w, x)?;
        }
        w.flush()
    })();
    drop(w);
    let failed = match written {
        Err(e) => Some(FlintError::io("cannot write", &tmp, e)),
        Ok(()) => tc.take_error(),
    };
    if let Some(e) = failed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dst = dir.join(&name);
    std::fs::rename(&tmp, &dst).map_err(|e| FlintError::io("cannot commit", &dst, e))
}

/// Writes each element's `Display` form as a line.
#[derive(Serialize, Deserialize)]
pub struct SaveTextFn {
    dir: PathBuf,
}
impl<T: Data + std::fmt::Display> PartitionFn<T> for SaveTextFn {
    type Out = ();
    fn apply(&self, it: BoxIter<T>, tc: &TaskContext) -> Result<()> {
        write_part_file(&self.dir, it, tc, |w, x| writeln!(w, "{x}"))
    }
}

/// Writes raw byte records back to back (e.g. the sort example's 100-byte records).
#[derive(Serialize, Deserialize)]
pub struct SaveBytesFn {
    dir: PathBuf,
}
impl<T: Data + AsRef<[u8]>> PartitionFn<T> for SaveBytesFn {
    type Out = ();
    fn apply(&self, it: BoxIter<T>, tc: &TaskContext) -> Result<()> {
        write_part_file(&self.dir, it, tc, |w, x| w.write_all(x.as_ref()))
    }
}

// ---- engine functions used by transformations --------------------------------

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct KeyByFn<T: Data, K: Data, F: Func<(T,), Output = K>>(F, #[serde(skip)] Ph<(T, K)>);
impl<T: Data, K: Data, F: Func<(T,), Output = K>> KeyByFn<T, K, F> {
    fn invoke(&self, (x,): (T,)) -> (K, T) {
        (self.0.call((x.clone(),)), x)
    }
}
engine_fn!(impl[T: Data, K: Data, F: Func<(T,), Output = K>] KeyByFn<T, K, F>, (T,) => (K, T));

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct WithUnit<T: Data>(#[serde(skip)] Ph<T>);
impl<T: Data> WithUnit<T> {
    fn invoke(&self, (x,): (T,)) -> (T, ()) {
        (x, ())
    }
}
engine_fn!(impl[T: Data] WithUnit<T>, (T,) => (T, ()));

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct GlomFn<T: Data>(#[serde(skip)] Ph<T>);
impl<T: Data> GlomFn<T> {
    fn invoke(&self, (_, it): (usize, BoxIter<T>)) -> std::iter::Once<Vec<T>> {
        std::iter::once(it.collect())
    }
}
engine_fn!(impl[T: Data] GlomFn<T>, (usize, BoxIter<T>) => std::iter::Once<Vec<T>>);

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct IgnoreIndex<T: Data, I: IntoIterator + 'static, F: Func<(BoxIter<T>,), Output = I>>(
    F,
    #[serde(skip)] Ph<(T, I)>,
);
impl<T: Data, I: IntoIterator + 'static, F: Func<(BoxIter<T>,), Output = I>> IgnoreIndex<T, I, F> {
    fn invoke(&self, (_, it): (usize, BoxIter<T>)) -> I {
        self.0.call((it,))
    }
}
impl<T: Data, I: IntoIterator + 'static, F: Func<(BoxIter<T>,), Output = I>> Clone
    for IgnoreIndex<T, I, F>
{
    fn clone(&self) -> Self {
        IgnoreIndex(self.0.clone(), Default::default())
    }
}
engine_fn!(impl[T: Data, I: IntoIterator + 'static, F: Func<(BoxIter<T>,), Output = I>] IgnoreIndex<T, I, F>, (usize, BoxIter<T>) => I);

/// Deals a partition's records round-robin over the `n` output partitions,
/// from a start that depends on the partition (Spark's `repartition`): each
/// record is keyed with a key the hash partitioner puts in the next
/// partition, so every output partition gets its share, even of a handful of
/// records (hashing consecutive positions would scatter small inputs unevenly).
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SpreadFn<T: Data> {
    n: usize,
    #[serde(skip)]
    _p: Ph<T>,
}
impl<T: Data> SpreadFn<T> {
    fn invoke(&self, (idx, it): (usize, BoxIter<T>)) -> BoxIter<(u64, T)> {
        let n = self.n.max(1);
        let keys = keys_per_partition(n);
        let start = (crate::shuffle::stable_hash(&idx) % n as u64) as usize;
        Box::new(it.enumerate().map(move |(i, x)| (keys[(start + i) % n], x)))
    }
}

/// For each of `n` hash partitions, a `u64` key the hash partitioner puts
/// there (see `find_keys`), found once per process for each `n`: every task
/// of a repartition needs the same table.
fn keys_per_partition(n: usize) -> Arc<Vec<u64>> {
    static TABLES: std::sync::Mutex<Vec<(usize, Arc<Vec<u64>>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, t)) = tables.iter().find(|(m, _)| *m == n) {
        return t.clone();
    }
    let t = Arc::new(find_keys(n));
    // A few recent partition counts: the table of a huge one is not kept
    // long after its job.
    if tables.len() >= 8 {
        tables.remove(0);
    }
    tables.push((n, t.clone()));
    t
}

/// Keys for each of `n` hash partitions, found by trying 0, 1, 2... (about
/// n ln n tries). A partition no key reached within 64 tries per partition
/// (never seen) gets its own index, placed wherever it hashes.
fn find_keys(n: usize) -> Vec<u64> {
    let p = crate::shuffle::Partitioner::<u64>::Hash(n);
    let mut keys: Vec<Option<u64>> = vec![None; n];
    let mut missing = n;
    let mut k = 0u64;
    while missing > 0 && k < 64 * n as u64 {
        let slot = &mut keys[p.partition(&k)];
        if slot.is_none() {
            *slot = Some(k);
            missing -= 1;
        }
        k += 1;
    }
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| k.unwrap_or(i as u64))
        .collect()
}
engine_fn!(impl[T: Data] SpreadFn<T>, (usize, BoxIter<T>) => BoxIter<(u64, T)>);

impl<T: Data> Rdd<T> {
    pub(crate) fn derive<U: Data>(&self, node: impl super::RddNode<Item = U>) -> Rdd<U> {
        Rdd::with_node(self.sc.as_ref(), Arc::new(node))
    }

    pub(crate) fn new_id(&self) -> usize {
        self.sc
            .as_ref()
            .map(|s| s.new_rdd_id())
            .unwrap_or(usize::MAX)
    }

    pub fn map<U: Data, F: Func<(T,), Output = U>>(&self, f: F) -> Rdd<U> {
        self.map_with(f, false)
    }

    /// `map`, saying whether `f` keeps each record's key (then the result keeps
    /// this RDD's partitioner, as Spark's `preservesPartitioning`).
    pub(crate) fn map_with<U: Data, F: Func<(T,), Output = U>>(
        &self,
        f: F,
        preserves_partitioning: bool,
    ) -> Rdd<U> {
        self.derive(MapRdd {
            id: self.new_id(),
            parent: self.clone(),
            f,
            preserves_partitioning,
            _p: Default::default(),
        })
    }

    pub fn filter<F: for<'a> Func<(&'a T,), Output = bool>>(&self, f: F) -> Rdd<T> {
        self.derive(FilterRdd {
            id: self.new_id(),
            parent: self.clone(),
            f,
        })
    }

    pub fn flat_map<U: Data, I: IntoIterator<Item = U> + 'static, F: Func<(T,), Output = I>>(
        &self,
        f: F,
    ) -> Rdd<U> {
        self.flat_map_with(f, false)
    }

    /// `flat_map`, saying whether `f` keeps each record's key (see `map_with`).
    pub(crate) fn flat_map_with<
        U: Data,
        I: IntoIterator<Item = U> + 'static,
        F: Func<(T,), Output = I>,
    >(
        &self,
        f: F,
        preserves_partitioning: bool,
    ) -> Rdd<U> {
        self.derive(FlatMapRdd {
            id: self.new_id(),
            parent: self.clone(),
            f,
            preserves_partitioning,
            _p: Default::default(),
        })
    }

    pub fn map_partitions_with_index<
        U: Data,
        I: IntoIterator<Item = U> + 'static,
        F: Func<(usize, BoxIter<T>), Output = I>,
    >(
        &self,
        f: F,
    ) -> Rdd<U> {
        self.derive(MapPartitionsRdd {
            id: self.new_id(),
            parent: self.clone(),
            f,
            preserves_partitioning: false,
            _p: Default::default(),
        })
    }

    pub fn map_partitions<
        U: Data,
        I: IntoIterator<Item = U> + 'static,
        F: Func<(BoxIter<T>,), Output = I>,
    >(
        &self,
        f: F,
    ) -> Rdd<U> {
        self.map_partitions_with_index(IgnoreIndex(f, Default::default()))
    }

    /// Each partition as one `Vec`.
    pub fn glom(&self) -> Rdd<Vec<T>> {
        self.map_partitions_with_index(GlomFn(Default::default()))
    }

    pub fn union(&self, other: &Rdd<T>) -> Rdd<T> {
        self.derive(UnionRdd {
            id: self.new_id(),
            parents: vec![self.clone(), other.clone()],
        })
    }

    pub fn key_by<K: Data, F: Func<(T,), Output = K>>(&self, f: F) -> Rdd<(K, T)> {
        self.map(KeyByFn(f, Default::default()))
    }

    pub fn sample(&self, with_replacement: bool, fraction: f64, seed: u64) -> Result<Rdd<T>> {
        if !(fraction >= 0.0 && (with_replacement || fraction <= 1.0)) {
            return Err(FlintError::InvalidArgument(format!(
                "sample fraction {fraction} must be in [0, 1] without replacement, or >= 0 with replacement"
            )));
        }
        Ok(self.derive(SampleRdd {
            id: self.new_id(),
            parent: self.clone(),
            with_replacement,
            fraction,
            seed,
        }))
    }

    pub fn zip<U: Data>(&self, other: &Rdd<U>) -> Result<Rdd<(T, U)>> {
        if self.num_partitions() != other.num_partitions() {
            return Err(FlintError::InvalidArgument(format!(
                "Can't zip RDDs with unequal numbers of partitions: {} and {}",
                self.num_partitions(),
                other.num_partitions()
            )));
        }
        Ok(self.derive(ZipRdd {
            id: self.new_id(),
            a: self.clone(),
            b: other.clone(),
        }))
    }

    pub fn cartesian<U: Data>(&self, other: &Rdd<U>) -> Rdd<(T, U)> {
        self.derive(CartesianRdd {
            id: self.new_id(),
            a: self.clone(),
            b: other.clone(),
        })
    }

    /// Fewer partitions without a shuffle (contiguous groups of parent partitions).
    pub fn coalesce(&self, n: usize) -> Rdd<T> {
        self.derive(CoalescedRdd {
            id: self.new_id(),
            groups: CoalescedRdd::<T>::groups(self.num_partitions(), n),
            parent: self.clone(),
        })
    }

    /// Exactly `n` partitions of about equal size, through a shuffle.
    pub fn repartition(&self, n: usize) -> Rdd<T> {
        self.map_partitions_with_index(SpreadFn {
            n: n.max(1),
            _p: Default::default(),
        })
        .partition_by(n.max(1))
        .values()
    }

    pub fn sort_by<K: Key, F: Func<(T,), Output = K>>(
        &self,
        f: F,
        ascending: bool,
        num_partitions: usize,
    ) -> Result<Rdd<T>> {
        Ok(self
            .key_by(f)
            .sort_by_key(ascending, num_partitions)?
            .values())
    }

    // ---- actions ----

    /// The shipped task code of a result stage computing `func` over this RDD
    /// (what `run_job` submits; exposed for tools and cross-process tests).
    pub fn stage_binary<F: PartitionFn<T>>(&self, func: F) -> Result<Arc<crate::ship::Shipped>> {
        crate::task::ship_stage(&ResultStageTask {
            rdd: self.clone(),
            func,
        })
    }

    /// Runs `func` on the given partitions (all when `None`) and returns the
    /// per-partition outputs in partition order.
    pub fn run_job<F: PartitionFn<T>>(
        &self,
        func: F,
        partitions: Option<Vec<usize>>,
    ) -> Result<Vec<F::Out>> {
        let sc = self.context()?;
        let parts = partitions.unwrap_or_else(|| (0..self.num_partitions()).collect());
        let task = ResultStageTask {
            rdd: self.clone(),
            func,
        };
        let binary = crate::task::ship_stage(&task)?;
        let raw = sc.run_job(self.base(), binary, parts)?;
        raw.iter()
            .map(|b| crate::codec::decode("task result", b))
            .collect()
    }

    /// The elements, one partition at a time: a job per partition, run as
    /// the iterator reaches it, so the driver holds at most one partition
    /// (Spark's `toLocalIterator`). A failed job ends the iteration with its
    /// error.
    pub fn to_local_iterator(&self) -> impl Iterator<Item = Result<T>> + Send + use<T> {
        let rdd = self.clone();
        let mut failed = false;
        (0..self.num_partitions()).flat_map(move |p| {
            let part: Box<dyn Iterator<Item = Result<T>> + Send> = if failed {
                Box::new(std::iter::empty())
            } else {
                match rdd.run_job(CollectFn, Some(vec![p])) {
                    Ok(parts) => Box::new(parts.into_iter().flatten().map(Ok)),
                    Err(e) => {
                        failed = true;
                        Box::new(std::iter::once(Err(e)))
                    }
                }
            };
            part
        })
    }

    pub fn collect(&self) -> Result<Vec<T>> {
        Ok(self
            .run_job(CollectFn, None)?
            .into_iter()
            .flatten()
            .collect())
    }

    pub fn count(&self) -> Result<u64> {
        Ok(self.run_job(CountFn, None)?.into_iter().sum())
    }

    pub fn reduce<F: Func<(T, T), Output = T>>(&self, f: F) -> Result<T> {
        let parts = self.run_job(ReduceFn(f.clone(), Default::default()), None)?;
        parts
            .into_iter()
            .flatten()
            .reduce(|a, b| f.call((a, b)))
            .ok_or_else(|| {
                FlintError::InvalidArgument(
                    "reduce of an empty RDD (use fold with a zero value)".into(),
                )
            })
    }

    pub fn fold<F: Func<(T, T), Output = T>>(&self, zero: T, f: F) -> Result<T> {
        self.aggregate(zero, f.clone(), f)
    }

    pub fn aggregate<U: Data, S: Func<(U, T), Output = U>, C: Func<(U, U), Output = U>>(
        &self,
        zero: U,
        seq: S,
        comb: C,
    ) -> Result<U> {
        let parts = self.run_job(
            AggregateFn {
                zero: zero.clone(),
                seq,
                _p: Default::default(),
            },
            None,
        )?;
        Ok(parts.into_iter().fold(zero, |a, b| comb.call((a, b))))
    }

    pub fn foreach<F: Func<(T,), Output = ()>>(&self, f: F) -> Result<()> {
        self.run_job(ForeachFn(f, Default::default()), None)
            .map(|_| ())
    }

    pub fn foreach_partition<F: Func<(BoxIter<T>,), Output = ()>>(&self, f: F) -> Result<()> {
        self.run_job(ForeachPartitionFn(f, Default::default()), None)
            .map(|_| ())
    }

    /// The first `n` elements, scanning partitions in growing batches as Spark does
    /// (1 partition, then up to 4x more each round) so a small take stays cheap.
    pub fn take(&self, n: usize) -> Result<Vec<T>> {
        let total = self.num_partitions();
        let mut out = Vec::new();
        let mut scanned = 0;
        let mut batch = 1;
        while out.len() < n && scanned < total {
            let end = (scanned + batch).min(total);
            let left = n - out.len();
            for part in self.run_job(TakeFn(left), Some((scanned..end).collect()))? {
                out.extend(part.into_iter().take(n - out.len()));
            }
            scanned = end;
            batch *= 4;
        }
        Ok(out)
    }

    pub fn first(&self) -> Result<T> {
        self.take(1)?
            .into_iter()
            .next()
            .ok_or_else(|| FlintError::InvalidArgument("first() of an empty RDD".into()))
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.num_partitions() == 0 || self.take(1)?.is_empty())
    }

    /// Writes one text file per partition (`part-00000`, ...) and `_SUCCESS`.
    pub fn save_as_text_file(&self, dir: impl Into<PathBuf>) -> Result<()>
    where
        T: std::fmt::Display,
    {
        let dir = super::sources::absolute(&dir.into())?;
        prepare_output(&dir)?;
        self.run_job(SaveTextFn { dir: dir.clone() }, None)?;
        finish_output(&dir)
    }

    /// Writes each partition's byte records back to back, one file per partition.
    pub fn save_as_binary_records(&self, dir: impl Into<PathBuf>) -> Result<()>
    where
        T: AsRef<[u8]>,
    {
        let dir = super::sources::absolute(&dir.into())?;
        prepare_output(&dir)?;
        self.run_job(SaveBytesFn { dir: dir.clone() }, None)?;
        finish_output(&dir)
    }
}

fn prepare_output(dir: &std::path::Path) -> Result<()> {
    if dir.exists() {
        return Err(FlintError::OutputExists(dir.to_path_buf()));
    }
    let tmp = dir.join("_temporary");
    std::fs::create_dir_all(&tmp)
        .map_err(|e| FlintError::io("cannot create output directory", &tmp, e))
}

fn finish_output(dir: &std::path::Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir.join("_temporary"));
    let ok = dir.join("_SUCCESS");
    std::fs::write(&ok, b"").map_err(|e| FlintError::io("cannot write", &ok, e))
}

impl<T: Key> Rdd<T> {
    pub fn distinct(&self) -> Rdd<T> {
        self.map(WithUnit(Default::default()))
            .reduce_by_key(super::pair::KeepFirst(Default::default()))
            .keys()
    }

    /// The distinct elements, in `num_partitions` partitions.
    pub fn distinct_with(&self, num_partitions: usize) -> Rdd<T> {
        self.map(WithUnit(Default::default()))
            .reduce_by_key_with(num_partitions, super::pair::KeepFirst(Default::default()))
            .keys()
    }

    /// The `n` smallest elements, ascending.
    pub fn take_ordered(&self, n: usize) -> Result<Vec<T>> {
        let parts = self.run_job(TakeOrderedFn { n, ascending: true }, None)?;
        Ok(take_ordered(parts.into_iter().flatten(), n, true))
    }

    /// The `n` largest elements, descending.
    pub fn top(&self, n: usize) -> Result<Vec<T>> {
        let parts = self.run_job(
            TakeOrderedFn {
                n,
                ascending: false,
            },
            None,
        )?;
        Ok(take_ordered(parts.into_iter().flatten(), n, false))
    }

    /// Distinct elements present in both RDDs.
    pub fn intersection(&self, other: &Rdd<T>) -> Rdd<T> {
        self.map(WithUnit(Default::default()))
            .cogroup(&other.map(WithUnit(Default::default())))
            .flat_map(super::pair::BothSides(Default::default()))
    }

    /// Elements of this RDD (with duplicates) not present in `other`.
    /// The elements not in `other`, in as many partitions as this RDD has
    /// (as Spark's `subtract`).
    pub fn subtract(&self, other: &Rdd<T>) -> Rdd<T> {
        self.map(WithUnit(Default::default()))
            .cogroup_with(
                &other.map(WithUnit(Default::default())),
                crate::shuffle::Partitioner::Hash(self.num_partitions().max(1)),
            )
            .flat_map(super::pair::LeftOnly(Default::default()))
    }

    pub fn count_by_value(&self) -> Result<std::collections::HashMap<T, u64>> {
        self.map(WithUnit(Default::default())).count_by_key()
    }
}
