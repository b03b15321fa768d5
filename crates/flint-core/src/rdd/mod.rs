//! RDDs: the lazy, typed, partitioned datasets users build, and the type-erased
//! view the DAG scheduler walks.
//!
//! An [`Rdd<T>`] is a handle on a node (`Arc<dyn RddNode<Item = T>>`). Nodes are
//! plain generic serde structs (`MapRdd<T, U, F>` holds its parent and its closure),
//! so a task's whole lineage up to the nearest shuffle ships as data; each nested
//! node crosses as a code offset plus payload (see `ship`). Shuffled RDDs ship only
//! their shuffle id: the map side lineage stays on the driver, as in Spark.

mod actions;
mod checkpoint;
mod cogrouped;
mod more;
mod narrow;
mod numeric;
mod pair;
mod shuffled;
pub(crate) mod sources;

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use actions::{CollectFn, CountFn, PartitionFn};
pub use cogrouped::{CoGroupInput, CoGroupedRdd};
pub use more::PipedRdd;
pub use narrow::*;
pub use numeric::{Numeric, StatCounter};
pub use shuffled::{Aggregator, Combine, ShuffleDependency, ShuffledRdd};
pub use sources::*;

use crate::context::FlintContext;
use crate::env::TaskContext;
use crate::error::{FlintError, Result};
use crate::func::Data;
use crate::ship::{self, Shipped};
use crate::storage::{BlockId, StorageLevel};

pub type BoxIter<T> = Box<dyn Iterator<Item = T>>;

/// Where pushed records go (see [`RddNode::push`]): a batch of at most
/// [`BATCH`] records, which the sink takes (leaving the vector empty for reuse);
/// an error stops the push.
pub type Sink<'a, T> = &'a mut dyn FnMut(&mut Vec<T>) -> Result<()>;

/// Records per pushed batch: big enough that the indirect call per batch is
/// noise, small enough that a batch of modest records stays in L1/L2.
pub const BATCH: usize = 64;

/// Gathers records into batches of `BATCH` for a sink.
pub(crate) struct Batcher<T>(Vec<T>);

impl<T> Batcher<T> {
    pub(crate) fn new() -> Self {
        Batcher(Vec::with_capacity(BATCH))
    }

    /// Adds a record, handing the batch to `sink` when it is full.
    #[inline]
    pub(crate) fn push(&mut self, x: T, sink: Sink<'_, T>) -> Result<()> {
        self.0.push(x);
        if self.0.len() == BATCH {
            sink(&mut self.0)?;
            self.0.clear();
        }
        Ok(())
    }

    /// Hands the last, partial batch to `sink`.
    pub(crate) fn finish(mut self, sink: Sink<'_, T>) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        sink(&mut self.0)
    }
}

/// Pushes an iterator's records into `sink` in batches.
pub(crate) fn push_iter<T>(it: impl Iterator<Item = T>, sink: Sink<'_, T>) -> Result<()> {
    let mut batch = Batcher::new();
    for x in it {
        batch.push(x, sink)?;
    }
    batch.finish(sink)
}

/// How an RDD depends on its parents.
#[derive(Clone)]
pub enum Dependency {
    /// Each child partition reads a bounded set of parent partitions in the same task.
    Narrow(Arc<dyn RddBase>),
    /// The child reads the output of a shuffle of the parent: a stage boundary.
    Shuffle(Arc<dyn ShuffleDepBase>),
}

/// The type-erased view of an RDD that the DAG scheduler works with. It never
/// sees records or user closures.
pub trait RddBase: Send + Sync + 'static {
    fn id(&self) -> usize;
    fn name(&self) -> String;
    fn num_partitions(&self) -> usize;
    /// Parent dependencies (driver side only; executors never ask).
    fn dependencies(&self) -> Vec<Dependency>;
    /// For partition `split`, the `(narrow dependency index, parent partition)`
    /// pairs it reads. The default is one-to-one with every narrow parent.
    fn narrow_parents(&self, split: usize) -> Vec<(usize, usize)> {
        let n = self
            .dependencies()
            .iter()
            .filter(|d| matches!(d, Dependency::Narrow(_)))
            .count();
        (0..n).map(|i| (i, split)).collect()
    }
    /// Hosts where this partition's input lives (files, for instance).
    fn preferred_hosts(&self, _split: usize) -> Vec<String> {
        Vec::new()
    }
    /// Blocks only the driver holds that this partition reads (a
    /// parallelized slice): a cluster backend ships them with the task, as
    /// Spark ships a ParallelCollectionPartition inside its task.
    fn driver_blocks(&self, _split: usize) -> Vec<crate::storage::BlockId> {
        Vec::new()
    }
    /// How the records are partitioned by key, if known (Spark's
    /// `RDD.partitioner`): a `Partitioner<K>` for pair RDDs, type-erased here
    /// and downcast by typed code. Known on the driver only.
    fn partitioner(&self) -> Option<Arc<PartitionerAny>> {
        None
    }
}

