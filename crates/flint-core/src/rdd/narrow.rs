//! Transformations whose child partitions each read a bounded set of parent
//! partitions inside the same task (narrow dependencies).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{BATCH, BoxIter, Dependency, Ph, Rdd, RddBase, RddNode, Sink, shippable};
use crate::env::TaskContext;
use crate::error::{FlintError, Result};
use crate::func::{Data, Func};

fn narrow<T: Data>(r: &Rdd<T>) -> Dependency {
    Dependency::Narrow(r.base())
}

/// The `RddBase` methods of a node with one parent and the same partitions.
macro_rules! one_parent_base {
    ($name:literal) => {
        fn id(&self) -> usize {
            self.id
        }
        fn name(&self) -> String {
            $name.into()
        }
        fn num_partitions(&self) -> usize {
            self.parent.num_partitions()
        }
        fn dependencies(&self) -> Vec<Dependency> {
            vec![narrow(&self.parent)]
        }
    };
    // A node that keeps its parent's keys where they were: it reports the
    // parent's partitioner when `$keeps(self)`.
    ($name:literal, partitioner if $keeps:expr) => {
        one_parent_base!($name);
        fn partitioner(&self) -> Option<Arc<super::PartitionerAny>> {
            let keeps: fn(&Self) -> bool = $keeps;
            if keeps(self) {
                self.parent.partitioner_any()
            } else {
                None
            }
        }
    };
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct MapRdd<T: Data, U: Data, F: Func<(T,), Output = U>> {
    pub(crate) id: usize,
    pub(crate) parent: Rdd<T>,
    pub(crate) f: F,
    /// The function keeps each record's key (`map_values`).
    #[serde(skip)]
    pub(crate) preserves_partitioning: bool,
    #[serde(skip)]
    pub(crate) _p: Ph<U>,
}

impl<T: Data, U: Data, F: Func<(T,), Output = U>> RddBase for MapRdd<T, U, F> {
    one_parent_base!("MapPartitionsRDD", partitioner if |s| s.preserves_partitioning);
}

impl<T: Data, U: Data, F: Func<(T,), Output = U>> RddNode for MapRdd<T, U, F> {
    type Item = U;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<U>> {
        let f = self.f.clone();
        Ok(Box::new(
            self.parent.iterator(split, tc)?.map(move |x| f.call((x,))),
        ))
    }
    fn push(&self, split: usize, tc: &TaskContext, sink: Sink<'_, U>) -> Result<()> {
        let f = &self.f;
        let mut out = Vec::with_capacity(BATCH);
        self.parent.push(split, tc, &mut |batch| {
            out.extend(batch.drain(..).map(|x| f.call((x,))));
            sink(&mut out)?;
            out.clear();
            Ok(())
        })
    }
    shippable!();
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct FilterRdd<T: Data, F: for<'a> Func<(&'a T,), Output = bool>> {
    pub(crate) id: usize,
    pub(crate) parent: Rdd<T>,
    pub(crate) f: F,
}

impl<T: Data, F: for<'a> Func<(&'a T,), Output = bool>> RddBase for FilterRdd<T, F> {
    one_parent_base!("MapPartitionsRDD", partitioner if |_| true);
}

