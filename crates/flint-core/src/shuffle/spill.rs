//! Memory-bounded aggregation and sorting: buffers in memory up to the task's
//! share of execution memory, spills sorted runs to disk beyond it, and merges the
//! runs back in key order.

use std::any::TypeId;

use crate::text::Word;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hashbrown::HashTable;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frames::{FrameReader, FrameWriter};
use super::inline::{InlineKey, InlineTable};
use super::partitioner::{Partitioner, stable_hash};
use super::prefix::{RawOrder, Sorted};
use crate::env::TaskEnv;
use crate::error::{FlintError, Result};
use crate::func::{Data, Key};

/// How values are combined per key (Spark's Aggregator).
pub trait Aggregator<V, C>: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    fn create(&self, v: V) -> C;
    fn merge_value(&self, c: C, v: V) -> C;
    fn merge_combiners(&self, c: C, other: C) -> C;
}

/// Estimates the in-memory size of a growing collection by encoding a sample of
/// its entries (Rust has no object-size introspection; encoded size plus a fixed
/// per-entry overhead tracks it well enough to bound memory).
struct SizeEstimator {
    avg: f64,
    ops: u64,
    scratch: Vec<u8>,
}

const SAMPLE_EVERY: u64 = 32;
const ENTRY_OVERHEAD: f64 = 48.0;

impl SizeEstimator {
    fn new() -> Self {
        SizeEstimator {
            avg: 0.0,
            ops: 0,
            scratch: Vec::new(),
        }
    }

    /// Samples a key alone: its encoded size, no per-entry overhead (a sorter
    /// counts its entries' own size exactly).
    fn sample_key<A: Serialize + ?Sized>(&mut self, a: &A) {
        self.scratch.clear();
        if crate::codec::encode_into("size sample", a, &mut self.scratch).is_ok() {
            let s = self.scratch.len() as f64;
            self.avg = if self.avg == 0.0 {
                s
            } else {
                self.avg * 0.9 + s * 0.1
            };
        }
    }
}

/// The aggregation table's size over time (Spark's SizeTracker): the table is
/// measured at geometrically spaced updates (each 10% more than the last), and
/// between samples its size is extrapolated from the bytes per update seen
/// between the last two. Measuring a sample of entries costs O(entry size), so
/// a hot key whose combiner grows to millions of values costs O(n) in all,
/// where measuring every k-th update would cost O(n^2 / k).
struct SizeTracker {
    ops: u64,
    next_sample: u64,
    last_bytes: f64,
    last_ops: u64,
    bytes_per_op: f64,
    scratch: Vec<u8>,
}

/// Entries measured per sample of the table.
const ENTRIES_PER_SAMPLE: usize = 16;

impl SizeTracker {
    fn new() -> Self {
        SizeTracker {
            ops: 0,
            next_sample: 1,
            last_bytes: 0.0,
            last_ops: 0,
            bytes_per_op: 0.0,
            scratch: Vec::new(),
        }
    }

    /// Starts over (the table was emptied by a spill).
    fn reset(&mut self) {
        let scratch = std::mem::take(&mut self.scratch);
        *self = SizeTracker::new();
        self.scratch = scratch;
    }

    fn record(&mut self, bytes: f64) {
        if self.ops > self.last_ops {
            self.bytes_per_op =
                ((bytes - self.last_bytes) / (self.ops - self.last_ops) as f64).max(0.0);
        }
        self.last_bytes = bytes;
        self.last_ops = self.ops;
        self.next_sample = (self.ops + 1).max((self.ops as f64 * 1.1).ceil() as u64);
    }

    fn estimate(&self) -> u64 {
        (self.last_bytes + self.bytes_per_op * (self.ops - self.last_ops) as f64) as u64
    }

    /// The mean of `encode`'s output over up to `ENTRIES_PER_SAMPLE` entries
    /// spread over `table` (0 for an empty table).
    fn sample_mean<'a, T: 'a>(
        &mut self,
        len: usize,
        entries: impl Iterator<Item = &'a T>,
        mut encode: impl FnMut(&T, &mut Vec<u8>) -> bool,
    ) -> f64 {
        let stride = (len / ENTRIES_PER_SAMPLE).max(1);
        let mut bytes = 0usize;
        let mut sampled = 0usize;
        for s in entries.step_by(stride).take(ENTRIES_PER_SAMPLE) {
            self.scratch.clear();
            if encode(s, &mut self.scratch) {
                bytes += self.scratch.len();
                sampled += 1;
            }
        }
        bytes as f64 / sampled.max(1) as f64
    }

    /// Estimated bytes of a table: entries times the mean encoded size of up to
    /// `ENTRIES_PER_SAMPLE` entries spread over it, plus a fixed overhead each.
    fn measure<K: Serialize, C: Serialize>(&mut self, table: &HashTable<Slot<K, C>>) -> f64 {
        let mean = self.sample_mean(table.len(), table.iter(), |s, out| {
            crate::codec::encode_into("size sample", &s.key, out).is_ok()
                && crate::codec::encode_into("size sample", &s.comb, out).is_ok()
        });
        (mean + ENTRY_OVERHEAD) * table.len() as f64
    }

    /// The heap memory of the inline-key table's combiners, sampled (its
    /// slots are counted exactly apart: see `ExternalAggregator::estimate`).
    fn measure_inline<C: Serialize>(&mut self, table: &InlineTable<C>) -> f64 {
        if !std::mem::needs_drop::<C>() {
            // A plain combiner owns no heap memory (and walking the table to
            // sample it cost 2% of a WordCount).
            return 0.0;
        }
        let mean = self.sample_mean(
            ENTRIES_PER_SAMPLE,
            table.sample(ENTRIES_PER_SAMPLE),
            |s, out| crate::codec::encode_into("size sample", &s.comb, out).is_ok(),
        );
        mean * table.len() as f64
    }
}

/// A spill file and the bytes written to it, deleted when dropped.
pub(crate) struct SpillFile {
    pub(crate) path: PathBuf,
    pub(crate) len: u64,
}
impl Drop for SpillFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes one sorted run to a new spill file: `fill` writes its records.
fn write_run(
    env: &TaskEnv,
    fill: impl FnOnce(&mut FrameWriter<BufWriter<File>>) -> Result<()>,
) -> Result<SpillFile> {
    let path = env.temp_file("spill");
    let f =
        File::create(&path).map_err(|e| FlintError::io("cannot create spill file", &path, e))?;
    let mut spill = SpillFile { path, len: 0 };
    let mut w = FrameWriter::new(BufWriter::with_capacity(1 << 20, f), env.compression);
    fill(&mut w)?;
    spill.len = w.finish_segment()?;
    w.into_inner()?;
    env.spill_count.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        bytes = spill.len,
        "spilled sorted run to {}",
        spill.path.display()
    );
    Ok(spill)
}

type ResIter<K, V> = Box<dyn Iterator<Item = Result<(K, V)>>>;

/// A spilled run's frames. A spill file cut short or damaged fails the task
/// (its retry recomputes the input), never yields fewer records.
fn open_run<T: DeserializeOwned>(
    env: &TaskEnv,
    spill: &SpillFile,
) -> Result<FrameReader<BufReader<File>, T>> {
    let f = File::open(&spill.path)
        .map_err(|e| FlintError::io("cannot open spill file", &spill.path, e))?;
    Ok(FrameReader::new(
        BufReader::with_capacity(256 << 10, f),
        env.compression,
        spill.len,
    ))
}

fn read_run<K: Data, V: Data>(env: &TaskEnv, spill: SpillFile) -> Result<ResIter<K, V>> {
    let mut r = open_run::<(K, V)>(env, &spill)?;
    Ok(Box::new(std::iter::from_fn(move || {
        let _keep = &spill;
        r.next_record().transpose()
    })))
}