/// A `Partitioner<K>` behind `RddBase::partitioner`.
pub type PartitionerAny = dyn Any + Send + Sync;

/// A shuffle dependency as the DAG scheduler sees it.
pub trait ShuffleDepBase: Send + Sync + 'static {
    fn shuffle_id(&self) -> usize;
    fn rdd(&self) -> Arc<dyn RddBase>;
    fn num_reduce_partitions(&self) -> usize;
    /// The map stage's task code and data, serialized once per stage.
    fn map_task_binary(&self) -> Result<Arc<Shipped>>;
}

/// A typed RDD node: computes one partition's records on an executor.
pub trait RddNode: RddBase {
    type Item: Data;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<Self::Item>>;
    /// Pushes one partition's records into `sink` in batches, stopping at the
    /// first error it returns. Consumers that read a whole partition (the
    /// shuffle writer) use this: a chain of boxed iterators costs an indirect
    /// call per record per node and moves every record through each layer's
    /// `Option`, where a chain of pushes costs an indirect call per batch and
    /// runs each node's closure in a tight, inlined loop. Nodes override it
    /// when they can do better than draining `compute`.
    fn push(&self, split: usize, tc: &TaskContext, sink: Sink<'_, Self::Item>) -> Result<()> {
        push_iter(self.compute(split, tc)?, sink)
    }
    /// Serializes the node; implemented by `shippable!()`.
    fn ship(&self) -> Result<(i64, Vec<u8>)>;
}

pub(crate) fn deser_node<R>(bytes: &[u8]) -> std::result::Result<Box<dyn Any + Send>, String>
where
    R: RddNode + DeserializeOwned,
{
    let node: R = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    let arc: Arc<dyn RddNode<Item = R::Item>> = Arc::new(node);
    Ok(Box::new(arc))
}

/// Implements `RddNode::ship` for a serde node type.
macro_rules! shippable {
    () => {
        fn ship(&self) -> $crate::error::Result<(i64, Vec<u8>)> {
            Ok((
                $crate::ship::offset_of($crate::rdd::deser_node::<Self>),
                $crate::codec::encode("RDD", self)?,
            ))
        }
    };
}
pub(crate) use shippable;

/// The node behind an RDD, shared by every clone of its handle so that a
/// checkpoint can swap the lineage for its files everywhere at once (and the
/// old lineage is freed).
pub(crate) type NodeCell<T> = Arc<parking_lot::RwLock<Arc<dyn RddNode<Item = T>>>>;

fn cell<T: Data>(node: Arc<dyn RddNode<Item = T>>) -> NodeCell<T> {
    Arc::new(parking_lot::RwLock::new(node))
}

/// A resilient distributed dataset of `T`.
pub struct Rdd<T: Data> {
    pub(crate) node: NodeCell<T>,
    /// Present on the driver; absent in a deserialized copy on an executor.
    pub(crate) sc: Option<FlintContext>,
    /// Shared by every clone of this handle, so `persist` on one handle applies to
    /// the RDD wherever it is used, as in Spark.
    pub(crate) meta: Arc<RddMeta>,
}

#[derive(Default)]
pub(crate) struct RddMeta {
    storage: AtomicU8,
    /// On the driver: removes the RDD's blocks when the last handle (or child
    /// RDD holding it) is dropped. Executor copies have none.
    _cleanup: Option<crate::cleaner::CleanupOnDrop>,
    /// Once checkpointed: where the files are.
    checkpoint: std::sync::OnceLock<std::path::PathBuf>,
    /// Held while checkpointing, so two calls do not write one directory.
    checkpointing: parking_lot::Mutex<()>,
}