impl<T: Data, F: for<'a> Func<(&'a T,), Output = bool>> RddNode for FilterRdd<T, F> {
    type Item = T;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<T>> {
        let f = self.f.clone();
        Ok(Box::new(
            self.parent
                .iterator(split, tc)?
                .filter(move |x| f.call((x,))),
        ))
    }
    fn push(&self, split: usize, tc: &TaskContext, sink: Sink<'_, T>) -> Result<()> {
        let f = &self.f;
        self.parent.push(split, tc, &mut |batch| {
            batch.retain(|x| f.call((x,)));
            if batch.is_empty() {
                Ok(())
            } else {
                sink(batch)
            }
        })
    }
    shippable!();
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct FlatMapRdd<
    T: Data,
    U: Data,
    I: IntoIterator<Item = U> + 'static,
    F: Func<(T,), Output = I>,
> {
    pub(crate) id: usize,
    pub(crate) parent: Rdd<T>,
    pub(crate) f: F,
    /// The function keeps each record's key (`flat_map_values`, joins).
    #[serde(skip)]
    pub(crate) preserves_partitioning: bool,
    #[serde(skip)]
    pub(crate) _p: Ph<(U, I)>,
}

impl<T: Data, U: Data, I: IntoIterator<Item = U> + 'static, F: Func<(T,), Output = I>> RddBase
    for FlatMapRdd<T, U, I, F>
{
    one_parent_base!("MapPartitionsRDD", partitioner if |s| s.preserves_partitioning);
}

impl<T: Data, U: Data, I: IntoIterator<Item = U> + 'static, F: Func<(T,), Output = I>> RddNode
    for FlatMapRdd<T, U, I, F>
{
    type Item = U;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<U>> {
        let f = self.f.clone();
        Ok(Box::new(
            self.parent
                .iterator(split, tc)?
                .flat_map(move |x| f.call((x,))),
        ))
    }
    fn push(&self, split: usize, tc: &TaskContext, sink: Sink<'_, U>) -> Result<()> {
        let f = &self.f;
        let mut out: Vec<U> = Vec::with_capacity(BATCH);
        self.parent.push(split, tc, &mut |batch| {
            for x in batch.drain(..) {
                // Each record's outputs go into the batch as a run (a copy of
                // the run when the function returns a `Vec`), not one checked
                // push each.
                let mut it = f.call((x,)).into_iter();
                loop {
                    let room = BATCH - out.len();
                    out.extend(it.by_ref().take(room));
                    if out.len() < BATCH {
                        break;
                    }
                    sink(&mut out)?;
                    out.clear();
                }
            }
            Ok(())
        })?;
        if out.is_empty() {
            return Ok(());
        }
        sink(&mut out)
    }
    shippable!();
}

/// `map_partitions_with_index`: the function gets the partition index and the
/// partition's iterator and returns any iterable.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct MapPartitionsRdd<
    T: Data,
    U: Data,
    I: IntoIterator<Item = U> + 'static,
    F: Func<(usize, BoxIter<T>), Output = I>,
> {
    pub(crate) id: usize,
    pub(crate) parent: Rdd<T>,
    pub(crate) f: F,
    pub(crate) preserves_partitioning: bool,
    #[serde(skip)]
    pub(crate) _p: Ph<(U, I)>,
}

impl<
    T: Data,
    U: Data,
    I: IntoIterator<Item = U> + 'static,
    F: Func<(usize, BoxIter<T>), Output = I>,
> RddBase for MapPartitionsRdd<T, U, I, F>
{
    one_parent_base!("MapPartitionsRDD", partitioner if |s| s.preserves_partitioning);
}

impl<
    T: Data,
    U: Data,
    I: IntoIterator<Item = U> + 'static,
    F: Func<(usize, BoxIter<T>), Output = I>,
> RddNode for MapPartitionsRdd<T, U, I, F>
{
    type Item = U;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<U>> {
        let it = self.parent.iterator(split, tc)?;
        Ok(Box::new(self.f.call((split, it)).into_iter()))
    }
    shippable!();
}

/// The right-hand partition of a cartesian product, replayed once per left
/// record: kept in memory while it fits in the task's memory share, else
/// written once to a local spill file and re-read per left record (Spark
/// recomputes it from lineage each time; a file read is cheaper and bounded).
enum RightSide<U> {
    Memory(Arc<Vec<U>>),
    Spilled {
        file: Arc<crate::shuffle::SpillFile>,
        compression: crate::env::Compression,
    },
}

impl<U: Data> RightSide<U> {
    fn read(mut it: BoxIter<U>, tc: &TaskContext) -> Result<Self> {
        let budget = tc.env.task_memory;
        let mut kept = Vec::new();
        let (mut bytes, mut scratch) = (0u64, Vec::new());
        for u in it.by_ref() {
            if kept.len() % 32 == 0 {
                scratch.clear();
                crate::codec::encode_into("size sample", &u, &mut scratch)?;
                bytes += 32 * (scratch.len() + std::mem::size_of::<U>()) as u64;
            }
            kept.push(u);
            if bytes > budget {
                return Self::spill(kept.into_iter().chain(it), tc);
            }
        }
        Ok(RightSide::Memory(Arc::new(kept)))
    }

