//! Spark's CoGroupedRDD: groups the values of two pair RDDs by key. A side
//! already partitioned like the result is read partition by partition through a
//! one-to-one (narrow) dependency; only a side partitioned otherwise is
//! shuffled. So joining an RDD with `map_values` of itself, or with anything
//! produced by the same partitioner (PageRank's links and ranks), moves no data.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::pair::{CoGroupAgg, NoAgg, Side};
use super::shuffled::{Combine, ShuffleDependency};
use super::{BoxIter, Dependency, Ph, Rdd, RddBase, RddNode, shippable};
use crate::env::TaskContext;
use crate::error::Result;
use crate::func::{Data, Key};
use crate::shuffle::{ExternalAggregator, Partitioner, read_partition};

/// One input of a cogroup.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub enum CoGroupInput<K: Key, X: Data> {
    /// Partitioned like the result: partition i is the parent's partition i.
    Narrow(Rdd<(K, X)>),
    /// Shuffled into the result's partitions (records pass through unchanged).
    Shuffled {
        shuffle_id: usize,
        #[serde(skip)]
        dep: Option<Arc<ShuffleDependency<K, X, X, NoAgg<X>>>>,
    },
}

impl<K: Key, X: Data> CoGroupInput<K, X> {
    /// `rdd` as an input of a cogroup partitioned by `p`.
    pub(crate) fn new(rdd: &Rdd<(K, X)>, p: &Partitioner<K>) -> Self {
        if rdd.partitioner().as_ref() == Some(p) {
            return CoGroupInput::Narrow(rdd.clone());
        }
        let sc = rdd.sc.as_ref();
        let shuffle_id = sc.map(|s| s.new_shuffle_id()).unwrap_or(usize::MAX);
        let dep = Arc::new(ShuffleDependency {
            shuffle_id,
            parent: rdd.clone(),
            partitioner: p.clone(),
            aggregator: NoAgg(Default::default()),
            combine: Combine::None,
            sized_values: false,
            _cleanup: sc.map(|s| {
                s.cleaner()
                    .guard(crate::cleaner::CleanupTask::Shuffle(shuffle_id))
            }),
            _p: Default::default(),
        });
        CoGroupInput::Shuffled {
            shuffle_id,
            dep: Some(dep),
        }
    }

    fn dependency(&self) -> Option<Dependency> {
        match self {
            CoGroupInput::Narrow(r) => Some(Dependency::Narrow(r.base())),
            CoGroupInput::Shuffled { dep, .. } => dep
                .as_ref()
                .map(|d| Dependency::Shuffle(d.clone() as Arc<dyn super::ShuffleDepBase>)),
        }
    }

    /// Partition `split` of this input, each record tagged by `tag`.
    fn feed<V: Data, W: Data>(
        &self,
        split: usize,
        tc: &TaskContext,
        map: &mut ExternalAggregator<K, (Vec<V>, Vec<W>)>,
        tag: impl Fn(X) -> Side<V, W>,
    ) -> Result<()> {
        let agg = CoGroupAgg::<V, W>(Default::default());
        match self {
            CoGroupInput::Narrow(r) => {
                for (k, x) in r.iterator(split, tc)? {
                    map.insert_value(&agg, k, tag(x))?;
                }
            }
            CoGroupInput::Shuffled { shuffle_id, .. } => {
                for rec in read_partition::<(K, X)>(tc, *shuffle_id, split)? {
                    let (k, x) = rec?;
                    map.insert_value(&agg, k, tag(x))?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct CoGroupedRdd<K: Key, V: Data, W: Data> {
    pub(crate) id: usize,
    pub(crate) num_partitions: usize,
    pub(crate) left: CoGroupInput<K, V>,
    pub(crate) right: CoGroupInput<K, W>,
    #[serde(skip)]
    pub(crate) partitioner: Option<Arc<Partitioner<K>>>,
    #[serde(skip)]
    pub(crate) _p: Ph<(V, W)>,
}

impl<K: Key, V: Data, W: Data> RddBase for CoGroupedRdd<K, V, W> {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "CoGroupedRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.num_partitions
    }
    fn dependencies(&self) -> Vec<Dependency> {
        self.left
            .dependency()
            .into_iter()
            .chain(self.right.dependency())
            .collect()
    }
    fn partitioner(&self) -> Option<Arc<super::PartitionerAny>> {
        self.partitioner
            .clone()
            .map(|p| p as Arc<super::PartitionerAny>)
    }
}

impl<K: Key, V: Data, W: Data> RddNode for CoGroupedRdd<K, V, W> {
    type Item = (K, (Vec<V>, Vec<W>));
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<Self::Item>> {
        let mut map = ExternalAggregator::<K, (Vec<V>, Vec<W>)>::new(tc.env.clone(), None);
        self.left.feed(split, tc, &mut map, Side::L)?;
        self.right.feed(split, tc, &mut map, Side::R)?;
        let agg = CoGroupAgg::<V, W>(Default::default());
        let errors = tc.errors();
        Ok(Box::new(map.into_iter(&agg, false, false)?.map_while(
            move |r| match r {
                Ok(((_, k), c)) => Some((k, c)),
                Err(e) => {
                    errors.fail(e);
                    None
                }
            },
        )))
    }
    shippable!();
}