struct HeapItem<K, V> {
    key: K,
    value: V,
    src: usize,
}
impl<K: Ord, V> PartialEq for HeapItem<K, V> {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key && self.src == o.src
    }
}
impl<K: Ord, V> Eq for HeapItem<K, V> {}
impl<K: Ord, V> PartialOrd for HeapItem<K, V> {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl<K: Ord, V> Ord for HeapItem<K, V> {
    // Min-heap on (key, source) so equal keys come out in source order.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        o.key.cmp(&self.key).then(o.src.cmp(&self.src))
    }
}

/// K-way merge of key-sorted streams.
fn merge_sorted<K: Ord + 'static, V: 'static>(mut sources: Vec<ResIter<K, V>>) -> ResIter<K, V> {
    let mut heap = BinaryHeap::new();
    let mut pending_err = None;
    for (i, s) in sources.iter_mut().enumerate() {
        match s.next() {
            Some(Ok((key, value))) => heap.push(HeapItem { key, value, src: i }),
            Some(Err(e)) => pending_err = Some(e),
            None => {}
        }
    }
    Box::new(std::iter::from_fn(move || {
        if let Some(e) = pending_err.take() {
            return Some(Err(e));
        }
        let top = heap.pop()?;
        match sources[top.src].next() {
            Some(Ok((key, value))) => heap.push(HeapItem {
                key,
                value,
                src: top.src,
            }),
            Some(Err(e)) => pending_err = Some(e),
            None => {}
        }
        Some(Ok((top.key, top.value)))
    }))
}

/// One entry of the aggregation table: the key and its combiner (merged in
/// place with `merge_in_place`, so no `Option` makes each slot bigger).
struct Slot<K, C> {
    key: K,
    comb: C,
}

/// Replaces `*slot` by `f(old)`, passing the old combiner by value: a spare
/// combiner stands in the slot while `f` runs (no `Option` per slot, which
/// cost 8 bytes per entry for a `u64` count and so more cache misses). The
/// spare is a clone of the first combiner merged, made once; if `f` panics the
/// slot holds the spare, a valid value, and the task fails anyway. Only for
/// combiners without drop glue (plain values: the clone is a small copy);
/// others are taken out of the table and put back (`upsert`), so a large
/// combiner is never cloned.
#[inline]
pub(super) fn merge_in_place<C: Clone>(
    slot: &mut C,
    spare: &mut Option<C>,
    f: impl FnOnce(Option<C>) -> C,
) {
    let stand_in = match spare.take() {
        Some(s) => s,
        None => slot.clone(),
    };
    let old = std::mem::replace(slot, stand_in);
    let new = f(Some(old));
    *spare = Some(std::mem::replace(slot, new));
}

/// The text of a key of a string type that the table can hold inline
/// (`String`, `CompactString`); None for any other key type. The type tests
/// are constants once monomorphized.
#[inline]
fn key_str<K: 'static>(k: &K) -> Option<&str> {
    let any = k as &dyn std::any::Any;
    if TypeId::of::<K>() == TypeId::of::<String>() {
        return any.downcast_ref::<String>().map(String::as_str);
    }
    if TypeId::of::<K>() == TypeId::of::<compact_str::CompactString>() {
        return any
            .downcast_ref::<compact_str::CompactString>()
            .map(compact_str::CompactString::as_str);
    }
    None
}

fn inlines<K: 'static>() -> bool {
    TypeId::of::<K>() == TypeId::of::<String>()
        || TypeId::of::<K>() == TypeId::of::<compact_str::CompactString>()
        || TypeId::of::<K>() == TypeId::of::<Word>()
}

/// The inline key of `k`, if its type is one `inlines` accepts and its text
/// is short enough. A `Word` already has the layout.
#[inline]
fn inline_key<K: 'static>(k: &K) -> Option<InlineKey> {
    if TypeId::of::<K>() == TypeId::of::<Word>() {
        let words = (k as &dyn std::any::Any)
            .downcast_ref::<Word>()?
            .inline_words()?;
        return Some(InlineKey(words));
    }
    key_str(k).and_then(|s| InlineKey::new(s.as_bytes()))
}

/// Pass 1 of `insert_values`: each record's inline key and hash, its home
/// slot prefetched. Text keys are built by masked loads where the CPU has
/// them, chosen once per batch: inside `stage_masked` the load inlines,
/// where a per-key choice costs a call and the key's round trip through
/// memory.
#[inline]
fn stage_keys<K: 'static, V, C>(
    batch: &[(K, V)],
    t: &InlineTable<C>,
    staged: &mut Vec<Option<(InlineKey, u64)>>,
) {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<K>() != TypeId::of::<Word>() && super::inline::masked_loads() {
        // SAFETY: the CPU has the features `stage_masked` is compiled for
        // (checked just above).
        unsafe { stage_masked(batch, t, staged) };
        return;
    }
    for (k, _) in batch {
        staged.push(inline_key(k).map(|ik| hashed(t, ik)));
    }
}

/// An inline key with its hash, its home slot prefetched.
#[inline(always)]
fn hashed<C>(t: &InlineTable<C>, ik: InlineKey) -> (InlineKey, u64) {
    let hash = ik.hash();
    t.prefetch(hash);
    (ik, hash)
}

/// `stage_keys` for text keys with masked loads.
///
/// # Safety
/// The CPU must have AVX-512BW and AVX-512VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw,avx512vl")]
unsafe fn stage_masked<K: 'static, V, C>(
    batch: &[(K, V)],
    t: &InlineTable<C>,
    staged: &mut Vec<Option<(InlineKey, u64)>>,
) {
    for (k, _) in batch {
        // SAFETY: this function's own features.
        let ik = key_str(k).and_then(|s| unsafe { InlineKey::new_masked(s.as_bytes()) });
        staged.push(ik.map(|ik| hashed(t, ik)));
    }
}

/// The value as a `K` if it is one (an `Option` downcast in place: no box
/// per key).
fn cast<T: 'static, K: 'static>(v: T) -> Option<K> {
    let mut slot = Some(v);
    (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<K>>()?
        .take()
}

/// The key of type `K` an inline key stands for. A `Word` has the inline
/// layout itself, so it is rebuilt from the three words, with no text check
/// or copy (the key was made from a `Word`, valid text); other types from
/// the text.
fn key_from_inline<K: 'static>(ik: InlineKey) -> Option<K> {
    if TypeId::of::<K>() == TypeId::of::<Word>() {
        return cast(Word::from_words(ik.0));
    }
    let (buf, len) = ik.bytes();
    std::str::from_utf8(&buf[..len])
        .ok()
        .and_then(key_from_str::<K>)
}

/// A key of type `K` (one `key_str` accepts) with the given text.
fn key_from_str<K: 'static>(s: &str) -> Option<K> {
    if TypeId::of::<K>() == TypeId::of::<String>() {
        cast(s.to_string())
    } else if TypeId::of::<K>() == TypeId::of::<compact_str::CompactString>() {
        cast(compact_str::CompactString::from(s))
    } else if TypeId::of::<K>() == TypeId::of::<Word>() {
        cast(Word::new(s))
    } else {
        None
    }
}

