//! RDDs that read data: driver collections, number ranges and files.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{BoxIter, Dependency, RddBase, RddNode, Sink, push_iter, shippable};
use crate::bytes::Bytes;
use crate::env::TaskContext;
use crate::error::{FlintError, Result};
use crate::func::Data;
use crate::storage::BlockId;

/// A driver collection cut into slices. The slices live in the block store, not
/// in the node, so a task carries only the RDD id.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ParallelCollectionRdd<T: Data> {
    pub(crate) id: usize,
    pub(crate) slices: usize,
    #[serde(skip)]
    pub(crate) _p: super::Ph<T>,
}

impl<T: Data> RddBase for ParallelCollectionRdd<T> {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "ParallelCollectionRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.slices
    }
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
}

impl<T: Data> RddNode for ParallelCollectionRdd<T> {
    type Item = T;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<T>> {
        let data: Arc<Vec<T>> = tc
            .env
            .blocks
            .get(BlockId::ParallelSlice {
                rdd: self.id,
                slice: split,
            })
            .ok_or_else(|| {
                FlintError::InvalidArgument(format!(
                    "slice {split} of parallelized collection {} is not on this executor",
                    self.id
                ))
            })?;
        Ok(Box::new((0..data.len()).map(move |i| data[i].clone())))
    }
    shippable!();
}

/// Cuts `data` into `n` contiguous slices as Spark's `ParallelCollectionRDD.slice`.
pub(crate) fn slice_vec<T>(mut data: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let len = data.len();
    let mut out = Vec::with_capacity(n);
    // Split from the back so each `split_off` is a cheap move of the tail.
    let bounds: Vec<(usize, usize)> = (0..n).map(|i| (i * len / n, (i + 1) * len / n)).collect();
    for &(start, _) in bounds.iter().rev() {
        out.push(data.split_off(start));
    }
    out.reverse();
    out
}

/// `range(start, end, step, slices)`: the numbers start, start+step, ... < end.
#[derive(Serialize, Deserialize)]
pub struct RangeRdd {
    pub(crate) id: usize,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
    pub(crate) slices: usize,
}

impl RangeRdd {
    pub(crate) fn count(&self) -> u64 {
        if (self.step > 0 && self.start >= self.end) || (self.step < 0 && self.start <= self.end) {
            return 0;
        }
        let span = (self.end as i128 - self.start as i128).unsigned_abs();
        let step = (self.step as i128).unsigned_abs();
        span.div_ceil(step) as u64
    }
}

impl RddBase for RangeRdd {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "RangeRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.slices
    }
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
}

impl RddNode for RangeRdd {
    type Item = i64;
    fn compute(&self, split: usize, _tc: &TaskContext) -> Result<BoxIter<i64>> {
        let n = self.count() as u128;
        let s = self.slices as u128;
        let lo = (split as u128 * n / s) as i64;
        let hi = ((split as u128 + 1) * n / s) as i64;
        let (start, step) = (self.start, self.step);
        Ok(Box::new((lo..hi).map(move |i| start + i * step)))
    }
    shippable!();
}