    fn spill(records: impl Iterator<Item = U>, tc: &TaskContext) -> Result<Self> {
        let path = tc.env.temp_file("cartesian");
        let f = std::fs::File::create(&path)
            .map_err(|e| FlintError::io("cannot create spill file", &path, e))?;
        let mut file = crate::shuffle::SpillFile { path, len: 0 };
        let mut w = crate::shuffle::FrameWriter::new(
            std::io::BufWriter::with_capacity(1 << 20, f),
            tc.env.compression,
        );
        for u in records {
            w.write(&u)?;
        }
        file.len = w.finish_segment()?;
        w.into_inner()?;
        tc.env
            .spill_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(RightSide::Spilled {
            file: Arc::new(file),
            compression: tc.env.compression,
        })
    }

    fn records(&self) -> Box<dyn Iterator<Item = Result<U>>> {
        match self {
            RightSide::Memory(v) => {
                let v = v.clone();
                Box::new((0..v.len()).map(move |i| Ok(v[i].clone())))
            }
            RightSide::Spilled { file, compression } => {
                let file = file.clone();
                let opened = std::fs::File::open(&file.path)
                    .map_err(|e| FlintError::io("cannot open spill file", &file.path, e));
                match opened {
                    Ok(f) => {
                        let mut r = crate::shuffle::FrameReader::<_, U>::new(
                            std::io::BufReader::with_capacity(128 << 10, f),
                            *compression,
                            file.len,
                        );
                        Box::new(std::iter::from_fn(move || {
                            let _keep = &file;
                            r.next_record().transpose()
                        }))
                    }
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            }
        }
    }
}

/// Partitions of several RDDs, one after another.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct UnionRdd<T: Data> {
    pub(crate) id: usize,
    pub(crate) parents: Vec<Rdd<T>>,
}

impl<T: Data> UnionRdd<T> {
    fn locate(&self, mut split: usize) -> Option<(&Rdd<T>, usize)> {
        for p in &self.parents {
            let n = p.num_partitions();
            if split < n {
                return Some((p, split));
            }
            split -= n;
        }
        None
    }
}

impl<T: Data> RddBase for UnionRdd<T> {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "UnionRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.parents.iter().map(|p| p.num_partitions()).sum()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        self.parents.iter().map(narrow).collect()
    }
    fn narrow_parents(&self, mut split: usize) -> Vec<(usize, usize)> {
        for (i, p) in self.parents.iter().enumerate() {
            let n = p.num_partitions();
            if split < n {
                return vec![(i, split)];
            }
            split -= n;
        }
        Vec::new()
    }
}

impl<T: Data> RddNode for UnionRdd<T> {
    type Item = T;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<T>> {
        let (p, s) = self
            .locate(split)
            .ok_or_else(|| FlintError::InvalidArgument(format!("no partition {split} in union")))?;
        p.iterator(s, tc)
    }
    shippable!();
}

/// Fewer partitions without a shuffle: child partition i reads a contiguous range
/// of parent partitions.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct CoalescedRdd<T: Data> {
    pub(crate) id: usize,
    pub(crate) parent: Rdd<T>,
    pub(crate) groups: Vec<(usize, usize)>,
}

impl<T: Data> CoalescedRdd<T> {
    pub(crate) fn groups(parent_parts: usize, n: usize) -> Vec<(usize, usize)> {
        let n = n.clamp(1, parent_parts.max(1));
        (0..n)
            .map(|i| (i * parent_parts / n, (i + 1) * parent_parts / n))
            .collect()
    }
}

impl<T: Data> RddBase for CoalescedRdd<T> {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "CoalescedRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.groups.len()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        vec![narrow(&self.parent)]
    }
    fn narrow_parents(&self, split: usize) -> Vec<(usize, usize)> {
        let (a, b) = self.groups[split];
        (a..b).map(|p| (0, p)).collect()
    }
}