/// Combines values by key within a memory budget (Spark's ExternalAppendOnlyMap).
/// Entries are grouped by reduce partition when a partitioner is given (the map
/// side); the group is computed when entries leave the table, not per record.
/// Spilled runs and the sorted output are ordered by `(group, key)`.
pub struct ExternalAggregator<K: Key, C> {
    table: HashTable<Slot<K, C>>,
    /// String keys of up to `INLINE` bytes, when `K` is a string type
    /// (longer ones go to `table`; the two never hold the same key).
    inline: Option<InlineTable<C>>,
    groups: Option<Partitioner<K>>,
    size: SizeTracker,
    env: Arc<TaskEnv>,
    spills: Vec<SpillFile>,
    /// See `merge_in_place`.
    spare: Option<C>,
    /// `insert_values`' inline keys and hashes of a batch (kept to reuse).
    staged: Vec<Option<(InlineKey, u64)>>,
}

impl<K: Key, C: Data> ExternalAggregator<K, C> {
    /// `groups` partitions the output (map side); `None` puts everything in group 0.
    pub fn new(env: Arc<TaskEnv>, groups: Option<Partitioner<K>>) -> Self {
        ExternalAggregator {
            table: HashTable::new(),
            inline: inlines::<K>().then(InlineTable::new),
            groups,
            size: SizeTracker::new(),
            env,
            spills: Vec::new(),
            spare: None,
            staged: Vec::new(),
        }
    }

    /// Keys held in memory now.
    pub fn len(&self) -> usize {
        self.table.len() + self.inline.as_ref().map_or(0, InlineTable::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sizes the table for `keys` keys up front (a hint: capped so that empty
    /// slots alone stay within a quarter of the memory budget).
    pub fn reserve(&mut self, keys: usize) {
        let quarter = (self.env.task_memory / 4) as usize;
        match self.inline.as_mut() {
            // At most half full and a power of two: up to 4 slots a key.
            Some(t) => t.reserve(keys.min(quarter / (4 * InlineTable::<C>::SLOT_BYTES))),
            None => {
                let slot = std::mem::size_of::<Slot<K, C>>() + 1;
                self.table
                    .reserve(keys.min(quarter / slot), |s| stable_hash(&s.key));
            }
        }
    }

    /// Merges `v` into the combiner of `k`.
    #[inline]
    pub fn insert_value<V, A: Aggregator<V, C>>(&mut self, agg: &A, k: K, v: V) -> Result<()> {
        self.upsert(k, |old| match old {
            Some(c) => agg.merge_value(c, v),
            None => agg.create(v),
        })
    }

    /// Merges a combiner `c` into that of `k`.
    pub fn insert_combiner<V, A: Aggregator<V, C>>(&mut self, agg: &A, k: K, c: C) -> Result<()> {
        self.upsert(k, |old| match old {
            Some(o) => agg.merge_combiners(o, c),
            None => c,
        })
    }

    /// Merges every `(key, value)` of `batch` (drained) into its combiner,
    /// as `insert_value` one by one would, in the same order. Inline keys
    /// are built and hashed for the whole batch first and their home slots
    /// prefetched, so that the lookups' cache misses (the table outgrows L2)
    /// overlap instead of coming one at a time.
    pub fn insert_values<V, A: Aggregator<V, C>>(
        &mut self,
        agg: &A,
        batch: &mut Vec<(K, V)>,
    ) -> Result<()> {
        let mut staged = std::mem::take(&mut self.staged);
        staged.clear();
        if let Some(t) = &self.inline {
            stage_keys(batch, t, &mut staged);
        }
        for (j, (k, v)) in batch.drain(..).enumerate() {
            let inline = staged.get(j).copied().flatten();
            self.upsert_keyed(k, inline, |old| match old {
                Some(c) => agg.merge_value(c, v),
                None => agg.create(v),
            })?;
        }
        self.staged = staged;
        Ok(())
    }

    #[inline]
    fn upsert(&mut self, k: K, f: impl FnOnce(Option<C>) -> C) -> Result<()> {
        let inline = match self.inline {
            Some(_) => inline_key(&k).map(|ik| (ik, ik.hash())),
            None => None,
        };
        self.upsert_keyed(k, inline, f)
    }

    /// `upsert` of `k` whose inline key and its hash, if it has one and the
    /// inline table exists, are `inline`.
    #[inline]
    fn upsert_keyed(
        &mut self,
        k: K,
        inline: Option<(InlineKey, u64)>,
        f: impl FnOnce(Option<C>) -> C,
    ) -> Result<()> {
        if let (Some((ik, hash)), Some(t)) = (inline, self.inline.as_mut()) {
            drop(k);
            t.upsert(ik, hash, &mut self.spare, f);
        } else {
            let hash = stable_hash(&k);
            match self.table.find_entry(hash, |s| s.key == k) {
                Ok(e) if !std::mem::needs_drop::<C>() => {
                    merge_in_place(&mut e.into_mut().comb, &mut self.spare, f);
                }
                Ok(e) => {
                    let (slot, vacant) = e.remove();
                    let comb = f(Some(slot.comb));
                    vacant.insert(Slot {
                        key: slot.key,
                        comb,
                    });
                }
                Err(_) => {
                    let comb = f(None);
                    self.table
                        .insert_unique(hash, Slot { key: k, comb }, |s| stable_hash(&s.key));
                }
            }
        }
        self.counted()
    }

    /// Counts one insert: samples the table's size now and then, and spills
    /// when it has outgrown the task's memory.
    #[inline(always)]
    fn counted(&mut self) -> Result<()> {
        self.size.ops += 1;
        if self.size.ops >= self.size.next_sample || self.size.ops.is_multiple_of(SAMPLE_EVERY) {
            return self.sample_and_spill();
        }
        Ok(())
    }

    #[inline(never)]
    fn sample_and_spill(&mut self) -> Result<()> {
        if self.size.ops >= self.size.next_sample {
            let mut bytes = self.size.measure(&self.table);
            if let Some(t) = &self.inline {
                bytes += self.size.measure_inline(t);
            }
            self.size.record(bytes);
        }
        if self.size.ops.is_multiple_of(SAMPLE_EVERY) {
            self.maybe_spill()?;
        }
        Ok(())
    }

    /// Bytes held: the sampled estimate, plus the inline table's slots
    /// exactly (they grow in steps, by doubling, which the estimate's linear
    /// extrapolation would overshoot and spill early).
    fn estimate(&self) -> u64 {
        let slots = self.inline.as_ref().map_or(0, InlineTable::allocated_bytes);
        self.size.estimate() + slots as u64
    }

    /// Spills everything held as one sorted run when the estimate passes the
    /// task's memory share, even a single key's combiner. A key may then appear
    /// in several runs; the merge combines equal keys wherever they come from.
    fn maybe_spill(&mut self) -> Result<()> {
        let held = self.table.len() + self.inline.as_ref().map_or(0, InlineTable::len);
        if self.estimate() > self.env.task_memory && held > 0 {
            let run = self.drain_sorted()?;
            let spill = write_run(&self.env, |w| {
                for rec in run {
                    w.write(&rec)?;
                }
                Ok(())
            })?;
            self.spills.push(spill);
            self.size.reset();
        }
        Ok(())
    }

    /// Takes every entry, with its group (computed from the key itself, so
    /// inline keys land where the same key as `K` would).
    fn drain(&mut self) -> Result<Vec<((u32, K), C)>> {
        let groups = &self.groups;
        let group = |k: &K| match groups {
            Some(p) => p.partition(k) as u32,
            None => 0,
        };
        let mut v: Vec<((u32, K), C)> = self
            .table
            .drain()
            .map(|s| ((group(&s.key), s.key), s.comb))
            .collect();
        self.table.shrink_to(0, |s| stable_hash(&s.key));
        if let Some(t) = self.inline.as_mut() {
            v.reserve(t.len());
            for s in t.drain() {
                let key = key_from_inline::<K>(s.key()).ok_or_else(|| {
                    FlintError::User("an aggregation table key is not valid text".into())
                })?;
                v.push(((group(&key), key), s.comb));
            }
        }
        Ok(v)
    }

    fn drain_sorted(&mut self) -> Result<Vec<((u32, K), C)>> {
        let mut v = self.drain()?;
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// All `((group, key), combiner)` pairs. Ordered by group when `by_group`, by
    /// `(group, key)` when `by_key` or when anything spilled (the merge needs it),
    /// else in hash order.
    pub fn into_iter<V, A: Aggregator<V, C>>(
        mut self,
        agg: &A,
        by_group: bool,
        by_key: bool,
    ) -> Result<ResIter<(u32, K), C>> {
        if self.spills.is_empty() {
            let mut v = self.drain()?;
            if by_key {
                v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            } else if by_group {
                v.sort_unstable_by_key(|e| e.0.0);
            }
            return Ok(Box::new(v.into_iter().map(Ok)));
        }
        let mem = self.drain_sorted()?;
        let mut sources: Vec<ResIter<(u32, K), C>> = vec![Box::new(mem.into_iter().map(Ok))];
        for s in self.spills.drain(..) {
            sources.push(read_run(&self.env, s)?);
        }
        let mut merged = merge_sorted(sources).peekable();
        let agg = agg.clone();
        Ok(Box::new(std::iter::from_fn(move || {
            let (k, mut c) = match merged.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e)),
            };
            while let Some(Ok((k2, _))) = merged.peek() {
                if *k2 != k {
                    break;
                }
                if let Some(Ok((_, c2))) = merged.next() {
                    c = agg.merge_combiners(c, c2);
                }
            }
            Some(Ok((k, c)))
        })))
    }
}

/// Where a value's encoding sits in a sorter's pages.
#[derive(Clone, Copy)]
struct Loc {
    page: u32,
    off: u32,
    len: u32,
}

impl Loc {
    /// The record's bytes in `pages`.
    fn bytes(self, pages: &[Vec<u8>]) -> &[u8] {
        &pages[self.page as usize][self.off as usize..(self.off + self.len) as usize]
    }

