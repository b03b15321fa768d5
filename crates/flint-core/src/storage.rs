//! Block storage on an executor (Spark's BlockManager, memory and disk stores).
//!
//! Holds values the driver placed for tasks (parallelized collections' slices,
//! broadcast values) and cached RDD partitions. Cached partitions live in memory
//! within `flint.storage.memory` (least recently used evicted first), and for the
//! `*_AND_DISK` levels are written to disk instead of being dropped; `DISK_ONLY`
//! goes straight to disk. A block that is gone, or whose file is missing, short
//! or corrupt, is recomputed from lineage. Disk blocks are written to a unique
//! temporary name and renamed into place, and a per-block write lock (Spark's
//! BlockInfoManager) lets one task compute a missing block while others wait for
//! it, so speculative copies and concurrent jobs neither corrupt nor duplicate it.

use std::any::Any;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::env::Compression;
use crate::error::{FlintError, Result};
use crate::func::Data;
use crate::shuffle::{FrameReader, FrameWriter};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockId {
    /// Slice `slice` of the parallelized collection RDD `rdd`.
    ParallelSlice {
        rdd: usize,
        slice: usize,
    },
    Broadcast {
        id: usize,
    },
    /// A cached partition of an RDD.
    Rdd {
        rdd: usize,
        split: usize,
    },
}

/// Where cached partitions are kept (Spark's StorageLevel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StorageLevel {
    None,
    MemoryOnly,
    MemoryAndDisk,
    DiskOnly,
}

impl StorageLevel {
    pub const MEMORY_ONLY: StorageLevel = StorageLevel::MemoryOnly;
    pub const MEMORY_AND_DISK: StorageLevel = StorageLevel::MemoryAndDisk;
    pub const DISK_ONLY: StorageLevel = StorageLevel::DiskOnly;
    pub const NONE: StorageLevel = StorageLevel::None;

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => StorageLevel::MemoryOnly,
            2 => StorageLevel::MemoryAndDisk,
            3 => StorageLevel::DiskOnly,
            _ => StorageLevel::None,
        }
    }

    fn use_memory(self) -> bool {
        matches!(self, StorageLevel::MemoryOnly | StorageLevel::MemoryAndDisk)
    }

    fn use_disk(self) -> bool {
        matches!(self, StorageLevel::MemoryAndDisk | StorageLevel::DiskOnly)
    }
}

type Block = Arc<dyn Any + Send + Sync>;
/// Writes a memory block to disk when it is evicted (knows the element type);
/// returns the bytes written.
type ToDisk = Box<dyn Fn(&Block, &std::path::Path, Compression) -> Result<u64> + Send + Sync>;

/// A block on disk: its file and the bytes of frames written to it.
#[derive(Clone)]
struct DiskBlock {
    path: PathBuf,
    len: u64,
}

struct MemEntry {
    value: Block,
    size: u64,
    last_use: u64,
    to_disk: Option<ToDisk>,
    /// Encodes the records as frames, to serve them to another executor.
    encode: Option<EncodeFn>,
}

type EncodeFn = Arc<dyn Fn(&Block, Compression) -> Result<Vec<u8>> + Send + Sync>;

#[derive(Default)]
struct MemoryStore {
    entries: HashMap<BlockId, MemEntry>,
    used: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub memory_blocks: usize,
    pub memory_bytes: u64,
    pub disk_blocks: usize,
    pub evictions: u64,
}

pub struct BlockStore {
    /// Driver-placed blocks (slices, broadcasts): never evicted.
    pinned: RwLock<HashMap<BlockId, Block>>,
    memory: Mutex<MemoryStore>,
    disk: Mutex<HashMap<BlockId, DiskBlock>>,
    /// Per-block write locks of blocks being computed.
    writing: Mutex<HashMap<BlockId, Arc<Mutex<()>>>>,
    capacity: u64,
    dir: Option<PathBuf>,
    compression: Compression,
    clock: AtomicU64,
    evictions: AtomicU64,
    /// Bumped whenever the set of cached blocks may have changed, so a cluster
    /// executor reports its blocks to the driver only after a change.
    generation: AtomicU64,
}