impl RddMeta {
    fn with_level(level: StorageLevel) -> Arc<Self> {
        Arc::new(RddMeta {
            storage: AtomicU8::new(level.to_u8()),
            ..RddMeta::default()
        })
    }

    fn checkpoint_dir(&self) -> Option<std::path::PathBuf> {
        self.checkpoint.get().cloned()
    }

    /// The metadata of a new driver-side RDD `id`.
    pub(crate) fn on_driver(sc: Option<&FlintContext>, id: usize) -> Arc<Self> {
        Arc::new(RddMeta {
            storage: AtomicU8::new(StorageLevel::None.to_u8()),
            _cleanup: sc.map(|sc| sc.cleaner().guard(crate::cleaner::CleanupTask::Rdd(id))),
            ..RddMeta::default()
        })
    }
}

impl<T: Data> Clone for Rdd<T> {
    fn clone(&self) -> Self {
        Rdd {
            node: self.node.clone(),
            sc: self.sc.clone(),
            meta: self.meta.clone(),
        }
    }
}

impl<T: Data> std::fmt::Debug for Rdd<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let node = self.current();
        write!(
            f,
            "{}[{}] ({} partitions)",
            node.name(),
            node.id(),
            node.num_partitions()
        )
    }
}

impl<T: Data> Serialize for Rdd<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let (offset, bytes) = self
            .current()
            .ship()
            .map_err(|e| crate::codec::refuse(e.to_string()))?;
        (
            offset,
            serde_bytes::Bytes::new(&bytes),
            self.storage_level(),
        )
            .serialize(s)
    }
}

impl<'de, T: Data> Deserialize<'de> for Rdd<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (offset, bytes, level): (i64, serde_bytes::ByteBuf, StorageLevel) =
            Deserialize::deserialize(d)?;
        let node: Arc<dyn RddNode<Item = T>> =
            ship::deserialize_dyn(offset, &bytes, std::any::type_name::<T>())
                .map_err(D::Error::custom)?;
        Ok(Rdd {
            node: cell(node),
            sc: None,
            meta: RddMeta::with_level(level),
        })
    }
}

impl<T: Data> Rdd<T> {
    pub(crate) fn from_node(sc: &FlintContext, node: impl RddNode<Item = T>) -> Self {
        let meta = RddMeta::on_driver(Some(sc), node.id());
        Rdd {
            node: cell(Arc::new(node)),
            sc: Some(sc.clone()),
            meta,
        }
    }

    /// A new driver-side handle on `node`.
    pub(crate) fn with_node(sc: Option<&FlintContext>, node: Arc<dyn RddNode<Item = T>>) -> Self {
        Rdd {
            meta: RddMeta::on_driver(sc, node.id()),
            node: cell(node),
            sc: sc.cloned(),
        }
    }

    pub(crate) fn context(&self) -> Result<&FlintContext> {
        self.sc.as_ref().ok_or(FlintError::NotOnDriver)
    }

    /// The context this RDD was created by.
    ///
    /// # Panics
    /// On an executor (inside a task), where RDDs have no context; use only on the driver.
    pub fn sc(&self) -> &FlintContext {
        self.sc
            .as_ref()
            .expect("RDD operations can only be invoked by the driver")
    }

    pub fn id(&self) -> usize {
        self.current().id()
    }

    pub fn num_partitions(&self) -> usize {
        self.current().num_partitions()
    }

    /// The node jobs run: the RDD's own, or once checkpointed the reader of
    /// its files (the lineage before it is then gone).
    pub(crate) fn current(&self) -> Arc<dyn RddNode<Item = T>> {
        self.node.read().clone()
    }

    /// How the records are partitioned, type-erased (see `RddBase::partitioner`).
    pub(crate) fn partitioner_any(&self) -> Option<Arc<PartitionerAny>> {
        self.current().partitioner()
    }

    pub(crate) fn base(&self) -> Arc<dyn RddBase> {
        self.current()
    }

