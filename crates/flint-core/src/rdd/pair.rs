//! Operations on RDDs of key/value pairs (Spark's PairRDDFunctions).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::shuffled::{Aggregator, Combine, ShuffleDependency, ShuffledRdd};
use super::{BoxIter, PartitionFn, Ph, Rdd};
use crate::env::TaskContext;
use crate::error::Result;
use crate::func::{Data, Func, Key, engine_fn};
use crate::shuffle::Partitioner;

// ---- aggregators --------------------------------------------------------------

/// No combining: each value passes through unchanged.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct NoAgg<V: Data>(#[serde(skip)] pub(crate) Ph<V>);
impl<V: Data> Aggregator<V, V> for NoAgg<V> {
    fn create(&self, v: V) -> V {
        v
    }
    fn merge_value(&self, _c: V, v: V) -> V {
        v
    }
    fn merge_combiners(&self, _c: V, o: V) -> V {
        o
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ReduceAgg<V: Data, F: Func<(V, V), Output = V>>(F, #[serde(skip)] Ph<V>);
impl<V: Data, F: Func<(V, V), Output = V>> Aggregator<V, V> for ReduceAgg<V, F> {
    fn create(&self, v: V) -> V {
        v
    }
    fn merge_value(&self, c: V, v: V) -> V {
        self.0.call((c, v))
    }
    fn merge_combiners(&self, c: V, o: V) -> V {
        self.0.call((c, o))
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct GroupAgg<V: Data>(#[serde(skip)] Ph<V>);
impl<V: Data> Aggregator<V, Vec<V>> for GroupAgg<V> {
    fn create(&self, v: V) -> Vec<V> {
        vec![v]
    }
    fn merge_value(&self, mut c: Vec<V>, v: V) -> Vec<V> {
        c.push(v);
        c
    }
    fn merge_combiners(&self, mut c: Vec<V>, mut o: Vec<V>) -> Vec<V> {
        c.append(&mut o);
        c
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct CombineAgg<
    V: Data,
    C: Data,
    F1: Func<(V,), Output = C>,
    F2: Func<(C, V), Output = C>,
    F3: Func<(C, C), Output = C>,
> {
    create: F1,
    merge_value: F2,
    merge_combiners: F3,
    #[serde(skip)]
    _p: Ph<(V, C)>,
}
impl<
    V: Data,
    C: Data,
    F1: Func<(V,), Output = C>,
    F2: Func<(C, V), Output = C>,
    F3: Func<(C, C), Output = C>,
> Aggregator<V, C> for CombineAgg<V, C, F1, F2, F3>
{
    fn create(&self, v: V) -> C {
        self.create.call((v,))
    }
    fn merge_value(&self, c: C, v: V) -> C {
        self.merge_value.call((c, v))
    }
    fn merge_combiners(&self, c: C, o: C) -> C {
        self.merge_combiners.call((c, o))
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct AggregateAgg<V: Data, U: Data, S: Func<(U, V), Output = U>, C: Func<(U, U), Output = U>>
{
    zero: U,
    seq: S,
    comb: C,
    #[serde(skip)]
    _p: Ph<V>,
}
impl<V: Data, U: Data, S: Func<(U, V), Output = U>, C: Func<(U, U), Output = U>> Aggregator<V, U>
    for AggregateAgg<V, U, S, C>
{
    fn create(&self, v: V) -> U {
        self.seq.call((self.zero.clone(), v))
    }
    fn merge_value(&self, c: U, v: V) -> U {
        self.seq.call((c, v))
    }
    fn merge_combiners(&self, c: U, o: U) -> U {
        self.comb.call((c, o))
    }
}

/// A value tagged with the side of a cogroup it came from.
#[derive(Clone, Serialize, Deserialize)]
pub enum Side<V, W> {
    L(V),
    R(W),
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct CoGroupAgg<V: Data, W: Data>(#[serde(skip)] pub(crate) Ph<(V, W)>);
impl<V: Data, W: Data> Aggregator<Side<V, W>, (Vec<V>, Vec<W>)> for CoGroupAgg<V, W> {
    fn create(&self, s: Side<V, W>) -> (Vec<V>, Vec<W>) {
        self.merge_value((Vec::new(), Vec::new()), s)
    }
    fn merge_value(&self, mut c: (Vec<V>, Vec<W>), s: Side<V, W>) -> (Vec<V>, Vec<W>) {
        match s {
            Side::L(v) => c.0.push(v),
            Side::R(w) => c.1.push(w),
        }
        c
    }
    fn merge_combiners(
        &self,
        mut c: (Vec<V>, Vec<W>),
        mut o: (Vec<V>, Vec<W>),
    ) -> (Vec<V>, Vec<W>) {
        c.0.append(&mut o.0);
        c.1.append(&mut o.1);
        c
    }
}

// ---- engine functions -----------------------------------------------------------

macro_rules! pair_fn {
    ($name:ident [$($g:ident),*] |$arg:ident: $at:ty| -> $out:ty $body:block) => {
        #[derive(Serialize, Deserialize)]
        #[serde(bound = "")]
        pub struct $name<$($g: Data),*>(#[serde(skip)] pub(crate) Ph<($($g,)*)>);
        impl<$($g: Data),*> Clone for $name<$($g),*> {
            fn clone(&self) -> Self {
                $name(Default::default())
            }
        }
        impl<$($g: Data),*> $name<$($g),*> {
            fn invoke(&self, ($arg,): ($at,)) -> $out $body
        }
        engine_fn!(impl[$($g: Data),*] $name<$($g),*>, ($at,) => $out);
    };
}

pair_fn!(FirstOf[K, V] |kv: (K, V)| -> K { kv.0 });
pair_fn!(SecondOf[K, V] |kv: (K, V)| -> V { kv.1 });
pair_fn!(OneCount[K, V] |kv: (K, V)| -> (K, u64) { (kv.0, 1) });
pair_fn!(BothSides[T] |g: (T, (Vec<()>, Vec<()>))| -> Option<T> {
    let (k, (a, b)) = g;
    (!a.is_empty() && !b.is_empty()).then_some(k)
});
pair_fn!(LeftOnly[T] |g: (T, (Vec<()>, Vec<()>))| -> Vec<T> {
    let (k, (a, b)) = g;
    if b.is_empty() { vec![k; a.len()] } else { Vec::new() }
});
pair_fn!(JoinFn[K, V, W] |g: (K, (Vec<V>, Vec<W>))| -> CrossProduct<K, V, W> {
    let (k, (vs, ws)) = g;
    CrossProduct::new(k, vs, ws)
});
pair_fn!(LeftJoinFn[K, V, W] |g: (K, (Vec<V>, Vec<W>))| -> CrossProduct<K, V, Option<W>> {
    let (k, (vs, ws)) = g;
    CrossProduct::new(k, vs, pad(ws))
});
pair_fn!(RightJoinFn[K, V, W] |g: (K, (Vec<V>, Vec<W>))| -> CrossProduct<K, Option<V>, W> {
    let (k, (vs, ws)) = g;
    CrossProduct::new(k, pad(vs), ws)
});
pair_fn!(FullJoinFn[K, V, W] |g: (K, (Vec<V>, Vec<W>))| -> CrossProduct<K, Option<V>, Option<W>> {
    let (k, (vs, ws)) = g;
    CrossProduct::new(k, pad(vs), pad(ws))
});

/// One side of an outer join: its values, or a single `None` when it has none.
fn pad<T>(v: Vec<T>) -> Vec<Option<T>> {
    if v.is_empty() {
        vec![None]
    } else {
        v.into_iter().map(Some).collect()
    }
}

/// The pairs of one key's values from both sides of a join, made one at a time
/// as they are consumed (as Spark's join does): a hot key with 20,000 values on
/// each side yields 400 million pairs without ever holding them.
pub struct CrossProduct<K, A, B> {
    key: K,
    left: Vec<A>,
    right: Vec<B>,
    i: usize,
    j: usize,
}

impl<K, A, B> CrossProduct<K, A, B> {
    fn new(key: K, left: Vec<A>, right: Vec<B>) -> Self {
        CrossProduct {
            key,
            left,
            right,
            i: 0,
            j: 0,
        }
    }
}

impl<K: Clone, A: Clone, B: Clone> Iterator for CrossProduct<K, A, B> {
    type Item = (K, (A, B));
    fn next(&mut self) -> Option<Self::Item> {
        if self.j == self.right.len() {
            self.j = 0;
            self.i += 1;
        }
        let a = self.left.get(self.i)?;
        let b = self.right.get(self.j)?;
        self.j += 1;
        Some((self.key.clone(), (a.clone(), b.clone())))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = if self.right.is_empty() || self.i >= self.left.len() {
            0
        } else {
            (self.left.len() - self.i - 1)
                .saturating_mul(self.right.len())
                .saturating_add(self.right.len() - self.j)
        };
        (n, Some(n))
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct KeepFirst<T: Data>(#[serde(skip)] pub(crate) Ph<T>);
impl<T: Data> KeepFirst<T> {
    fn invoke(&self, (a, _): (T, T)) -> T {
        a
    }
}
engine_fn!(impl[T: Data] KeepFirst<T>, (T, T) => T);

#[derive(Clone, Serialize, Deserialize)]
pub struct SumU64;
impl SumU64 {
    fn invoke(&self, (a, b): (u64, u64)) -> u64 {
        a + b
    }
}
engine_fn!(impl[] SumU64, (u64, u64) => u64);

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct MapValuesFn<K: Data, V: Data, U: Data, F: Func<(V,), Output = U>>(
    F,
    #[serde(skip)] Ph<(K, V, U)>,
);
impl<K: Data, V: Data, U: Data, F: Func<(V,), Output = U>> MapValuesFn<K, V, U, F> {
    fn invoke(&self, ((k, v),): ((K, V),)) -> (K, U) {
        (k, self.0.call((v,)))
    }
}
engine_fn!(impl[K: Data, V: Data, U: Data, F: Func<(V,), Output = U>] MapValuesFn<K, V, U, F>, ((K, V),) => (K, U));

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct FlatMapValuesFn<
    K: Data,
    V: Data,
    U: Data,
    I: IntoIterator<Item = U> + 'static,
    F: Func<(V,), Output = I>,
>(F, #[serde(skip)] Ph<(K, V, U, I)>);
impl<K: Data, V: Data, U: Data, I: IntoIterator<Item = U> + 'static, F: Func<(V,), Output = I>>
    FlatMapValuesFn<K, V, U, I, F>
{
    fn invoke(&self, ((k, v),): ((K, V),)) -> Vec<(K, U)> {
        self.0
            .call((v,))
            .into_iter()
            .map(|u| (k.clone(), u))
            .collect()
    }
}
impl<K: Data, V: Data, U: Data, I: IntoIterator<Item = U> + 'static, F: Func<(V,), Output = I>>
    Clone for FlatMapValuesFn<K, V, U, I, F>
{
    fn clone(&self) -> Self {
        FlatMapValuesFn(self.0.clone(), Default::default())
    }
}
engine_fn!(impl[K: Data, V: Data, U: Data, I: IntoIterator<Item = U> + 'static, F: Func<(V,), Output = I>] FlatMapValuesFn<K, V, U, I, F>, ((K, V),) => Vec<(K, U)>);

/// Samples keys of each partition for a range partitioner: returns the
/// partition's record count and a reservoir sample of its keys.
#[derive(Serialize, Deserialize)]
pub struct SampleKeysFn {
    per_partition: usize,
    seed: u64,
}
impl<K: Key, V: Data> PartitionFn<(K, V)> for SampleKeysFn {
    type Out = (u64, Vec<K>);
    fn apply(&self, it: BoxIter<(K, V)>, tc: &TaskContext) -> Result<(u64, Vec<K>)> {
        let mut rng = crate::util::SplitMix64::new(self.seed ^ tc.partition as u64);
        let mut sample = Vec::with_capacity(self.per_partition);
        let mut n = 0u64;
        for (k, _) in it {
            if sample.len() < self.per_partition {
                sample.push(k);
            } else {
                // Uniform in 0..=n by multiply-shift, not a 64-bit division
                // per record (Lemire's range reduction).
                let j = ((u128::from(rng.next_u64()) * u128::from(n + 1)) >> 64) as u64;
                if (j as usize) < self.per_partition {
                    sample[j as usize] = k;
                }
            }
            n += 1;
        }
        Ok((n, sample))
    }
}

/// Range bounds from weighted samples (Spark's RangePartitioner.determineBounds).
fn determine_bounds<K: Key>(samples: Vec<(u64, Vec<K>)>, parts: usize) -> Vec<K> {
    let mut weighted: Vec<(K, f64)> = Vec::new();
    for (n, s) in samples {
        if s.is_empty() {
            continue;
        }
        let w = n as f64 / s.len() as f64;
        weighted.extend(s.into_iter().map(|k| (k, w)));
    }
    weighted.sort_by(|a, b| a.0.cmp(&b.0));
    let total: f64 = weighted.iter().map(|x| x.1).sum();
    let step = total / parts as f64;
    let mut bounds: Vec<K> = Vec::new();
    let mut cum = 0.0;
    let mut target = step;
    for (k, w) in weighted {
        cum += w;
        if cum >= target && bounds.len() + 1 < parts && bounds.last() != Some(&k) {
            bounds.push(k);
            target += step;
        }
    }
    bounds
}

impl<K: Data, V: Data> Rdd<(K, V)> {
    pub fn keys(&self) -> Rdd<K> {
        self.map(FirstOf(Default::default()))
    }

    pub fn values(&self) -> Rdd<V> {
        self.map(SecondOf(Default::default()))
    }

    /// Keeps the keys, so the result keeps this RDD's partitioner.
    pub fn map_values<U: Data, F: Func<(V,), Output = U>>(&self, f: F) -> Rdd<(K, U)> {
        self.map_with(MapValuesFn(f, Default::default()), true)
    }

    pub fn flat_map_values<
        U: Data,
        I: IntoIterator<Item = U> + 'static,
        F: Func<(V,), Output = I>,
    >(
        &self,
        f: F,
    ) -> Rdd<(K, U)> {
        self.flat_map_with(FlatMapValuesFn(f, Default::default()), true)
    }
}

impl<K: Key, V: Data> Rdd<(K, V)> {
    /// How this RDD's records are partitioned by key, if known: the result of a
    /// shuffle, and what `map_values`, `filter`, joins and cogroups keep of it.
    pub fn partitioner(&self) -> Option<Partitioner<K>> {
        self.partitioner_any()
            .and_then(|p| p.downcast::<Partitioner<K>>().ok())
            .map(|p| (*p).clone())
    }

    /// Spark's defaultPartitioner for a cogroup of `self` and an RDD of
    /// `other_parts` partitions partitioned by `other`: the existing partitioner
    /// with the most partitions, unless it has an order of magnitude fewer
    /// partitions than the largest input (and fewer than the default count);
    /// else hash partitioning into `flint.default.parallelism` partitions, or
    /// as many as the largest input.
    fn default_partitioner(
        &self,
        other: Option<Partitioner<K>>,
        other_parts: usize,
    ) -> Partitioner<K> {
        let max_parts = self.num_partitions().max(other_parts).max(1);
        let default_n = self
            .sc
            .as_ref()
            .and_then(|sc| sc.conf().get("flint.default.parallelism"))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(max_parts)
            .max(1);
        let best = [self.partitioner(), other]
            .into_iter()
            .flatten()
            .filter(|p| p.num_partitions() > 0)
            .max_by_key(|p| p.num_partitions());
        match best {
            Some(p) if p.num_partitions() * 10 > max_parts || default_n <= p.num_partitions() => p,
            _ => Partitioner::Hash(default_n),
        }
    }

    /// The general shuffle: partition by `partitioner`, combine with `agg`.
    pub(crate) fn shuffle<C: Data, A: Aggregator<V, C>>(
        &self,
        partitioner: Partitioner<K>,
        agg: A,
        combine: Combine,
        ordering: Option<bool>,
    ) -> Rdd<(K, C)> {
        let sc = self.sc.as_ref();
        // Already partitioned so: every key's records share a partition, and
        // combining them in place is the whole aggregation (as Spark does).
        if combine != Combine::None
            && ordering.is_none()
            && self.partitioner().as_ref() == Some(&partitioner)
        {
            let id = sc.map(|s| s.new_rdd_id()).unwrap_or(usize::MAX);
            return Rdd::with_node(
                sc,
                Arc::new(super::shuffled::CombinedRdd {
                    id,
                    parent: self.clone(),
                    aggregator: agg,
                    _p: Default::default(),
                }),
            );
        }
        let shuffle_id = sc.map(|s| s.new_shuffle_id()).unwrap_or(usize::MAX);
        let n = partitioner.num_partitions();
        // A sort without aggregation keeps values encoded on the reduce side.
        let sized_values = combine == Combine::None && ordering.is_some();
        let dep = Arc::new(ShuffleDependency {
            shuffle_id,
            parent: self.clone(),
            partitioner,
            aggregator: agg.clone(),
            combine,
            sized_values,
            _cleanup: sc.map(|s| {
                s.cleaner()
                    .guard(crate::cleaner::CleanupTask::Shuffle(shuffle_id))
            }),
            _p: Default::default(),
        });
        let id = sc.map(|s| s.new_rdd_id()).unwrap_or(usize::MAX);
        Rdd::with_node(
            sc,
            Arc::new(ShuffledRdd {
                id,
                shuffle_id,
                num_partitions: n,
                aggregator: agg,
                combine,
                ordering,
                sized_values,
                partitioner: Some(Arc::new(dep.partitioner.clone())),
                dep: Some(dep),
                _p: Default::default(),
            }),
        )
    }

    pub fn combine_by_key<
        C: Data,
        F1: Func<(V,), Output = C>,
        F2: Func<(C, V), Output = C>,
        F3: Func<(C, C), Output = C>,
    >(
        &self,
        create: F1,
        merge_value: F2,
        merge_combiners: F3,
        num_partitions: usize,
    ) -> Rdd<(K, C)> {
        let agg = CombineAgg {
            create,
            merge_value,
            merge_combiners,
            _p: Default::default(),
        };
        self.shuffle(
            Partitioner::Hash(num_partitions.max(1)),
            agg,
            Combine::MapAndReduceSide,
            None,
        )
    }

    /// Merges the values of each key with `f`, into this RDD's own
    /// partitioning when it has one (then without a shuffle), else into
    /// `flint.default.parallelism` or as many partitions as it has.
    pub fn reduce_by_key<F: Func<(V, V), Output = V>>(&self, f: F) -> Rdd<(K, V)> {
        self.shuffle(
            self.default_partitioner(None, 0),
            ReduceAgg(f, Default::default()),
            Combine::MapAndReduceSide,
            None,
        )
    }

    pub fn reduce_by_key_with<F: Func<(V, V), Output = V>>(
        &self,
        num_partitions: usize,
        f: F,
    ) -> Rdd<(K, V)> {
        self.shuffle(
            Partitioner::Hash(num_partitions.max(1)),
            ReduceAgg(f, Default::default()),
            Combine::MapAndReduceSide,
            None,
        )
    }

    pub fn fold_by_key<F: Func<(V, V), Output = V>>(&self, zero: V, f: F) -> Rdd<(K, V)> {
        self.aggregate_by_key(zero, f.clone(), f)
    }

    pub fn aggregate_by_key<U: Data, S: Func<(U, V), Output = U>, C: Func<(U, U), Output = U>>(
        &self,
        zero: U,
        seq: S,
        comb: C,
    ) -> Rdd<(K, U)> {
        let agg = AggregateAgg {
            zero,
            seq,
            comb,
            _p: Default::default(),
        };
        self.shuffle(
            self.default_partitioner(None, 0),
            agg,
            Combine::MapAndReduceSide,
            None,
        )
    }

    /// The values of each key, partitioned as `reduce_by_key` partitions.
    pub fn group_by_key(&self) -> Rdd<(K, Vec<V>)> {
        self.shuffle(
            self.default_partitioner(None, 0),
            GroupAgg(Default::default()),
            Combine::ReduceSide,
            None,
        )
    }

    pub fn group_by_key_with(&self, num_partitions: usize) -> Rdd<(K, Vec<V>)> {
        self.shuffle(
            Partitioner::Hash(num_partitions.max(1)),
            GroupAgg(Default::default()),
            Combine::ReduceSide,
            None,
        )
    }

    /// Hash-partitions the pairs into `num_partitions` without combining
    /// (this RDD itself when it is partitioned so already, as in Spark).
    pub fn partition_by(&self, num_partitions: usize) -> Rdd<(K, V)> {
        if self.partitioner() == Some(Partitioner::Hash(num_partitions.max(1))) {
            return self.clone();
        }
        self.shuffle(
            Partitioner::Hash(num_partitions.max(1)),
            NoAgg(Default::default()),
            Combine::None,
            None,
        )
    }

    /// Sorts by key into range partitions, sampling the keys first (this runs a job).
    pub fn sort_by_key(&self, ascending: bool, num_partitions: usize) -> Result<Rdd<(K, V)>> {
        let parts = num_partitions.max(1);
        let bounds = if parts > 1 && self.num_partitions() > 0 {
            let per = (20 * parts * 3)
                .div_ceil(self.num_partitions())
                .clamp(20, 100_000);
            let samples = self.run_job(
                SampleKeysFn {
                    per_partition: per,
                    seed: 0x5eed,
                },
                None,
            )?;
            determine_bounds(samples, parts)
        } else {
            Vec::new()
        };
        Ok(self.shuffle(
            Partitioner::Range { bounds, ascending },
            NoAgg(Default::default()),
            Combine::None,
            Some(ascending),
        ))
    }

    /// Groups both RDDs' values by key. Partitioned by the default partitioner
    /// (see `default_partitioner`); a side already partitioned that way is not
    /// shuffled again.
    pub fn cogroup<W: Data>(&self, other: &Rdd<(K, W)>) -> Rdd<(K, (Vec<V>, Vec<W>))> {
        let p = self.default_partitioner(other.partitioner(), other.num_partitions());
        self.cogroup_with(other, p)
    }

    /// `cogroup` into the partitions of `p`.
    pub fn cogroup_with<W: Data>(
        &self,
        other: &Rdd<(K, W)>,
        p: Partitioner<K>,
    ) -> Rdd<(K, (Vec<V>, Vec<W>))> {
        let node = super::CoGroupedRdd {
            id: self.new_id(),
            num_partitions: p.num_partitions(),
            left: super::CoGroupInput::new(self, &p),
            right: super::CoGroupInput::new(other, &p),
            partitioner: Some(Arc::new(p)),
            _p: Default::default(),
        };
        Rdd::with_node(self.sc.as_ref(), Arc::new(node))
    }

    // Joins keep the key of every pair, so they keep the cogroup's partitioner.

    pub fn join<W: Data>(&self, other: &Rdd<(K, W)>) -> Rdd<(K, (V, W))> {
        self.cogroup(other)
            .flat_map_with(JoinFn(Default::default()), true)
    }

    pub fn left_outer_join<W: Data>(&self, other: &Rdd<(K, W)>) -> Rdd<(K, (V, Option<W>))> {
        self.cogroup(other)
            .flat_map_with(LeftJoinFn(Default::default()), true)
    }

    pub fn right_outer_join<W: Data>(&self, other: &Rdd<(K, W)>) -> Rdd<(K, (Option<V>, W))> {
        self.cogroup(other)
            .flat_map_with(RightJoinFn(Default::default()), true)
    }

    pub fn full_outer_join<W: Data>(
        &self,
        other: &Rdd<(K, W)>,
    ) -> Rdd<(K, (Option<V>, Option<W>))> {
        self.cogroup(other)
            .flat_map_with(FullJoinFn(Default::default()), true)
    }

    /// `join` into the partitions of `p` (Spark's `join(other, partitioner)`;
    /// `Partitioner::Hash(n)` for `join(other, numPartitions)`).
    pub fn join_with<W: Data>(&self, other: &Rdd<(K, W)>, p: Partitioner<K>) -> Rdd<(K, (V, W))> {
        self.cogroup_with(other, p)
            .flat_map_with(JoinFn(Default::default()), true)
    }

    /// `left_outer_join` into the partitions of `p`.
    pub fn left_outer_join_with<W: Data>(
        &self,
        other: &Rdd<(K, W)>,
        p: Partitioner<K>,
    ) -> Rdd<(K, (V, Option<W>))> {
        self.cogroup_with(other, p)
            .flat_map_with(LeftJoinFn(Default::default()), true)
    }

    /// `right_outer_join` into the partitions of `p`.
    pub fn right_outer_join_with<W: Data>(
        &self,
        other: &Rdd<(K, W)>,
        p: Partitioner<K>,
    ) -> Rdd<(K, (Option<V>, W))> {
        self.cogroup_with(other, p)
            .flat_map_with(RightJoinFn(Default::default()), true)
    }

    /// `full_outer_join` into the partitions of `p`.
    pub fn full_outer_join_with<W: Data>(
        &self,
        other: &Rdd<(K, W)>,
        p: Partitioner<K>,
    ) -> Rdd<(K, (Option<V>, Option<W>))> {
        self.cogroup_with(other, p)
            .flat_map_with(FullJoinFn(Default::default()), true)
    }

    pub fn count_by_key(&self) -> Result<HashMap<K, u64>> {
        Ok(self
            .map(OneCount(Default::default()))
            .reduce_by_key(SumU64)
            .collect()?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_products_are_made_as_consumed() {
        // 400 million pairs: materialized, about 10 GB; here, only what is taken.
        let vs: Vec<u32> = (0..20_000).collect();
        let ws: Vec<u32> = (0..20_000).collect();
        let mut it = CrossProduct::new(7u8, vs, ws);
        assert_eq!(it.size_hint(), (400_000_000, Some(400_000_000)));
        let first: Vec<_> = it.by_ref().take(3).collect();
        assert_eq!(first, vec![(7, (0, 0)), (7, (0, 1)), (7, (0, 2))]);
        assert_eq!(it.size_hint().0, 400_000_000 - 3);
        let small: Vec<_> = CrossProduct::new('k', vec![1, 2], vec!['a', 'b', 'c']).collect();
        assert_eq!(small.len(), 6);
        assert_eq!(small[3], ('k', (2, 'a')));
        assert_eq!(CrossProduct::new((), vec![1], Vec::<u8>::new()).count(), 0);
        assert_eq!(CrossProduct::new((), Vec::<u8>::new(), vec![1]).count(), 0);
        assert_eq!(
            CrossProduct::new((), vec![1, 2], pad(Vec::<u8>::new())).collect::<Vec<_>>(),
            vec![((), (1, None)), ((), (2, None))]
        );
    }
}