impl Default for BlockStore {
    fn default() -> Self {
        BlockStore::new(u64::MAX, None, Compression::Lz4)
    }
}

impl BlockStore {
    pub fn new(capacity: u64, dir: Option<PathBuf>, compression: Compression) -> Self {
        BlockStore {
            pinned: RwLock::default(),
            memory: Mutex::default(),
            disk: Mutex::default(),
            writing: Mutex::default(),
            capacity,
            dir,
            compression,
            clock: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    pub fn put(&self, id: BlockId, value: Block) {
        self.pinned.write().insert(id, value);
    }

    pub fn get<T: Send + Sync + 'static>(&self, id: BlockId) -> Option<Arc<T>> {
        let b = self.pinned.read().get(&id).cloned()?;
        b.downcast::<T>().ok()
    }

    pub fn remove_where(&self, pred: impl Fn(&BlockId) -> bool) {
        self.pinned.write().retain(|k, _| !pred(k));
        let mut mem = self.memory.lock();
        let gone: Vec<BlockId> = mem.entries.keys().filter(|k| pred(k)).copied().collect();
        for k in gone {
            if let Some(e) = mem.entries.remove(&k) {
                mem.used -= e.size;
            }
        }
        drop(mem);
        let mut disk = self.disk.lock();
        disk.retain(|k, b| {
            let drop_it = pred(k);
            if drop_it {
                let _ = std::fs::remove_file(&b.path);
            }
            !drop_it
        });
        self.changed();
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The cached RDD partitions (memory or disk), with the generation they
    /// were read at (see `generation`).
    pub fn cached_rdd_blocks(&self) -> (u64, Vec<(usize, usize)>) {
        let generation = self.generation.load(Ordering::Relaxed);
        let mut out: Vec<(usize, usize)> = self
            .memory
            .lock()
            .entries
            .keys()
            .chain(self.disk.lock().keys())
            .filter_map(|b| match b {
                BlockId::Rdd { rdd, split } => Some((*rdd, *split)),
                _ => None,
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        (generation, out)
    }

    /// A cached partition as frames (what a `FrameReader` reads back), to
    /// serve it to another executor: None if it is not cached here.
    pub fn encoded_block(&self, id: BlockId) -> Option<Result<Vec<u8>>> {
        let mem = self
            .memory
            .lock()
            .entries
            .get(&id)
            .map(|e| (e.value.clone(), e.encode.clone()));
        if let Some((value, Some(encode))) = mem {
            return Some(encode(&value, self.compression));
        }
        let disk = self.disk.lock().get(&id).cloned()?;
        Some(
            std::fs::read(&disk.path)
                .map_err(|e| FlintError::io("cannot read block file", &disk.path, e))
                .and_then(|b| {
                    if b.len() as u64 == disk.len {
                        Ok(b)
                    } else {
                        Err(FlintError::Codec {
                            what: "cached block",
                            reason: format!("{} is short", disk.path.display()),
                        })
                    }
                }),
        )
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Changes whenever the cached set may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> StorageStats {
        let mem = self.memory.lock();
        StorageStats {
            memory_blocks: mem.entries.len(),
            memory_bytes: mem.used,
            disk_blocks: self.disk.lock().len(),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// Whether a cached copy of the block exists (memory or disk).
    pub fn contains(&self, id: BlockId) -> bool {
        self.memory.lock().entries.contains_key(&id) || self.disk.lock().contains_key(&id)
    }

    /// A cached partition, from memory or disk. A disk block whose file is
    /// missing, short or corrupt is dropped (and logged): the caller recomputes it.
    pub fn get_cached<T: Data>(&self, id: BlockId) -> Result<Option<Arc<Vec<T>>>> {
        match self.get_stream::<T>(id)? {
            Some(Cached::Memory(v)) => Ok(Some(v)),
            Some(Cached::Disk(it)) => Ok(Some(Arc::new(it.collect::<Result<Vec<T>>>()?))),
            None => Ok(None),
        }
    }

    /// A cached partition: the shared vector in memory, or a stream of records
    /// read from disk frame by frame. A disk block's frames are all checked
    /// (lengths and checksums, no decoding) before it is trusted, so a damaged
    /// block is dropped and recomputed rather than failing a task halfway.
    fn get_stream<T: Data>(&self, id: BlockId) -> Result<Option<Cached<T>>> {
        {
            let mut mem = self.memory.lock();
            let tick = self.clock.fetch_add(1, Ordering::Relaxed);
            if let Some(e) = mem.entries.get_mut(&id) {
                e.last_use = tick;
                if let Ok(v) = e.value.clone().downcast::<Vec<T>>() {
                    return Ok(Some(Cached::Memory(v)));
                }
            }
        }
        let Some(block) = self.disk.lock().get(&id).cloned() else {
            return Ok(None);
        };
        let opened = open_block::<T>(&block, self.compression)
            .and_then(|r| r.verify())
            .and_then(|()| open_block::<T>(&block, self.compression));
        match opened {
            Ok(mut r) => Ok(Some(Cached::Disk(Box::new(std::iter::from_fn(
                move || r.next_record().transpose(),
            ))))),
            Err(e) => {
                tracing::warn!(
                    "cached block {id:?} is unreadable and will be recomputed from lineage: {e}"
                );
                let mut disk = self.disk.lock();
                // Drop the entry only if no writer replaced it meanwhile.
                if disk
                    .get(&id)
                    .is_some_and(|b| b.path == block.path && b.len == block.len)
                {
                    disk.remove(&id);
                    let _ = std::fs::remove_file(&block.path);
                    self.changed();
                }
                Ok(None)
            }
        }
    }

    /// The cached partition `id` as a stream of records, or `compute`d and
    /// stored at `level` under the block's write lock: a task that finds another
    /// computing the same block waits for it and reads its result instead of
    /// computing it again. As Spark's `getOrElseUpdate`: memory levels unroll the
    /// records while they fit in storage memory (MEMORY_ONLY passes a partition
    /// that does not fit through uncached; MEMORY_AND_DISK writes it to disk),
    /// DISK_ONLY streams records to disk as they are computed and reads them
    /// back as a stream, so no level holds a disk block's partition in memory.
    /// `cacheable` is asked after computing: a partial partition is never stored.
    pub fn get_or_compute<T: Data>(
        &self,
        id: BlockId,
        level: StorageLevel,
        compute: impl FnOnce() -> Result<crate::rdd::BoxIter<T>>,
        cacheable: impl Fn() -> bool,
    ) -> Result<RecordIter<T>> {
        if let Some(c) = self.get_stream::<T>(id)? {
            return Ok(c.records());
        }
        let lock = self.writing.lock().entry(id).or_default().clone();
        let result = {
            let _w = lock.lock();
            match self.get_stream::<T>(id) {
                Ok(Some(c)) => Ok(c.records()),
                Ok(None) => compute().and_then(|it| self.store(id, level, it, &cacheable)),
                Err(e) => Err(e),
            }
        };
        let mut writing = self.writing.lock();
        // The map's copy and ours: nobody else waits, so the lock can go.
        if Arc::strong_count(&lock) == 2 {
            writing.remove(&id);
        }
        result
    }

    fn store<T: Data>(
        &self,
        id: BlockId,
        level: StorageLevel,
        mut it: crate::rdd::BoxIter<T>,
        cacheable: &dyn Fn() -> bool,
    ) -> Result<RecordIter<T>> {
        if level.use_memory() {
            let mut unrolled = Vec::new();
            let mut sizer = Unroll::default();
            let mut fits = true;
            for x in it.by_ref() {
                let over = sizer.add(&x) > self.capacity;
                unrolled.push(x);
                if over {
                    fits = false;
                    break;
                }
            }
            if fits {
                let v = Arc::new(unrolled);
                if cacheable() {
                    self.put_cached(id, v.clone(), level)?;
                }
                return Ok(Cached::Memory(v).records());
            }
            if !level.use_disk() {
                tracing::info!(
                    "block {id:?} is larger than storage memory ({} bytes); not cached",
                    self.capacity
                );
                return Ok(Box::new(unrolled.into_iter().chain(it).map(Ok)));
            }
            return self.stream_to_disk(id, unrolled.into_iter().chain(it), cacheable);
        }
        if level.use_disk() {
            return self.stream_to_disk(id, it, cacheable);
        }
        Ok(Box::new(it.map(Ok)))
    }

    /// Writes records to the block's file as they come, then reads them back as
    /// a stream.
    fn stream_to_disk<T: Data>(
        &self,
        id: BlockId,
        it: impl Iterator<Item = T> + 'static,
        cacheable: &dyn Fn() -> bool,
    ) -> Result<RecordIter<T>> {
        let Some(path) = self.block_path(id) else {
            // No block directory: nothing is cached, records pass through.
            return Ok(Box::new(it.map(Ok)));
        };
        match write_records(it, &path, self.compression, cacheable)? {
            Some(len) => {
                let block = DiskBlock { path, len };
                let mut r = open_block::<T>(&block, self.compression)?;
                self.disk.lock().insert(id, block);
                self.changed();
                Ok(Box::new(std::iter::from_fn(move || {
                    r.next_record().transpose()
                })))
            }
            // The computation recorded an error: the task fails with it.
            None => Ok(Box::new(std::iter::empty())),
        }
    }

    /// Stores a computed partition at `level`. A partition larger than the whole
    /// memory budget goes to disk (or is not cached, for MEMORY_ONLY).
    pub fn put_cached<T: Data>(
        &self,
        id: BlockId,
        values: Arc<Vec<T>>,
        level: StorageLevel,
    ) -> Result<()> {
        if level.use_memory() {
            let size = estimate_size(&values);
            if size <= self.capacity {
                let to_disk: Option<ToDisk> = level.use_disk().then(|| {
                    Box::new(|b: &Block, p: &std::path::Path, c: Compression| {
                        match b.clone().downcast::<Vec<T>>() {
                            Ok(v) => Ok(write_records(v.iter(), p, c, &|| true)?.unwrap_or(0)),
                            Err(_) => Ok(0),
                        }
                    }) as ToDisk
                });
                let encode: EncodeFn = Arc::new(|b: &Block, c: Compression| {
                    let v = b
                        .clone()
                        .downcast::<Vec<T>>()
                        .map_err(|_| FlintError::Codec {
                            what: "cached block",
                            reason: "not of the RDD's type".into(),
                        })?;
                    let mut w = crate::shuffle::FrameWriter::new(Vec::new(), c);
                    for x in v.iter() {
                        w.write(x)?;
                    }
                    w.finish_segment()?;
                    w.into_inner()
                });
                self.insert_memory(id, values, size, to_disk, Some(encode))?;
                return Ok(());
            }
        }
        if level.use_disk() {
            self.write_disk(id, &values)?;
        }
        Ok(())
    }

    fn insert_memory(
        &self,
        id: BlockId,
        value: Block,
        size: u64,
        to_disk: Option<ToDisk>,
        encode: Option<EncodeFn>,
    ) -> Result<()> {
        let mut evicted = Vec::new();
        {
            let mut mem = self.memory.lock();
            if let Some(old) = mem.entries.remove(&id) {
                mem.used -= old.size;
            }
            while mem.used + size > self.capacity && !mem.entries.is_empty() {
                let victim = mem
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_use)
                    .map(|(k, _)| *k)
                    .expect("non-empty");
                if let Some(e) = mem.entries.remove(&victim) {
                    mem.used -= e.size;
                    evicted.push((victim, e));
                }
            }
            let tick = self.clock.fetch_add(1, Ordering::Relaxed);
            mem.entries.insert(
                id,
                MemEntry {
                    value,
                    size,
                    last_use: tick,
                    to_disk,
                    encode,
                },
            );
            mem.used += size;
        }
        for (vid, e) in evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("evicted cached block {vid:?} ({} bytes)", e.size);
            if let (Some(f), Some(path)) = (&e.to_disk, self.block_path(vid)) {
                let len = f(&e.value, &path, self.compression)?;
                self.disk.lock().insert(vid, DiskBlock { path, len });
            }
        }
        self.changed();
        Ok(())
    }

    fn block_path(&self, id: BlockId) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(match id {
            BlockId::Rdd { rdd, split } => dir.join(format!("rdd_{rdd}_{split}")),
            BlockId::Broadcast { id } => dir.join(format!("broadcast_{id}")),
            BlockId::ParallelSlice { rdd, slice } => dir.join(format!("slice_{rdd}_{slice}")),
        })
    }

    fn write_disk<T: Data>(&self, id: BlockId, values: &[T]) -> Result<()> {
        let Some(path) = self.block_path(id) else {
            return Ok(());
        };
        if let Some(len) = write_records(values.iter(), &path, self.compression, &|| true)? {
            self.disk.lock().insert(id, DiskBlock { path, len });
            self.changed();
        }
        Ok(())
    }
}

/// Records of a cached block, as `get_or_compute` returns them.
pub type RecordIter<T> = Box<dyn Iterator<Item = Result<T>>>;

enum Cached<T> {
    Memory(Arc<Vec<T>>),
    Disk(RecordIter<T>),
}

impl<T: Data> Cached<T> {
    fn records(self) -> RecordIter<T> {
        match self {
            Cached::Memory(v) => Box::new((0..v.len()).map(move |i| Ok(v[i].clone()))),
            Cached::Disk(it) => it,
        }
    }
}

/// Running size estimate of records being unrolled into memory: the encoded
/// size of every 32nd record plus its in-memory size.
#[derive(Default)]
struct Unroll {
    n: u64,
    avg: f64,
    scratch: Vec<u8>,
}

impl Unroll {
    /// Counts `x`; returns the estimated bytes so far.
    fn add<T: Data>(&mut self, x: &T) -> u64 {
        if self.n.is_multiple_of(32) {
            self.scratch.clear();
            if crate::codec::encode_into("size sample", x, &mut self.scratch).is_ok() {
                let s = (self.scratch.len() + std::mem::size_of::<T>()) as f64;
                self.avg = if self.n == 0 {
                    s
                } else {
                    self.avg * 0.9 + s * 0.1
                };
            }
        }
        self.n += 1;
        (self.avg * self.n as f64) as u64
    }
}

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Writes records to a temporary name unique to this write, then, if
/// `commit()` still says so once they are all written, renames it into place
/// (else removes it), so a reader never sees a half-written file and two writers
/// of one block never share a file. Returns the bytes written, None if not
/// committed.
fn write_records<T: serde::Serialize>(
    values: impl Iterator<Item = T>,
    path: &std::path::Path,
    c: Compression,
    commit: &dyn Fn() -> bool,
) -> Result<Option<u64>> {
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
    let write = || -> Result<Option<u64>> {
        let f =
            File::create(&tmp).map_err(|e| FlintError::io("cannot create block file", &tmp, e))?;
        let mut w = FrameWriter::new(BufWriter::new(f), c);
        for v in values {
            w.write(&v)?;
        }
        let len = w.finish_segment()?;
        w.into_inner()?;
        if !commit() {
            let _ = std::fs::remove_file(&tmp);
            return Ok(None);
        }
        std::fs::rename(&tmp, path)
            .map_err(|e| FlintError::io("cannot commit block file", path, e))?;
        Ok(Some(len))
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// A reader of a disk block, after checking the file holds exactly the bytes
/// written.
fn open_block<T: Data>(
    block: &DiskBlock,
    c: Compression,
) -> Result<FrameReader<BufReader<File>, T>> {
    let path = &block.path;
    let f = File::open(path).map_err(|e| FlintError::io("cannot open block file", path, e))?;
    let size = f
        .metadata()
        .map_err(|e| FlintError::io("cannot stat block file", path, e))?
        .len();
    if size != block.len {
        return Err(FlintError::Codec {
            what: "cached block",
            reason: format!(
                "{} holds {size} bytes, {} were written",
                path.display(),
                block.len
            ),
        });
    }
    Ok(FrameReader::new(
        BufReader::with_capacity(128 << 10, f),
        c,
        block.len,
    ))
}

/// Size of a partition in memory, estimated from the encoded size of a sample of
/// its elements plus a per-element overhead.
fn estimate_size<T: Data>(values: &[T]) -> u64 {
    if values.is_empty() {
        return 64;
    }
    let step = (values.len() / 64).max(1);
    let mut sampled = 0u64;
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    for v in values.iter().step_by(step) {
        buf.clear();
        if crate::codec::encode_into("size sample", v, &mut buf).is_ok() {
            bytes += buf.len() as u64;
            sampled += 1;
        }
    }
    let per = bytes as f64 / sampled.max(1) as f64 + std::mem::size_of::<T>() as f64;
    (per * values.len() as f64) as u64 + 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_eviction_and_disk_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::new(20_000, Some(dir.path().to_path_buf()), Compression::Lz4);
        let block = |n: u64| Arc::new((0..1000).map(|i| i + n).collect::<Vec<u64>>());
        let id = |split| BlockId::Rdd { rdd: 1, split };
        store
            .put_cached(id(0), block(0), StorageLevel::MemoryAndDisk)
            .unwrap();
        store
            .put_cached(id(1), block(1), StorageLevel::MemoryOnly)
            .unwrap();
        // Touch block 0 so block 1 is the least recently used.
        assert!(store.get_cached::<u64>(id(0)).unwrap().is_some());
        store
            .put_cached(id(2), block(2), StorageLevel::MemoryOnly)
            .unwrap();
        let st = store.stats();
        assert!(st.evictions >= 1, "{st:?}");
        assert!(st.memory_bytes <= 20_000, "{st:?}");
        // MEMORY_ONLY block 1 was dropped; block 2 and 0 (memory or disk) survive.
        assert!(store.get_cached::<u64>(id(1)).unwrap().is_none());
        assert_eq!(store.get_cached::<u64>(id(2)).unwrap().unwrap()[0], 2);
        assert_eq!(store.get_cached::<u64>(id(0)).unwrap().unwrap()[999], 999);
        store
            .put_cached(id(3), block(3), StorageLevel::DiskOnly)
            .unwrap();
        assert_eq!(store.stats().disk_blocks.max(1), store.stats().disk_blocks);
        assert_eq!(store.get_cached::<u64>(id(3)).unwrap().unwrap()[5], 8);
        store.remove_where(|b| matches!(b, BlockId::Rdd { rdd: 1, .. }));
        assert!(!store.contains(id(3)) && !store.contains(id(0)));
    }

    fn disk_block_file(store: &BlockStore, id: BlockId) -> PathBuf {
        store.disk.lock()[&id].path.clone()
    }

    #[test]
    fn a_missing_short_or_damaged_disk_block_is_dropped_for_recomputation() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::new(1 << 20, Some(dir.path().to_path_buf()), Compression::Lz4);
        let id = BlockId::Rdd { rdd: 4, split: 0 };
        let block = Arc::new((0..60_000u64).map(|i| i << 20).collect::<Vec<u64>>());
        type Damage = fn(&std::path::Path);
        let damages: [(&str, Damage); 4] = [
            ("deleted", |p| std::fs::remove_file(p).unwrap()),
            ("truncated", |p| {
                let len = std::fs::metadata(p).unwrap().len();
                let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                f.set_len(len / 2).unwrap();
            }),
            ("cut at a frame boundary", |p| {
                // Keep only the first frame (header + stored bytes).
                let bytes = std::fs::read(p).unwrap();
                let stored = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
                std::fs::write(p, &bytes[..crate::shuffle::frames::HEADER + stored]).unwrap();
            }),
            ("flipped", |p| {
                let mut bytes = std::fs::read(p).unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x10;
                std::fs::write(p, bytes).unwrap();
            }),
        ];
        for (what, damage) in damages {
            store
                .put_cached(id, block.clone(), StorageLevel::DiskOnly)
                .unwrap();
            assert_eq!(store.get_cached::<u64>(id).unwrap().unwrap(), block);
            damage(&disk_block_file(&store, id));
            assert!(
                store.get_cached::<u64>(id).unwrap().is_none(),
                "a {what} block is not returned"
            );
            assert_eq!(store.stats().disk_blocks, 0, "a {what} block is forgotten");
        }
    }

    #[test]
    fn one_task_computes_a_missing_block_while_the_others_wait_for_it() {
        use std::sync::atomic::AtomicUsize;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlockStore::new(
            1 << 20,
            Some(dir.path().to_path_buf()),
            Compression::Lz4,
        ));
        let id = BlockId::Rdd { rdd: 9, split: 1 };
        let entered = Arc::new(AtomicUsize::new(0));
        let computed = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (store, entered, computed) = (store.clone(), entered.clone(), computed.clone());
                std::thread::spawn(move || {
                    entered.fetch_add(1, Ordering::SeqCst);
                    store
                        .get_or_compute(
                            id,
                            StorageLevel::DiskOnly,
                            || {
                                computed.fetch_add(1, Ordering::SeqCst);
                                // Hold the block until every thread has asked for it
                                // (bounded), so the others meet a block in progress.
                                let deadline =
                                    std::time::Instant::now() + std::time::Duration::from_secs(5);
                                while entered.load(Ordering::SeqCst) < 4
                                    && std::time::Instant::now() < deadline
                                {
                                    std::thread::yield_now();
                                }
                                Ok(Box::new(0..1000u32) as crate::rdd::BoxIter<u32>)
                            },
                            || true,
                        )
                        .unwrap()
                        .collect::<Result<Vec<u32>>>()
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), (0..1000).collect::<Vec<u32>>());
        }
        assert_eq!(
            computed.load(Ordering::SeqCst),
            1,
            "computed once, read by the rest"
        );
        assert!(store.writing.lock().is_empty(), "write locks are released");
        // Only the committed file is left: no temporary names.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["rdd_9_1".to_string()]);
    }

    #[test]
    fn disk_levels_stream_and_memory_only_passes_big_partitions_through() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB of storage memory.
        let store = BlockStore::new(64 << 10, Some(dir.path().to_path_buf()), Compression::Lz4);
        let big = || Ok(Box::new((0..200_000u64).map(|i| i * 7)) as crate::rdd::BoxIter<u64>);
        let want: Vec<u64> = (0..200_000u64).map(|i| i * 7).collect();
        let get = |id, level| -> Vec<u64> {
            store
                .get_or_compute(id, level, big, || true)
                .unwrap()
                .collect::<Result<_>>()
                .unwrap()
        };
        let disk = BlockId::Rdd { rdd: 1, split: 0 };
        assert_eq!(get(disk, StorageLevel::DiskOnly), want);
        assert!(store.disk.lock().contains_key(&disk));
        assert_eq!(
            store.stats().memory_blocks,
            0,
            "DISK_ONLY never lands in memory"
        );
        let both = BlockId::Rdd { rdd: 2, split: 0 };
        assert_eq!(get(both, StorageLevel::MemoryAndDisk), want);
        assert!(
            store.disk.lock().contains_key(&both),
            "too big for memory: on disk"
        );
        let mem = BlockId::Rdd { rdd: 3, split: 0 };
        assert_eq!(get(mem, StorageLevel::MemoryOnly), want);
        assert!(!store.contains(mem), "too big and MEMORY_ONLY: not cached");
        // Served from the cache the second time (compute would panic).
        let again: Vec<u64> = store
            .get_or_compute(
                disk,
                StorageLevel::DiskOnly,
                || -> Result<crate::rdd::BoxIter<u64>> { panic!("recomputed") },
                || true,
            )
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(again, want);
        // A computation that recorded an error stores nothing.
        let bad = BlockId::Rdd { rdd: 4, split: 0 };
        let _ = store
            .get_or_compute(bad, StorageLevel::DiskOnly, big, || false)
            .unwrap()
            .count();
        assert!(!store.contains(bad));
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2, "two committed blocks, no temporary files");
    }
}