    /// Insertion order (locations grow with it).
    fn order(&self, o: &Loc) -> CmpOrdering {
        (self.page, self.off).cmp(&(o.page, o.off))
    }
}

/// Bytes per page of encoded values (a larger value gets a page of its own).
const PAGE: usize = 1 << 20;

/// Entries ahead of the one being read whose value is prefetched: the sorted
/// order visits the pages at random, and without it every value is a cache
/// (and TLB) miss that the output loop waits for.
const PREFETCH_AHEAD: usize = 16;

/// Sorts records by a key within a memory budget (Spark's ExternalSorter without
/// aggregation, laid out as its UnsafeExternalSorter): values are kept encoded
/// in 1 MiB pages, with no heap object per record, and only `(key, location)`
/// entries are sorted. Keys that encode as a length and the bytes they order by
/// (text, bytes) are kept encoded in the pages too, before their values, and
/// the entries are `(prefix, location)`: such keys are compared as bytes where
/// prefixes tie and built only when they leave the sorter, in order (a heap
/// key per record held until then, and freed in another order than it was
/// allocated, cost more than the sort). Output decodes each record from its
/// page in key order, prefetching a few entries ahead. Past the task's memory
/// share the sorted entries are written as a run (key, then the value's bytes
/// as they are) and the pages are reused.
pub struct ExternalSorter<S, V> {
    entries: Vec<(S, Loc)>,
    /// With `raw`: the entries, each a key's prefix and where its key's and
    /// value's encodings sit, one after the other.
    raw_entries: Vec<(u64, Loc)>,
    raw: Option<RawOrder>,
    pages: Vec<Vec<u8>>,
    /// Emptied pages kept for the next run (no fresh page faults). Not
    /// counted against the budget: a run takes them before allocating, so
    /// pages held never exceed the most one run used.
    free: Vec<Vec<u8>>,
    /// Capacity of `pages`, the pages this run uses.
    page_bytes: u64,
    /// Keys' own estimated heap bytes per entry (sampled encoded size).
    key_est: SizeEstimator,
    scratch: Vec<u8>,
    env: Arc<TaskEnv>,
    spills: Vec<SpillFile>,
    /// The key's order as a number, for key types that have one.
    prefix: Option<fn(&S) -> u64>,
    /// Bytes per page: `PAGE`, or a sixteenth of a smaller budget (as
    /// Spark sizes its pages from memory), so that one page never fills
    /// the budget and forces a spill every few records.
    page: usize,
    _v: std::marker::PhantomData<fn() -> V>,
}

impl<S: Data + Ord, V: Data> ExternalSorter<S, V> {
    pub fn new(env: Arc<TaskEnv>) -> Self {
        let page = (env.task_memory as usize / 16).clamp(4096, PAGE);
        ExternalSorter {
            entries: Vec::new(),
            raw_entries: Vec::new(),
            raw: RawOrder::of::<S>(),
            pages: Vec::new(),
            free: Vec::new(),
            page_bytes: 0,
            key_est: SizeEstimator::new(),
            scratch: Vec::new(),
            env,
            spills: Vec::new(),
            prefix: super::prefix::prefix_fn::<S>(),
            page,
            _v: std::marker::PhantomData,
        }
    }

    /// For keys kept encoded: how long the key encoding at the front of its
    /// input is, to hand keys to `insert_raw` undecoded.
    pub fn raw_key_len(&self) -> Option<fn(&[u8]) -> Option<usize>> {
        self.raw.map(RawOrder::key_len_fn)
    }

    fn new_page(&mut self, min: usize) -> Vec<u8> {
        let page = match self.free.pop() {
            Some(p) if p.capacity() >= min => p,
            other => {
                // (A free page too small for this value stays free.)
                self.free.extend(other);
                Vec::with_capacity(min.max(self.page))
            }
        };
        self.page_bytes += page.capacity() as u64;
        page
    }

    fn len(&self) -> usize {
        self.entries.len() + self.raw_entries.len()
    }

    /// Bytes this run holds: its pages and its entries (the entries vector's
    /// spare capacity, like the free pages, is reused, not counted, so that
    /// a spill brings the estimate back to zero).
    fn estimate(&self) -> u64 {
        // Sorting by prefix moves the entries into a second vector of slots
        // while the first is still held: counted ahead, with each entry.
        let per_entry = match self.raw {
            Some(_) => {
                std::mem::size_of::<(u64, Loc)>() + std::mem::size_of::<Option<(u64, Loc)>>()
            }
            None => {
                let slots = match self.prefix {
                    Some(_) => std::mem::size_of::<Option<(S, Loc)>>(),
                    None => 0,
                };
                std::mem::size_of::<(S, Loc)>() + slots
            }
        } as f64
            + self.key_est.avg;
        self.page_bytes + (per_entry * self.len() as f64) as u64
    }

    pub fn insert(&mut self, key: S, value: V) -> Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let r = if self.raw.is_some() {
            crate::codec::encode_into("sort record", &key, &mut scratch)
                .and_then(|()| {
                    let k = scratch.len();
                    crate::codec::encode_into("sort record", &value, &mut scratch)?;
                    Ok(k)
                })
                // Encoded from a key here: valid text.
                .and_then(|k| self.insert_raw_checked(&scratch[..k], &scratch[k..], false))
        } else {
            crate::codec::encode_into("sort record", &value, &mut scratch)
                .and_then(|()| self.insert_encoded(key, &scratch))
        };
        self.scratch = scratch;
        r
    }