/// Expands a path, directory or glob into the files to read, skipping hidden
/// files and Hadoop-style markers (`_SUCCESS`, `.crc`) inside directories.
pub(crate) fn list_files(path: &str) -> Result<Vec<PathBuf>> {
    let p = Path::new(path);
    let mut out = Vec::new();
    if p.is_dir() {
        let rd = std::fs::read_dir(p).map_err(|e| FlintError::io("cannot list directory", p, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| FlintError::io("cannot list directory", p, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if entry.path().is_file() {
                out.push(entry.path());
            }
        }
    } else if p.is_file() {
        out.push(p.to_path_buf());
    } else if path.contains(['*', '?', '[']) {
        let entries = glob::glob(path)
            .map_err(|e| FlintError::InvalidArgument(format!("bad glob pattern '{path}': {e}")))?;
        for e in entries.flatten() {
            if e.is_file() {
                out.push(e);
            } else if e.is_dir() {
                out.extend(list_files(&e.to_string_lossy())?);
            }
        }
    } else {
        return Err(FlintError::InvalidArgument(format!(
            "Input path does not exist: {path}"
        )));
    }
    if out.is_empty() && !p.is_dir() {
        return Err(FlintError::InvalidArgument(format!(
            "Input pattern {path} matches 0 files"
        )));
    }
    out.sort();
    Ok(out)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileSplit {
    pub path: PathBuf,
    pub start: u64,
    pub len: u64,
}

/// Hadoop's rule: split size = max(1, min(total / min_partitions, block size)),
/// with the local file system's 32 MiB block size; the last piece of a file may be
/// up to 10% larger than the split size rather than leave a sliver.
pub(crate) fn compute_splits(
    files: &[PathBuf],
    min_partitions: usize,
    align: u64,
) -> Result<Vec<FileSplit>> {
    let mut sizes = Vec::with_capacity(files.len());
    for f in files {
        let md = std::fs::metadata(f).map_err(|e| FlintError::io("cannot stat", f, e))?;
        sizes.push(md.len());
    }
    let total: u64 = sizes.iter().sum();
    let goal = total / min_partitions.max(1) as u64;
    let block = 32u64 << 20;
    let mut split = goal.clamp(1, block);
    if align > 1 {
        split = split.div_ceil(align) * align;
    }
    let mut out = Vec::new();
    for (f, &size) in files.iter().zip(&sizes) {
        let mut start = 0;
        while size - start > split + split / 10 {
            out.push(FileSplit {
                path: f.clone(),
                start,
                len: split,
            });
            start += split;
        }
        if size > start || size == 0 {
            out.push(FileSplit {
                path: f.clone(),
                start,
                len: size - start,
            });
        }
    }
    Ok(out)
}

fn open_at(path: &Path, pos: u64) -> Result<File> {
    let mut f = File::open(path).map_err(|e| FlintError::io("cannot open", path, e))?;
    f.seek(SeekFrom::Start(pos))
        .map_err(|e| FlintError::io("cannot seek in", path, e))?;
    Ok(f)
}

/// Lines of text files; a line belongs to the split in which it starts.
#[derive(Serialize, Deserialize)]
pub struct TextFileRdd {
    pub(crate) id: usize,
    pub(crate) splits: Vec<FileSplit>,
}

impl RddBase for TextFileRdd {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "HadoopRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.splits.len()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
}

impl RddNode for TextFileRdd {
    type Item = String;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<String>> {
        Ok(Box::new(self.lines(split, tc)?))
    }
    fn push(&self, split: usize, tc: &TaskContext, sink: Sink<'_, String>) -> Result<()> {
        push_iter(self.lines(split, tc)?, sink)
    }
    shippable!();
}

impl TextFileRdd {
    fn lines(&self, split: usize, tc: &TaskContext) -> Result<Lines> {
        let s = &self.splits[split];
        let path = s.path.clone();
        // Start one byte early: if that byte is a newline, a line starts exactly at
        // `start` and belongs to us; otherwise we skip the rest of a line the
        // previous split owns.
        let first = s.start.saturating_sub(1);
        let mut reader = BufReader::with_capacity(1 << 20, open_at(&path, first)?);
        let mut pos = first;
        if s.start > 0 {
            let mut skip = Vec::new();
            pos += reader
                .read_until(b'\n', &mut skip)
                .map_err(|e| FlintError::io("cannot read", &path, e))? as u64;
        }
        Ok(Lines {
            reader,
            pos,
            end: s.start + s.len,
            pending: Vec::new(),
            path,
            errors: tc.errors(),
        })
    }
}

/// Lines of one split, read straight out of the reader's buffer: a line that
/// lies inside the buffer is copied once, into its `String`.
struct Lines {
    reader: BufReader<File>,
    /// File offset of the next line's first byte.
    pos: u64,
    end: u64,
    /// The start of a line that crosses the buffer's end.
    pending: Vec<u8>,
    path: PathBuf,
    errors: crate::env::ErrorSink,
}

fn line_string(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

impl Iterator for Lines {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.pos >= self.end {
            return None;
        }
        loop {
            let avail = match self.reader.fill_buf() {
                Ok(a) => a,
                Err(e) => {
                    self.errors
                        .fail(FlintError::io("cannot read", &self.path, e));
                    return None;
                }
            };
            if avail.is_empty() {
                // End of file: a last line without a newline.
                if self.pending.is_empty() {
                    return None;
                }
                let line = line_string(&self.pending);
                self.pos += self.pending.len() as u64;
                self.pending.clear();
                return Some(line);
            }
            match memchr::memchr(b'\n', avail) {
                Some(i) => {
                    // The next line starts after this one's carried-over part,
                    // its part in the buffer and the newline.
                    self.pos += (self.pending.len() + i + 1) as u64;
                    let line = if self.pending.is_empty() {
                        line_string(&avail[..i])
                    } else {
                        self.pending.extend_from_slice(&avail[..i]);
                        let l = line_string(&self.pending);
                        self.pending.clear();
                        l
                    };
                    self.reader.consume(i + 1);
                    return Some(line);
                }
                None => {
                    let n = avail.len();
                    self.pending.extend_from_slice(avail);
                    self.reader.consume(n);
                }
            }
        }
    }
}

/// `(path, contents)` of whole files, files spread over partitions.
#[derive(Serialize, Deserialize)]
pub struct WholeTextFilesRdd {
    pub(crate) id: usize,
    pub(crate) groups: Vec<Vec<PathBuf>>,
}

impl RddBase for WholeTextFilesRdd {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "WholeTextFileRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.groups.len()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
}

impl RddNode for WholeTextFilesRdd {
    type Item = (String, String);
    fn compute(&self, split: usize, _tc: &TaskContext) -> Result<BoxIter<(String, String)>> {
        let mut out = Vec::new();
        for p in &self.groups[split] {
            let bytes = std::fs::read(p).map_err(|e| FlintError::io("cannot read", p, e))?;
            let text = String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            out.push((p.to_string_lossy().into_owned(), text));
        }
        Ok(Box::new(out.into_iter()))
    }
    shippable!();
}

/// Fixed-length binary records; splits are aligned to the record length.
#[derive(Serialize, Deserialize)]
pub struct BinaryRecordsRdd {
    pub(crate) id: usize,
    pub(crate) record_len: usize,
    pub(crate) splits: Vec<FileSplit>,
}

impl RddBase for BinaryRecordsRdd {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "BinaryRecordsRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.splits.len()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
}

impl RddNode for BinaryRecordsRdd {
    type Item = Bytes;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<Bytes>> {
        let s = &self.splits[split];
        let path = s.path.clone();
        let len = self.record_len;
        let mut reader = BufReader::with_capacity(1 << 20, open_at(&path, s.start)?.take(s.len));
        let errors = tc.errors();
        Ok(Box::new(std::iter::from_fn(move || {
            let mut rec = vec![0u8; len];
            match reader.read_exact(&mut rec) {
                Ok(()) => Some(Bytes(rec)),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
                Err(e) => {
                    errors.fail(FlintError::io("cannot read", &path, e));
                    None
                }
            }
        })))
    }
    shippable!();
}
