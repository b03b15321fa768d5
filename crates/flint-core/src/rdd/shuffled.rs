//! Shuffle boundaries: the dependency the map stage runs, and the RDD that reads
//! the shuffled data on the reduce side.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{BoxIter, Dependency, Ph, Rdd, RddBase, RddNode, ShuffleDepBase, Sink, shippable};
use crate::env::TaskContext;
use crate::error::{FlintError, Result};
use crate::func::{Data, Key};
use crate::ship::Shipped;
pub use crate::shuffle::Aggregator;
use crate::shuffle::{
    ExternalAggregator, ExternalSorter, Partitioner, find_undecodable, read_partition,
    read_sized_partition, read_sized_raw_partition, write_map_output,
};
use crate::task::{StageTask, TaskOutput, ship_stage};

/// Where a shuffle combines values by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Combine {
    /// Records pass through (repartitioning, sorting).
    None,
    /// Only reducers combine: each map-side value becomes a one-value combiner
    /// (Spark's groupByKey and cogroup, where map-side combining saves nothing
    /// and would hold a hot key's whole group in one map task's memory).
    ReduceSide,
    /// Map tasks combine before writing, reducers merge the combiners.
    MapAndReduceSide,
}

/// A shuffle of `(K, V)` records into `(K, C)` combiners. With map-side
/// combining the map side merges values per key; without, `aggregator.create`
/// converts each value (the identity for plain repartitioning).
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ShuffleDependency<K: Key, V: Data, C: Data, A: Aggregator<V, C>> {
    pub shuffle_id: usize,
    pub parent: Rdd<(K, V)>,
    pub partitioner: Partitioner<K>,
    pub aggregator: A,
    pub combine: Combine,
    /// Records framed for a sorted shuffle's reducers (see `write_map_output`);
    /// the reading `ShuffledRdd` has the same flag.
    pub(crate) sized_values: bool,
    /// On the driver: removes the shuffle's files and map-output entries when
    /// the dependency is dropped (no RDD or stage needs it any more).
    #[serde(skip)]
    pub(crate) _cleanup: Option<crate::cleaner::CleanupOnDrop>,
    #[serde(skip)]
    pub _p: Ph<C>,
}

impl<K: Key, V: Data, C: Data, A: Aggregator<V, C>> StageTask for ShuffleDependency<K, V, C, A> {
    fn run(&self, partition: usize, tc: &TaskContext) -> Result<TaskOutput> {
        // The writer checks the kill flag itself (no extra layer).
        let records = |sink: Sink<'_, (K, V)>| self.parent.push(partition, tc, sink);
        let agg = (self.combine == Combine::MapAndReduceSide).then_some(&self.aggregator);
        let status = write_map_output(
            tc,
            self.shuffle_id,
            records,
            &self.partitioner,
            agg,
            |v| self.aggregator.create(v),
            self.sized_values && agg.is_none(),
        )?;
        Ok(TaskOutput::Map(status))
    }
}

impl<K: Key, V: Data, C: Data, A: Aggregator<V, C>> ShuffleDepBase
    for ShuffleDependency<K, V, C, A>
{
    fn shuffle_id(&self) -> usize {
        self.shuffle_id
    }
    fn rdd(&self) -> Arc<dyn RddBase> {
        self.parent.base()
    }
    fn num_reduce_partitions(&self) -> usize {
        self.partitioner.num_partitions()
    }
    fn map_task_binary(&self) -> Result<Arc<Shipped>> {
        ship_stage(self)
    }
}

/// The reduce side of a shuffle. Only the shuffle id and the reduce-side logic
/// ship; the map-side lineage stays on the driver in `dep`.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ShuffledRdd<K: Key, V: Data, C: Data, A: Aggregator<V, C>> {
    pub(crate) id: usize,
    pub(crate) shuffle_id: usize,
    pub(crate) num_partitions: usize,
    pub(crate) aggregator: A,
    pub(crate) combine: Combine,
    /// Sort each partition by key: `Some(true)` ascending, `Some(false)` descending.
    pub(crate) ordering: Option<bool>,
    /// As the dependency's: records carry their value's length.
    pub(crate) sized_values: bool,
    /// The dependency's partitioner, for `RddBase::partitioner` (driver only).
    #[serde(skip)]
    pub(crate) partitioner: Option<Arc<Partitioner<K>>>,
    #[serde(skip)]
    pub(crate) dep: Option<Arc<ShuffleDependency<K, V, C, A>>>,
    #[serde(skip)]
    pub(crate) _p: Ph<(K, V, C)>,
}

impl<K: Key, V: Data, C: Data, A: Aggregator<V, C>> RddBase for ShuffledRdd<K, V, C, A> {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "ShuffledRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.num_partitions
    }
    fn dependencies(&self) -> Vec<Dependency> {
        match &self.dep {
            Some(d) => vec![Dependency::Shuffle(d.clone())],
            None => Vec::new(),
        }
    }
    fn partitioner(&self) -> Option<Arc<super::PartitionerAny>> {
        self.partitioner
            .clone()
            .map(|p| p as Arc<super::PartitionerAny>)
    }
}