    /// Inserts a record whose value is already encoded (as `V`: it is
    /// decoded when the record leaves the sorter).
    pub fn insert_encoded(&mut self, key: S, value: &[u8]) -> Result<()> {
        if self.raw.is_some() {
            let mut k = std::mem::take(&mut self.scratch);
            k.clear();
            let r = crate::codec::encode_into("sort record", &key, &mut k)
                .and_then(|()| self.insert_raw_checked(&k, value, false));
            self.scratch = k;
            return r;
        }
        let loc = self.store(&[], value)?;
        let sampled = self.key_est.ops.is_multiple_of(SAMPLE_EVERY);
        self.key_est.ops += 1;
        if sampled {
            self.key_est.sample_key(&key);
        }
        self.entries.push((key, loc));
        self.check_budget(sampled, value.len())
    }

    /// Inserts a record whose key and value are both encoded (keys that
    /// `raw_key_len` is given for: `key` must be one key's whole encoding).
    pub fn insert_raw(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert_raw_checked(key, value, true)
    }

    /// As `insert_raw`, for a key that `raw_key_len`'s function accepted
    /// (text already checked there).
    pub(crate) fn insert_fetched(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert_raw_checked(key, value, false)
    }

    fn insert_raw_checked(&mut self, key: &[u8], value: &[u8], check_text: bool) -> Result<()> {
        let Some(raw) = self.raw else {
            return Err(FlintError::Codec {
                what: "sort record",
                reason: "an encoded key for a sorter that keeps keys decoded (a bug in Flint)"
                    .into(),
            });
        };
        let prefix = match raw.content(key, check_text) {
            Some(content) => raw.prefix(content),
            None => {
                return Err(FlintError::Codec {
                    what: "sort record",
                    reason: "a key's encoding is not one key of its type, or does not fill its \
                             length (input is corrupt)"
                        .into(),
                });
            }
        };
        let loc = self.store(key, value)?;
        let sampled = self.key_est.ops.is_multiple_of(SAMPLE_EVERY);
        self.key_est.ops += 1;
        self.raw_entries.push((prefix, loc));
        self.check_budget(sampled, key.len() + value.len())
    }

    /// Appends `key` and `value` (either may be empty) to the pages, together.
    fn store(&mut self, key: &[u8], value: &[u8]) -> Result<Loc> {
        let len = key.len() + value.len();
        if self
            .pages
            .last()
            .is_none_or(|p| p.capacity() - p.len() < len.max(1))
        {
            let page = self.new_page(len.max(1));
            self.pages.push(page);
        }
        let page_no = self.pages.len() - 1;
        let page = &mut self.pages[page_no];
        let (Ok(page_u32), Ok(off), Ok(len32)) = (
            u32::try_from(page_no),
            u32::try_from(page.len()),
            u32::try_from(len),
        ) else {
            return Err(FlintError::User(
                "a sort buffer outgrew 4G pages or a 4 GiB value; raise the partition count".into(),
            ));
        };
        page.extend_from_slice(key);
        page.extend_from_slice(value);
        if len == 0 {
            // A record that encodes to nothing still takes a byte, so that
            // locations stay distinct and ties keep insertion order.
            page.push(0);
        }
        Ok(Loc {
            page: page_u32,
            off,
            len: len32,
        })
    }

    /// Spills past the budget. Checked on sampled inserts, and after any
    /// record larger than a page (a few such records could pass the budget
    /// between samples).
    fn check_budget(&mut self, sampled: bool, len: usize) -> Result<()> {
        if (sampled || len > self.page) && self.len() > 1 && self.estimate() > self.env.task_memory
        {
            self.spill()?;
        }
        Ok(())
    }

    /// Entries in key order; ties keep insertion order (locations grow with
    /// it).
    fn sorted_entries(&mut self) -> Sorted<(S, Loc)> {
        let cmp = |a: &(S, Loc), b: &(S, Loc)| a.0.cmp(&b.0).then(a.1.order(&b.1));
        let mut entries = std::mem::take(&mut self.entries);
        match self.prefix {
            Some(p) => super::prefix::sort_by_prefix(entries, |e| p(&e.0), cmp),
            None => {
                entries.sort_unstable_by(cmp);
                Sorted::InPlace(entries)
            }
        }
    }

    /// As `sorted_entries`, for keys kept encoded: by prefix, then by the
    /// keys' bytes.
    fn sorted_raw_entries(&mut self, raw: RawOrder) -> Sorted<(u64, Loc)> {
        let pages = &self.pages;
        let content = |l: &Loc| RawOrder::split(l.bytes(pages)).map_or(&[][..], |(c, _)| c);
        let cmp = |a: &(u64, Loc), b: &(u64, Loc)| {
            a.0.cmp(&b.0)
                .then_with(|| raw.cmp(content(&a.1), content(&b.1)))
                .then(a.1.order(&b.1))
        };
        super::prefix::sort_by_prefix(std::mem::take(&mut self.raw_entries), |e| e.0, cmp)
    }

    fn spill(&mut self) -> Result<()> {
        let spill = match self.raw {
            Some(raw) => {
                let sorted = self.sorted_raw_entries(raw);
                let spill = write_sorted(&self.env, &self.pages, &sorted, |w, _, b| {
                    let (k, v) = split_raw(b)?;
                    w.write_sized_raw(k, v)
                })?;
                self.raw_entries = sorted.emptied();
                spill
            }
            None => {
                let sorted = self.sorted_entries();
                let spill = write_sorted(&self.env, &self.pages, &sorted, |w, (k, _), b| {
                    // Runs keep values as stored, behind their lengths.
                    w.write_sized(k, b)
                })?;
                self.entries = sorted.emptied();
                spill
            }
        };
        self.spills.push(spill);
        // Keep the pages for the next run.
        for mut p in self.pages.drain(..) {
            // Pages of one large value are let go.
            if p.capacity() == self.page {
                p.clear();
                self.free.push(p);
            }
        }
        self.page_bytes = 0;
        Ok(())
    }

    /// Records in key order (stable).
    pub fn into_sorted(mut self) -> Result<ResIter<S, V>> {
        let mem = match self.raw {
            Some(raw) => {
                let sorted = self.sorted_raw_entries(raw);
                sorted_output(sorted, std::mem::take(&mut self.pages), |_, b| {
                    let (k, v) = split_raw(b)?;
                    Ok((
                        crate::codec::decode_exact::<S>("sort key", k)?,
                        crate::codec::decode_exact::<V>("sort record", v)?,
                    ))
                })
            }
            None => {
                let sorted = self.sorted_entries();
                sorted_output(sorted, std::mem::take(&mut self.pages), |(k, _), b| {
                    Ok((k, crate::codec::decode_exact::<V>("sort record", b)?))
                })
            }
        };
        if self.spills.is_empty() {
            return Ok(mem);
        }
        // Runs spilled earlier hold earlier records: list them first so the merge,
        // which breaks ties by source, stays stable.
        let mut sources: Vec<ResIter<S, V>> = Vec::new();
        for s in self.spills.drain(..) {
            sources.push(read_sized_run(&self.env, s)?);
        }
        sources.push(mem);
        Ok(merge_sorted(sources))
    }
}

/// A sorter's entry: where its record sits.
trait Located {
    fn loc(&self) -> Loc;
}
impl<K> Located for (K, Loc) {
    fn loc(&self) -> Loc {
        self.1
    }
}