impl<T: Data> RddNode for CoalescedRdd<T> {
    type Item = T;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<T>> {
        let (a, b) = self.groups[split];
        let mut its = Vec::with_capacity(b - a);
        for p in a..b {
            its.push(self.parent.iterator(p, tc)?);
        }
        Ok(Box::new(its.into_iter().flatten()))
    }
    shippable!();
}

/// Pairs the i-th elements of two RDDs with the same partitioning.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ZipRdd<T: Data, U: Data> {
    pub(crate) id: usize,
    pub(crate) a: Rdd<T>,
    pub(crate) b: Rdd<U>,
}

impl<T: Data, U: Data> RddBase for ZipRdd<T, U> {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "ZippedPartitionsRDD2".into()
    }
    fn num_partitions(&self) -> usize {
        self.a.num_partitions()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        vec![narrow(&self.a), narrow(&self.b)]
    }
}

impl<T: Data, U: Data> RddNode for ZipRdd<T, U> {
    type Item = (T, U);
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<(T, U)>> {
        let mut a = self.a.iterator(split, tc)?;
        let mut b = self.b.iterator(split, tc)?;
        let errors = tc.errors();
        Ok(Box::new(std::iter::from_fn(move || {
            match (a.next(), b.next()) {
                (Some(x), Some(y)) => Some((x, y)),
                (None, None) => None,
                _ => {
                    errors.fail(FlintError::InvalidArgument(
                        "Can only zip RDDs with same number of elements in each partition".into(),
                    ));
                    None
                }
            }
        })))
    }
    shippable!();
}

/// Every pair of an element of `a` and an element of `b`; partition (i, j) holds
/// a's partition i times b's partition j.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct CartesianRdd<T: Data, U: Data> {
    pub(crate) id: usize,
    pub(crate) a: Rdd<T>,
    pub(crate) b: Rdd<U>,
}

impl<T: Data, U: Data> RddBase for CartesianRdd<T, U> {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "CartesianRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.a.num_partitions() * self.b.num_partitions()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        vec![narrow(&self.a), narrow(&self.b)]
    }
    fn narrow_parents(&self, split: usize) -> Vec<(usize, usize)> {
        let nb = self.b.num_partitions();
        vec![(0, split / nb), (1, split % nb)]
    }
}

impl<T: Data, U: Data> RddNode for CartesianRdd<T, U> {
    type Item = (T, U);
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<(T, U)>> {
        let nb = self.b.num_partitions();
        let right = RightSide::read(self.b.iterator(split % nb, tc)?, tc)?;
        let left = self.a.iterator(split / nb, tc)?;
        let errors = tc.errors();
        Ok(Box::new(left.flat_map(move |x| {
            let errors = errors.clone();
            right.records().map_while(move |r| match r {
                Ok(u) => Some((x.clone(), u)),
                Err(e) => {
                    errors.fail(e);
                    None
                }
            })
        })))
    }
    shippable!();
}

/// Bernoulli (without replacement) or Poisson (with replacement) sampling,
/// seeded per partition so a recomputed partition gives the same sample.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SampleRdd<T: Data> {
    pub(crate) id: usize,
    pub(crate) parent: Rdd<T>,
    pub(crate) with_replacement: bool,
    pub(crate) fraction: f64,
    pub(crate) seed: u64,
}

impl<T: Data> RddBase for SampleRdd<T> {
    one_parent_base!("PartitionwiseSampledRDD");
}

impl<T: Data> RddNode for SampleRdd<T> {
    type Item = T;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<T>> {
        let mut rng =
            crate::util::SplitMix64::new(self.seed ^ (split as u64).wrapping_mul(0x9E37_79B9));
        let fraction = self.fraction;
        let it = self.parent.iterator(split, tc)?;
        if self.with_replacement {
            Ok(Box::new(it.flat_map(move |x| {
                let k = rng.poisson(fraction);
                std::iter::repeat_n(x, k)
            })))
        } else {
            Ok(Box::new(it.filter(move |_| rng.next_f64() < fraction)))
        }
    }
    shippable!();
}