    /// Records of one partition (executor side): from the block store when the
    /// RDD is persisted and the block exists, else computed (and stored).
    pub(crate) fn iterator(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<T>> {
        let level = self.storage_level();
        if level == StorageLevel::None {
            return self.current().compute(split, tc);
        }
        let id = BlockId::Rdd {
            rdd: self.id(),
            split,
        };
        // On a cluster, another executor may cache it: read it from there
        // rather than compute it again (Spark's getRemoteValues).
        if !tc.env.blocks.contains(id)
            && let Some(client) = tc.env.shuffle_client.get()
            && let Some(bytes) = client.cached_block(self.id(), split)
        {
            let len = bytes.len() as u64;
            let mut r = crate::shuffle::FrameReader::<_, T>::new(
                std::io::Cursor::new(bytes),
                tc.env.blocks.compression(),
                len,
            );
            let mut values = Vec::new();
            let complete = loop {
                match r.next_record() {
                    Ok(Some(x)) => values.push(x),
                    Ok(None) => break true,
                    Err(e) => {
                        tracing::warn!("a fetched copy of {id:?} is damaged ({e}); computing it");
                        break false;
                    }
                }
            };
            if complete {
                return Ok(Box::new(values.into_iter()));
            }
        }
        // A partial partition (an iterator recorded an error) is never cached.
        let records = tc.env.blocks.get_or_compute(
            id,
            level,
            // The kill flag stops a partition being stored, too.
            || {
                Ok(actions::interruptible(
                    self.current().compute(split, tc)?,
                    tc,
                ))
            },
            || !tc.has_error(),
        )?;
        let errors = tc.errors();
        Ok(Box::new(records.map_while(move |r| match r {
            Ok(v) => Some(v),
            Err(e) => {
                errors.fail(e);
                None
            }
        })))
    }

    /// As `iterator`, pushing records into `sink` (see [`RddNode::push`]).
    pub(crate) fn push(&self, split: usize, tc: &TaskContext, sink: Sink<'_, T>) -> Result<()> {
        if self.storage_level() == StorageLevel::None {
            return self.current().push(split, tc, sink);
        }
        push_iter(self.iterator(split, tc)?, sink)
    }

    /// Keeps computed partitions at `level` for reuse by later jobs; a lost block
    /// is recomputed from lineage. An RDD keeps the first level it is given
    /// until `unpersist` (Spark refuses to change it; here the change is
    /// refused with a warning).
    pub fn persist(&self, level: StorageLevel) -> Rdd<T> {
        let none = StorageLevel::None.to_u8();
        if let Err(old) = self.meta.storage.compare_exchange(
            none,
            level.to_u8(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) && old != level.to_u8()
        {
            tracing::warn!(
                "Cannot change storage level of an RDD after it was already assigned a level: RDD {} stays {:?}, not {level:?} (unpersist it first)",
                self.id(),
                StorageLevel::from_u8(old)
            );
        }
        self.clone()
    }

    /// `persist(StorageLevel::MEMORY_ONLY)`.
    pub fn cache(&self) -> Rdd<T> {
        self.persist(StorageLevel::MemoryOnly)
    }

    /// Stops caching and drops this RDD's cached blocks.
    pub fn unpersist(&self) -> Rdd<T> {
        self.meta
            .storage
            .store(StorageLevel::None.to_u8(), Ordering::Relaxed);
        if let Some(sc) = &self.sc {
            let id = self.id();
            sc.env()
                .blocks
                .remove_where(|b| matches!(b, BlockId::Rdd { rdd, .. } if *rdd == id));
            // On a cluster the executors hold the copies.
            sc.unpersist_on_executors(id);
        }
        self.clone()
    }

    pub fn storage_level(&self) -> StorageLevel {
        StorageLevel::from_u8(self.meta.storage.load(Ordering::Relaxed))
    }

    /// A human-readable lineage, one RDD per line (Spark's `toDebugString`).
    pub fn to_debug_string(&self) -> String {
        fn walk(rdd: &Arc<dyn RddBase>, depth: usize, out: &mut String) {
            out.push_str(&format!(
                "{}({}) {}[{}]\n",
                "  ".repeat(depth),
                rdd.num_partitions(),
                rdd.name(),
                rdd.id()
            ));
            for d in rdd.dependencies() {
                match d {
                    Dependency::Narrow(p) => walk(&p, depth, out),
                    Dependency::Shuffle(s) => walk(&s.rdd(), depth + 1, out),
                }
            }
        }
        let mut out = String::new();
        walk(&self.base(), 0, &mut out);
        out
    }
}

/// Marker for generic nodes that mention a type only in their closures.
pub(crate) type Ph<T> = PhantomData<fn() -> T>;