impl<K: Key, V: Data, C: Data, A: Aggregator<V, C>> RddNode for ShuffledRdd<K, V, C, A> {
    type Item = (K, C);
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<(K, C)>> {
        let errors = tc.errors();
        let out: Box<dyn Iterator<Item = Result<(K, C)>>> = if self.combine != Combine::None {
            let records = read_partition::<(K, C)>(tc, self.shuffle_id, split)?;
            let mut map = ExternalAggregator::<K, C>::new(tc.env.clone(), None);
            for rec in records {
                let (k, c) = rec?;
                map.insert_combiner(&self.aggregator, k, c)?;
            }
            let sorted = self.ordering.is_some();
            let it = map
                .into_iter(&self.aggregator, false, sorted)?
                .map(|r| r.map(|((_, k), c)| (k, c)));
            if self.ordering == Some(false) {
                let v: Vec<_> = it.collect::<Result<_>>()?;
                Box::new(v.into_iter().rev().map(Ok))
            } else {
                Box::new(it)
            }
        } else {
            match self.ordering {
                None => read_partition::<(K, C)>(tc, self.shuffle_id, split)?,
                Some(true) => {
                    let mut s = ExternalSorter::<K, C>::new(tc.env.clone());
                    self.fill(&mut s, split, tc, |k| k)?;
                    s.into_sorted()?
                }
                Some(false) => {
                    let mut s = ExternalSorter::<std::cmp::Reverse<K>, C>::new(tc.env.clone());
                    self.fill(&mut s, split, tc, std::cmp::Reverse)?;
                    Box::new(s.into_sorted()?.map(|r| r.map(|(k, c)| (k.0, c))))
                }
            }
        };
        let blame = self.blame(split, tc);
        Ok(Box::new(out.map_while(move |r| match r {
            Ok(v) => Some(v),
            Err(e) => {
                errors.fail(blame(e));
                None
            }
        })))
    }
    shippable!();
}

impl<K: Key, V: Data, C: Data, A: Aggregator<V, C>> ShuffledRdd<K, V, C, A> {
    /// A sorted partition whose records carried their lengths decodes its
    /// values only on output: a value that does not decode there (under a
    /// matching checksum) is traced to the map output that holds it, and
    /// reported as a fetch failure of that output, which is recomputed, as it
    /// would be had the value been decoded while fetching. Returns what
    /// becomes of an error.
    fn blame(&self, split: usize, tc: &TaskContext) -> impl Fn(FlintError) -> FlintError + 'static {
        let sized = self.sized_values && self.combine == Combine::None;
        let (env, shuffle_id) = (tc.env.clone(), self.shuffle_id);
        move |e| match e {
            FlintError::Codec { .. } if sized => {
                find_undecodable::<K, C>(&env, shuffle_id, split).unwrap_or(e)
            }
            e => e,
        }
    }

    /// Puts this partition's records into a sorter keyed by `key(k)`: values
    /// as the map side encoded them when records carry their lengths.
    fn fill<S: Data + Ord>(
        &self,
        sorter: &mut ExternalSorter<S, C>,
        split: usize,
        tc: &TaskContext,
        key: impl Fn(K) -> S,
    ) -> Result<()> {
        if self.sized_values {
            // Keys the sorter keeps encoded are handed over undecoded: `key`
            // is the identity or `Reverse`, which encodes as its key does
            // (another mapping would have to be applied to decoded keys).
            if let Some(key_len) = sorter.raw_key_len() {
                return read_sized_raw_partition(tc, self.shuffle_id, split, key_len, |k, raw| {
                    sorter.insert_fetched(k, raw)
                });
            }
            return read_sized_partition::<K>(tc, self.shuffle_id, split, |k, raw| {
                sorter.insert_encoded(key(k), raw)
            });
        }
        for rec in read_partition::<(K, C)>(tc, self.shuffle_id, split)? {
            let (k, c) = rec?;
            sorter.insert(key(k), c)?;
        }
        Ok(())
    }
}

/// Combines values by key within each partition of an RDD already
/// partitioned as the combine asks (Spark's `combineByKey` with the RDD's
/// own partitioner: `mapPartitions` of `combineValuesByKey`, no shuffle).
/// Every key's records already share a partition, so combining them there
/// is the whole aggregation; the result keeps the parent's partitioner.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct CombinedRdd<K: Key, V: Data, C: Data, A: Aggregator<V, C>> {
    pub(crate) id: usize,
    pub(crate) parent: Rdd<(K, V)>,
    pub(crate) aggregator: A,
    #[serde(skip)]
    pub(crate) _p: Ph<C>,
}

impl<K: Key, V: Data, C: Data, A: Aggregator<V, C>> RddBase for CombinedRdd<K, V, C, A> {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "MapPartitionsRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.parent.num_partitions()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Narrow(self.parent.base())]
    }
    fn partitioner(&self) -> Option<Arc<super::PartitionerAny>> {
        self.parent.partitioner_any()
    }
}

impl<K: Key, V: Data, C: Data, A: Aggregator<V, C>> RddNode for CombinedRdd<K, V, C, A> {
    type Item = (K, C);
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<(K, C)>> {
        // Spills past the task's memory share, as a reducer's combine does.
        let mut map = ExternalAggregator::<K, C>::new(tc.env.clone(), None);
        let mut batch = Vec::with_capacity(super::BATCH);
        let mut batches = 0u32;
        for kv in self.parent.iterator(split, tc)? {
            batch.push(kv);
            if batch.len() == super::BATCH {
                map.insert_values(&self.aggregator, &mut batch)?;
                // A killed task (a cancelled job, a losing speculative copy)
                // stops here rather than after the whole partition.
                crate::shuffle::check_killed(tc, &mut batches)?;
            }
        }
        map.insert_values(&self.aggregator, &mut batch)?;
        // The parent's read failed part-way: not a partial aggregate.
        if let Some(e) = tc.take_error() {
            return Err(e);
        }
        let errors = tc.errors();
        Ok(Box::new(
            map.into_iter(&self.aggregator, false, false)?
                .map_while(move |r| match r {
                    Ok(((_, k), c)) => Some((k, c)),
                    Err(e) => {
                        errors.fail(e);
                        None
                    }
                }),
        ))
    }
    shippable!();
}