/// Writes sorted entries as a run: `write` gets each entry with its
/// record's bytes.
fn write_sorted<E: Located>(
    env: &TaskEnv,
    pages: &[Vec<u8>],
    sorted: &Sorted<E>,
    write: impl Fn(&mut FrameWriter<BufWriter<File>>, &E, &[u8]) -> Result<()>,
) -> Result<SpillFile> {
    write_run(env, |w| {
        for i in 0..sorted.len() {
            if let Some(ahead) = sorted.get(i + PREFETCH_AHEAD) {
                prefetch(pages, ahead.loc());
            }
            let Some(e) = sorted.get(i) else {
                return Err(lost_entry());
            };
            write(w, e, e.loc().bytes(pages))?;
        }
        Ok(())
    })
}

/// Sorted entries as records: `decode` gets each entry with its record's
/// bytes.
fn sorted_output<E: Located + 'static, S, V>(
    sorted: Sorted<E>,
    pages: Vec<Vec<u8>>,
    decode: impl Fn(E, &[u8]) -> Result<(S, V)> + 'static,
) -> ResIter<S, V> {
    let mut it = sorted.into_iter();
    Box::new(std::iter::from_fn(move || {
        if let Some(ahead) = it.ahead(PREFETCH_AHEAD) {
            prefetch(&pages, ahead.loc());
        }
        let Some(e) = it.next()? else {
            return Some(Err(lost_entry()));
        };
        let loc = e.loc();
        Some(decode(e, loc.bytes(&pages)))
    }))
}

/// A stored record of encoded key and value: the key's encoding and the
/// value's.
fn split_raw(b: &[u8]) -> Result<(&[u8], &[u8])> {
    match RawOrder::split(b) {
        Some((_, n)) => Ok(b.split_at(n)),
        None => Err(lost_entry()),
    }
}

/// A sorter's spilled run: keys with their values' encodings behind their
/// lengths, each value required to fill its length exactly.
fn read_sized_run<K: Data, V: Data>(env: &TaskEnv, spill: SpillFile) -> Result<ResIter<K, V>> {
    let mut r = open_run::<()>(env, &spill)?;
    Ok(Box::new(std::iter::from_fn(move || {
        let _keep = &spill;
        let rec = match r.next_sized::<K>() {
            Ok(Some((k, raw))) => {
                crate::codec::decode_exact::<V>("sort record", raw).map(|v| (k, v))
            }
            Ok(None) => return None,
            Err(e) => Err(e),
        };
        Some(rec)
    })))
}

/// A sort order that does not name each entry once (a bug, reported rather
/// than ending the output early).
fn lost_entry() -> FlintError {
    FlintError::Codec {
        what: "sort buffer",
        reason: "its order does not name every record once (a bug in Flint)".into(),
    }
}

