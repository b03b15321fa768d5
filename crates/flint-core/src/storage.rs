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
}

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
        {
            let mut mem = self.memory.lock();
            let tick = self.clock.fetch_add(1, Ordering::Relaxed);
            if let Some(e) = mem.entries.get_mut(&id) {
                e.last_use = tick;
                if let Ok(v) = e.value.clone().downcast::<Vec<T>>() {
                    return Ok(Some(v));
                }
            }
        }
        let Some(block) = self.disk.lock().get(&id).cloned() else {
            return Ok(None);
        };
        match read_records(&block, self.compression) {
            Ok(v) => Ok(Some(Arc::new(v))),
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
                }
                Ok(None)
            }
        }
    }

    /// The cached partition `id`, or `compute`d and stored at `level` under the
    /// block's write lock: a task that finds another computing the same block
    /// waits for it and reads its result instead of computing it again.
    /// `cacheable` is asked after computing: a partial partition is never stored.
    pub fn get_or_compute<T: Data>(
        &self,
        id: BlockId,
        level: StorageLevel,
        compute: impl FnOnce() -> Result<Vec<T>>,
        cacheable: impl FnOnce() -> bool,
    ) -> Result<Arc<Vec<T>>> {
        if let Some(v) = self.get_cached::<T>(id)? {
            return Ok(v);
        }
        let lock = self.writing.lock().entry(id).or_default().clone();
        let result = {
            let _w = lock.lock();
            match self.get_cached::<T>(id)? {
                Some(v) => Ok(v),
                None => compute().and_then(|v| {
                    let v = Arc::new(v);
                    if cacheable() {
                        self.put_cached(id, v.clone(), level)?;
                    }
                    Ok(v)
                }),
            }
        };
        let mut writing = self.writing.lock();
        // The map's copy and ours: nobody else waits, so the lock can go.
        if Arc::strong_count(&lock) == 2 {
            writing.remove(&id);
        }
        result
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
                            Ok(v) => write_records(&v, p, c),
                            Err(_) => Ok(0),
                        }
                    }) as ToDisk
                });
                self.insert_memory(id, values, size, to_disk)?;
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
        let len = write_records(values, &path, self.compression)?;
        self.disk.lock().insert(id, DiskBlock { path, len });
        Ok(())
    }
}

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Writes `values` to a temporary name unique to this write, then renames it
/// into place, so a reader never sees a half-written file and two writers of one
/// block never share a file. Returns the bytes written.
fn write_records<T: Data>(values: &[T], path: &std::path::Path, c: Compression) -> Result<u64> {
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
    let write = || -> Result<u64> {
        let f =
            File::create(&tmp).map_err(|e| FlintError::io("cannot create block file", &tmp, e))?;
        let mut w = FrameWriter::new(BufWriter::new(f), c);
        for v in values {
            w.write(v)?;
        }
        let len = w.finish_segment()?;
        w.into_inner()?;
        std::fs::rename(&tmp, path)
            .map_err(|e| FlintError::io("cannot commit block file", path, e))?;
        Ok(len)
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

fn read_records<T: Data>(block: &DiskBlock, c: Compression) -> Result<Vec<T>> {
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
    let mut r = FrameReader::<_, T>::new(BufReader::new(f), c, block.len);
    let mut out = Vec::new();
    while let Some(v) = r.next_record()? {
        out.push(v);
    }
    Ok(out)
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
                                Ok((0..1000u32).collect::<Vec<u32>>())
                            },
                            || true,
                        )
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().len(), 1000);
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
}