/// Asks the CPU to start loading the value at `loc` (a hint; no effect on
/// results).
#[inline]
fn prefetch(pages: &[Vec<u8>], loc: Loc) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = pages
        .get(loc.page as usize)
        .and_then(|p| p.get(loc.off as usize..))
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let ptr = b.as_ptr().cast::<i8>();
        // SAFETY: a prefetch never faults and reads nothing the program sees;
        // the pointer is into a live page anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr) };
        // Every further cache line the value touches, up to 4 in all: a
        // 101-byte value spans 3 lines more often than not.
        let end = ptr.wrapping_add((loc.len as usize).clamp(1, 256) - 1);
        let mut line = ptr.wrapping_add(64);
        while (line as usize) & !63 <= (end as usize) & !63 {
            // SAFETY: as above; `line` lies within the value.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line) };
            line = line.wrapping_add(64);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (pages, loc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;

    fn env(dir: &std::path::Path, memory: &str) -> Arc<TaskEnv> {
        let conf = crate::conf::FlintConf::new()
            .set("flint.executor.memory", memory)
            .set("flint.memory.fraction", "1.0");
        Arc::new(
            TaskEnv::new(
                conf,
                "0".into(),
                dir.to_path_buf(),
                Arc::default(),
                Arc::default(),
                1,
            )
            .unwrap(),
        )
    }

    /// Keys with many duplicates (to see stability), values carrying their
    /// insertion index, some larger than a page.
    fn records(n: u32) -> Vec<(u16, (u32, String))> {
        (0..n)
            .map(|i| {
                let key = (i.wrapping_mul(2_654_435_761) >> 20) as u16 % 1000;
                let big = if i % 5000 == 17 { PAGE + 3 } else { 20 };
                (key, (i, "x".repeat(big)))
            })
            .collect()
    }

    fn sorted_by(memory: &str, n: u32) -> (Vec<(u16, (u32, String))>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path(), memory);
        let mut s = ExternalSorter::new(env.clone());
        for (k, v) in records(n) {
            s.insert(k, v).unwrap();
        }
        let out = s
            .into_sorted()
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap();
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 0, "spill files are removed once read");
        (out, env.spill_count.load(Ordering::Relaxed))
    }

    /// A stored value whose length does not match its encoding (bytes from a
    /// shuffle whose length field was forged) is an error when it leaves the
    /// sorter, in memory or from a spilled run, never a shortened or extra
    /// record.
    #[test]
    fn a_value_that_does_not_fill_its_length_is_an_error() {
        for memory in ["1g", "1m"] {
            let dir = tempfile::tempdir().unwrap();
            let mut s = ExternalSorter::<u32, u8>::new(env(dir.path(), memory));
            // The value 7, then two bytes of junk within its stated length.
            s.insert_encoded(5, &[7, 3, 9]).unwrap();
            for i in 0..300_000u32 {
                s.insert(i, (i % 200) as u8).unwrap();
            }
            let out: Vec<Result<(u32, u8)>> = s.into_sorted().unwrap().collect();
            let errors: Vec<String> = out
                .iter()
                .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
                .collect();
            assert_eq!(errors.len(), 1, "{memory}: {errors:?}");
            assert!(errors[0].contains("corrupt"), "{}", errors[0]);
            // In memory the other records still come; a merge of spilled
            // runs ends at the error (the task fails either way).
            let ok = out.iter().filter(|r| r.is_ok()).count();
            assert!(ok <= 300_000, "{memory}: {ok} records, one forged");
        }
    }

    #[test]
    fn sorts_stably_in_memory_and_across_spills() {
        let n = 40_000;
        let mut model = records(n);
        model.sort_by_key(|r| r.0); // stable: equal keys keep insertion order
        let (mem, spills) = sorted_by("1g", n);
        assert_eq!(spills, 0);
        assert!(mem == model, "in-memory sort differs from a stable sort");
        let (spilled, spills) = sorted_by("1m", n);
        assert!(spills >= 3, "{spills} spills with a 1 MiB budget");
        assert!(spilled == model, "spilled sort differs from a stable sort");
    }

    /// Sorts `keys` (values: their positions) with a sorter in `memory`,
    /// inserting each record decoded, with its value encoded, or with both
    /// encoded, in turn; returns the records and the spill count.
    fn sort_keys<S: Data + Ord>(keys: Vec<S>, memory: &str) -> (Vec<(S, u32)>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path(), memory);
        let mut s = ExternalSorter::<S, u32>::new(env.clone());
        for (i, k) in keys.into_iter().enumerate() {
            let i = i as u32;
            let v = crate::codec::encode("test", &i).unwrap();
            match i % 3 {
                0 => s.insert(k, i).unwrap(),
                1 => s.insert_encoded(k, &v).unwrap(),
                _ => match s.raw_key_len() {
                    Some(_) => s
                        .insert_raw(&crate::codec::encode("test", &k).unwrap(), &v)
                        .unwrap(),
                    None => s.insert_encoded(k, &v).unwrap(),
                },
            }
        }
        let out = s
            .into_sorted()
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap();
        (out, env.spill_count.load(Ordering::Relaxed))
    }

    /// Text and byte keys are kept encoded in the sorter's pages and compared
    /// as bytes: the order must be the keys' own, stable, with shared
    /// prefixes longer than the 8-byte prefix, empty keys, keys that extend
    /// others and NULs, ascending and descending, in memory and spilled.
    #[test]
    fn keys_kept_encoded_sort_as_their_order() {
        fn check<S: Data + Ord + Clone + std::fmt::Debug>(keys: Vec<S>) {
            assert!(RawOrder::of::<S>().is_some());
            let mut model: Vec<(S, u32)> = keys.iter().cloned().zip(0..).collect();
            model.sort_by(|a, b| a.0.cmp(&b.0)); // stable
            for memory in ["1g", "1m"] {
                let (out, spills) = sort_keys(keys.clone(), memory);
                assert_eq!(spills > 0, memory == "1m", "{memory}: {spills} spills");
                assert!(out == model, "{memory}: differs from a stable sort");
            }
        }
        let words: Vec<String> = (0..60_000u64)
            .map(|i| {
                let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                match x % 6 {
                    0 => String::new(),
                    1 => format!("commonprefix{}", x % 500),
                    2 => format!("a\0{}", x % 3),
                    3 => "a".repeat((x % 12) as usize),
                    4 => "é".repeat((x % 5) as usize),
                    _ => format!("{x:x}"),
                }
            })
            .collect();
        check(words.clone());
        check(words.iter().cloned().map(Reverse).collect());
        check(
            words
                .iter()
                .map(|w| crate::bytes::Bytes(w.clone().into_bytes()))
                .collect(),
        );
        check(
            words
                .iter()
                .map(|w| w.clone().into_bytes())
                .map(Reverse)
                .collect(),
        );
        check(words.iter().map(|w| Word::from(w.as_str())).collect());
        check(
            words
                .iter()
                .map(|w| compact_str::CompactString::from(w.as_str()))
                .collect(),
        );
    }

    /// Records whose values encode to nothing keep insertion order among
    /// keys that are equal by `Ord` (yet differ): each still takes its own
    /// place in the pages, which breaks the ties.
    #[test]
    fn records_without_value_bytes_sort_stably() {
        #[derive(Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
        struct Key(u8, u32);
        impl PartialOrd for Key {
            fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Key {
            fn cmp(&self, o: &Self) -> CmpOrdering {
                self.0.cmp(&o.0)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = ExternalSorter::<Key, ()>::new(env(dir.path(), "1g"));
        let keys: Vec<Key> = (0..10_000u32).map(|i| Key((i % 3) as u8, i)).collect();
        for k in &keys {
            s.insert(k.clone(), ()).unwrap();
        }
        let out: Vec<Key> = s.into_sorted().unwrap().map(|r| r.unwrap().0).collect();
        let mut want = keys;
        want.sort(); // stable
        assert!(out == want, "ties among equal keys left insertion order");
    }

    /// An encoded key that is not one key's whole encoding, or a text key
    /// whose bytes are not UTF-8, is refused when inserted: never a panic or
    /// a wrong record.
    #[test]
    fn a_forged_encoded_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ExternalSorter::<String, u32>::new(env(dir.path(), "1g"));
        let v = crate::codec::encode("test", &1u32).unwrap();
        for forged in [&[][..], &[5, b'a'], &[1, b'a', b'b'], &[0xff; 11]] {
            let e = s.insert_raw(forged, &v).unwrap_err().to_string();
            assert!(e.contains("corrupt"), "{forged:?}: {e}");
        }
        // Text keys must be UTF-8; the same bytes are a byte key.
        let e = s.insert_raw(&[2, 0xff, 0xfe], &v).unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
        let mut b = ExternalSorter::<Vec<u8>, u32>::new(env(dir.path(), "1g"));
        b.insert_raw(&[2, 0xff, 0xfe], &v).unwrap();
        let out: Vec<(Vec<u8>, u32)> = b.into_sorted().unwrap().map(Result::unwrap).collect();
        assert_eq!(out, vec![(vec![0xff, 0xfe], 1)]);
        // A sorter of keys it keeps decoded takes no encoded key.
        let mut s = ExternalSorter::<u64, u32>::new(env(dir.path(), "1g"));
        assert!(s.raw_key_len().is_none());
        assert!(s.insert_raw(&[1], &v).is_err());
    }

    #[derive(Clone, Serialize, serde::Deserialize)]
    struct Sum;
    impl Aggregator<u64, u64> for Sum {
        fn create(&self, v: u64) -> u64 {
            v
        }
        fn merge_value(&self, c: u64, v: u64) -> u64 {
            c + v
        }
        fn merge_combiners(&self, c: u64, o: u64) -> u64 {
            c + o
        }
    }

    /// Short, empty and long words; about 40k distinct ones.
    fn word(i: u64) -> String {
        match i % 7 {
            0 => format!("a-long-word-past-twenty-three-bytes-{}", i % 501),
            1 => String::new(),
            // Inline keys of every word count: 8-12, 19 and 23 bytes.
            2 => format!("medium-{}", i % 20_011),
            3 => format!("nineteen-bytes-{:04}", i % 9_973),
            4 => format!("exactly-twenty-three-{:02}", i % 100),
            _ => format!("w{}", (i * 2_654_435_761) % 40_009),
        }
    }

    /// Feeds `(word(i), value(i))` for `i` below `n` to `map`, one record at
    /// a time or in batches of varying size (as a map task's pipeline hands
    /// them over).
    fn feed<K: Key + From<String>, V, C: Data, A: Aggregator<V, C>>(
        map: &mut ExternalAggregator<K, C>,
        agg: &A,
        n: u64,
        batched: bool,
        value: impl Fn(u64) -> V,
    ) {
        let mut batch = Vec::new();
        let mut size = 1;
        for i in 0..n {
            if !batched {
                map.insert_value(agg, K::from(word(i)), value(i)).unwrap();
                continue;
            }
            batch.push((K::from(word(i)), value(i)));
            if batch.len() >= size {
                map.insert_values(agg, &mut batch).unwrap();
                assert!(batch.is_empty());
                // Batches of 1 to 97 records, 64 (a pipeline's) among them.
                size = 1 + (size * 7 + i as usize) % 97;
            }
        }
        map.insert_values(agg, &mut batch).unwrap();
    }

    /// Word counts through the table as each key type, short keys inline and
    /// long ones not, with and without spills, against a plain map.
    fn count_words<K: Key + From<String> + AsRef<str>>(
        memory: &str,
        batched: bool,
    ) -> (Vec<(String, u64)>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path(), memory);
        let mut map = ExternalAggregator::<K, u64>::new(env.clone(), Some(Partitioner::Hash(3)));
        let agg = Sum;
        feed(&mut map, &agg, 60_000, batched, |_| 1u64);
        let mut last_group = 0;
        let mut out = Vec::new();
        for r in map.into_iter(&agg, true, false).unwrap() {
            let ((g, k), c) = r.unwrap();
            assert!(g >= last_group, "grouped output");
            last_group = g;
            assert_eq!(
                g as usize,
                Partitioner::Hash(3).partition(&k),
                "group of {}",
                k.as_ref()
            );
            out.push((k.as_ref().to_string(), c));
        }
        out.sort();
        (out, env.spill_count.load(Ordering::Relaxed))
    }

    #[test]
    fn string_keys_aggregate_exactly_inline_or_not() {
        let mut model = std::collections::BTreeMap::<String, u64>::new();
        for i in 0..60_000u64 {
            let w = word(i);
            *model.entry(w).or_default() += 1;
        }
        let model: Vec<(String, u64)> = model.into_iter().collect();
        for batched in [false, true] {
            let (s, spills) = count_words::<String>("1g", batched);
            assert_eq!(spills, 0);
            assert!(s == model, "String keys in memory, batched {batched}");
            let (s, spills) = count_words::<String>("1m", batched);
            assert!(spills > 0, "a 1 MiB budget spills");
            assert!(s == model, "String keys with spills, batched {batched}");
            let (c, _) = count_words::<compact_str::CompactString>("1m", batched);
            assert!(
                c == model,
                "CompactString keys with spills, batched {batched}"
            );
            let (w, _) = count_words::<Word>("1m", batched);
            assert!(w == model, "Word keys with spills, batched {batched}");
            let (w, _) = count_words::<Word>("1g", batched);
            assert!(w == model, "Word keys in memory, batched {batched}");
            let (n, _) = count_words::<Name>("1m", batched);
            assert!(n == model, "keys never held inline, batched {batched}");
        }
    }

    /// A string key of a type the table does not hold inline.
    #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
    struct Name(String);
    impl From<String> for Name {
        fn from(s: String) -> Name {
            Name(s)
        }
    }
    impl AsRef<str> for Name {
        fn as_ref(&self) -> &str {
            &self.0
        }
    }

    /// The aggregation table spills when what it holds reaches the budget,
    /// not well before (its slots grow by doubling; extrapolating that
    /// growth spilled at a quarter of the budget) and not well after.
    #[test]
    fn the_table_spills_at_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path(), "1m");
        assert_eq!(env.task_memory, 1 << 20);
        let mut map = ExternalAggregator::<String, u64>::new(env.clone(), None);
        let mut batch = Vec::new();
        let mut most = 0;
        for i in 0..400_000u64 {
            batch.push((format!("k{i}"), 1u64));
            if batch.len() == crate::rdd::BATCH {
                map.insert_values(&Sum, &mut batch).unwrap();
                most = most.max(map.len());
            }
        }
        map.insert_values(&Sum, &mut batch).unwrap();
        // 32-byte slots at most half full: a 1 MiB table holds 16,384 keys.
        assert!(
            (12_000..=16_384).contains(&most),
            "{most} keys held at most"
        );
        let spills = env.spill_count.load(Ordering::Relaxed);
        assert!((20..=40).contains(&spills), "{spills} spills");
        let out: Vec<_> = map
            .into_iter(&Sum, false, false)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(out.len(), 400_000);
        assert!(out.iter().all(|(_, c)| *c == 1));
    }

    /// A spill must bring the sorter back under its budget: the number of
    /// runs follows the data size, not the record count.
    #[test]
    fn spills_follow_the_data_size() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path(), "16m");
        let mut s = ExternalSorter::new(env.clone());
        let value = "v".repeat(100);
        for i in 0..300_000u32 {
            s.insert(i.wrapping_mul(2_654_435_761), value.clone())
                .unwrap();
        }
        // About 45 MiB held as pages and entries against a 16 MiB budget.
        let spills = env.spill_count.load(Ordering::Relaxed);
        assert!((2..=6).contains(&spills), "{spills} spills");
        let mut last = 0;
        let mut n = 0;
        for r in s.into_sorted().unwrap() {
            let (k, v) = r.unwrap();
            assert!(k >= last && v.len() == 100);
            last = k;
            n += 1;
        }
        assert_eq!(n, 300_000);
    }

    /// A budget smaller than 16 pages gets smaller pages: runs hold about
    /// the budget, not one page's worth of records each sampled insert.
    #[test]
    fn a_small_budget_gets_small_pages_and_few_runs() {
        let dir = tempfile::tempdir().unwrap();
        // (A task's share is 1 MiB at least: one full page.)
        let env = env(dir.path(), "256k");
        assert_eq!(env.task_memory, 1 << 20);
        let mut s = ExternalSorter::new(env.clone());
        // About 1.5 MB of values and entries: a handful of runs.
        for i in 0..40_000u32 {
            s.insert(i.wrapping_mul(2_654_435_761), format!("{i:>12}"))
                .unwrap();
        }
        let spills = env.spill_count.load(Ordering::Relaxed);
        assert!((2..=30).contains(&spills), "{spills} spills");
        let out: Vec<_> = s.into_sorted().unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(out.len(), 40_000);
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    /// Values larger than a page are counted when they come, and their pages
    /// are not counted again once let go.
    #[test]
    fn large_values_spill_and_are_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path(), "8m");
        let mut s = ExternalSorter::new(env.clone());
        for i in 0..200u32 {
            let len = if i % 2 == 0 { PAGE + 10 } else { 600_000 };
            let value = crate::bytes::Bytes(vec![7u8; len]);
            s.insert(i.wrapping_mul(2_654_435_761), value).unwrap();
            assert!(
                s.estimate() <= 8 * PAGE as u64 + 2 * (PAGE as u64 + 64),
                "{i}: {}",
                s.estimate()
            );
        }
        let spills = env.spill_count.load(Ordering::Relaxed);
        // About 160 MiB of values against 8 MiB: one run per 8 MiB or so.
        assert!((10..=40).contains(&spills), "{spills} spills");
        let out: Vec<_> = s.into_sorted().unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(out.len(), 200);
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[derive(Clone, Serialize, serde::Deserialize)]
    struct Gather;
    impl Aggregator<u64, Vec<u64>> for Gather {
        fn create(&self, v: u64) -> Vec<u64> {
            vec![v]
        }
        fn merge_value(&self, mut c: Vec<u64>, v: u64) -> Vec<u64> {
            c.push(v);
            c
        }
        fn merge_combiners(&self, mut c: Vec<u64>, o: Vec<u64>) -> Vec<u64> {
            c.extend(o);
            c
        }
    }

    /// Combiners with drop glue are taken out and put back (never cloned):
    /// every value lands once, in its key's list, inline keys or not, and in
    /// memory in the order the values came (batched or not).
    #[test]
    fn list_combiners_gather_every_value_once() {
        for (memory, batched) in [("1g", false), ("1g", true), ("1m", false), ("1m", true)] {
            let dir = tempfile::tempdir().unwrap();
            let env = env(dir.path(), memory);
            let mut map = ExternalAggregator::<String, Vec<u64>>::new(env.clone(), None);
            let mut model = std::collections::BTreeMap::<String, Vec<u64>>::new();
            feed(&mut map, &Gather, 60_000, batched, |i| i);
            for i in 0..60_000u64 {
                model.entry(word(i)).or_default().push(i);
            }
            let mut got: Vec<(String, Vec<u64>)> = map
                .into_iter(&Gather, false, false)
                .unwrap()
                .map(|r| {
                    let ((_, k), mut c) = r.unwrap();
                    // (Runs merged after a spill may interleave a key's values.)
                    if memory != "1g" {
                        c.sort_unstable();
                    }
                    (k, c)
                })
                .collect();
            got.sort();
            let want: Vec<(String, Vec<u64>)> = model.into_iter().collect();
            assert!(got == want, "lists differ at {memory}, batched {batched}");
            if memory == "1m" {
                assert!(env.spill_count.load(Ordering::Relaxed) > 0);
            }
        }
    }

    #[test]
    fn a_damaged_spill_is_an_error_not_fewer_records() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path(), "1m");
        let mut s = ExternalSorter::new(env.clone());
        for (k, v) in records(20_000) {
            s.insert(k, v).unwrap();
        }
        assert!(env.spill_count.load(Ordering::Relaxed) > 0);
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let p = f.unwrap().path();
            let len = std::fs::metadata(&p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }
        let r: Result<Vec<_>> = s.into_sorted().unwrap().collect();
        assert!(r.is_err(), "a truncated run must fail the sort");
    }
}
