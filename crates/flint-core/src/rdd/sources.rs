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
    fn driver_blocks(&self, split: usize) -> Vec<BlockId> {
        vec![BlockId::ParallelSlice {
            rdd: self.id,
            slice: split,
        }]
    }
}

impl<T: Data> RddNode for ParallelCollectionRdd<T> {
    type Item = T;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<T>> {
        let block = BlockId::ParallelSlice {
            rdd: self.id,
            slice: split,
        };
        let data: Arc<Vec<T>> = match tc.env.blocks.get(block) {
            Some(d) => d,
            // On a cluster executor: from the driver, then kept for later tasks.
            None => match tc.env.shuffle_client.get() {
                Some(client) => {
                    let bytes = client.slice(self.id, split)?;
                    let d: Arc<Vec<T>> =
                        Arc::new(crate::codec::decode("a parallelized slice", &bytes)?);
                    tc.env.blocks.put(block, d.clone());
                    d
                }
                None => {
                    return Err(FlintError::InvalidArgument(format!(
                        "slice {split} of parallelized collection {} is not on this executor",
                        self.id
                    )));
                }
            },
        };
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

/// Expands a path, directory or glob, or several of them separated by
/// commas (as Hadoop's input paths), into the files to read, skipping hidden
/// files and Hadoop-style markers (`_SUCCESS`, `.crc`) inside directories.
///
/// As in Hadoop's globs, `{a,b}` stands for either alternative (commas
/// inside braces do not separate paths).
pub(crate) fn list_files(path: &str) -> Result<Vec<PathBuf>> {
    // A name that exists with its commas and braces is one path.
    if !path.contains([',', '{']) || Path::new(path).exists() {
        return list_one(path);
    }
    let mut out = Vec::new();
    for one in split_paths(path) {
        if one.is_empty() {
            return Err(FlintError::InvalidArgument(format!(
                "empty path in the comma-separated input paths '{path}'"
            )));
        }
        if !one.contains('{') {
            out.extend(list_one(one)?);
            continue;
        }
        // An alternative that names nothing is no error: the pattern as a
        // whole must name something. A file two alternatives name is read
        // once (Hadoop matches the pattern as one glob).
        let (mut matched, mut seen) = (false, std::collections::HashSet::new());
        for pattern in expand_braces(one)? {
            if let Some(files) = list_matching(&pattern)? {
                matched = true;
                out.extend(files.into_iter().filter(|f| seen.insert(f.clone())));
            }
        }
        if !matched {
            return Err(FlintError::InvalidArgument(format!(
                "Input pattern {one} matches 0 files"
            )));
        }
    }
    Ok(out)
}

/// `path` cut at the commas outside braces.
fn split_paths(path: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in path.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&path[start..]);
    out
}

/// Most patterns one path's braces may stand for, and most bytes they take.
const MAX_BRACE_EXPANSION: usize = 10_000;
const MAX_BRACE_BYTES: usize = 16 << 20;

/// The patterns `{a,b}` alternatives stand for (nested ones too); an
/// unmatched brace is taken as it is.
fn expand_braces(pattern: &str) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut todo = vec![pattern.to_string()];
    // Every expansion is shorter than the pattern: bounds its bytes too.
    let mut bytes = pattern.len();
    while let Some(p) = todo.pop() {
        let Some((open, commas, close)) = first_braces(&p) else {
            done.push(p);
            continue;
        };
        let more = commas.len() + 1;
        bytes += more * p.len();
        if done.len() + todo.len() + more > MAX_BRACE_EXPANSION || bytes > MAX_BRACE_BYTES {
            let shown: String = pattern.chars().take(200).collect();
            return Err(FlintError::InvalidArgument(format!(
                "input pattern '{shown}' stands for more than {MAX_BRACE_EXPANSION} paths"
            )));
        }
        let mut start = open + 1;
        for end in commas.into_iter().chain([close]) {
            todo.push(format!(
                "{}{}{}",
                &p[..open],
                &p[start..end],
                &p[close + 1..]
            ));
            start = end + 1;
        }
    }
    done.reverse();
    Ok(done)
}

/// The first `{`, the commas directly inside it, and its matching `}`.
fn first_braces(p: &str) -> Option<(usize, Vec<usize>, usize)> {
    let open = p.find('{')?;
    let (mut depth, mut commas) = (0usize, Vec::new());
    for (i, c) in p[open..].char_indices() {
        let i = i + open;
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((open, commas, i));
                }
            }
            ',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    None
}

fn list_one(path: &str) -> Result<Vec<PathBuf>> {
    let glob = is_glob(path);
    match list_matching(path)? {
        None if !glob => Err(FlintError::InvalidArgument(format!(
            "Input path does not exist: {path}"
        ))),
        // A directory, or a glob matching only directories, with no files
        // is an empty input (as in Hadoop).
        Some(files) => Ok(files),
        None => Err(FlintError::InvalidArgument(format!(
            "Input pattern {path} matches 0 files"
        ))),
    }
}

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// The files `path` (a file, a directory or a glob) names, sorted and
/// absolute; `None` when it names nothing at all.
fn list_matching(path: &str) -> Result<Option<Vec<PathBuf>>> {
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
    } else if is_glob(path) {
        let entries = glob::glob(path)
            .map_err(|e| FlintError::InvalidArgument(format!("bad glob pattern '{path}': {e}")))?;
        let mut matched = false;
        for e in entries.flatten() {
            // Hidden files and markers are skipped in globs too (Hadoop's
            // hidden-file filter): `out/*` reads no `_SUCCESS` or `.crc`.
            let name = e.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.starts_with('.') || n.starts_with('_')) {
                continue;
            }
            if e.is_file() {
                matched = true;
                out.push(e);
            } else if e.is_dir() {
                matched = true;
                out.extend(list_matching(&e.to_string_lossy())?.unwrap_or_default());
            }
        }
        if !matched {
            return Ok(None);
        }
    } else {
        return Ok(None);
    }
    // Executors run in other directories: a relative path means the driver's.
    // Sorted as absolute paths, so a relative glob's files and its
    // directories' files (absolute) keep name order.
    let mut out = out
        .into_iter()
        .map(|f| absolute(&f))
        .collect::<Result<Vec<_>>>()?;
    out.sort();
    Ok(Some(out))
}

/// `path` resolved against the driver's working directory (as Hadoop qualifies
/// paths on the driver), so tasks on executors elsewhere read the same file.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| FlintError::io("cannot resolve path", path, e))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileSplit {
    pub path: PathBuf,
    pub start: u64,
    pub len: u64,
    /// The file's size when the job was planned: a reader that meets the end
    /// of file before it reports the change instead of returning less.
    pub file_len: u64,
    /// How the file is compressed, if it is (then the split is the whole
    /// file, and its lines are the decompressed text's).
    #[serde(default)]
    pub codec: Option<Codec>,
}

/// A text file's compression, known by its name's extension as Hadoop's
/// codec factory knows it (`.gz`, `.bz2`, `.deflate`). A compressed file is
/// read whole, by one task: gzip and zlib streams cannot be split (Hadoop
/// splits bzip2 at its block markers; Flint does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    Gzip,
    Bzip2,
    /// Hadoop's DefaultCodec: a zlib stream.
    Deflate,
}

impl Codec {
    /// The codec of `path`, none for a plain file; an error for the
    /// compressed formats Flint cannot read, rather than their bytes taken
    /// for text.
    pub fn of(path: &Path) -> Result<Option<Codec>> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let unsupported = match ext {
            "gz" => return Ok(Some(Codec::Gzip)),
            "bz2" => return Ok(Some(Codec::Bzip2)),
            "deflate" => return Ok(Some(Codec::Deflate)),
            "zst" => "zstd",
            "lz4" => "LZ4",
            "snappy" => "Snappy",
            _ => return Ok(None),
        };
        Err(FlintError::InvalidArgument(format!(
            "{}: {unsupported}-compressed input is not supported; decompress it first (Flint reads plain, .gz, .bz2 and .deflate files)",
            path.display()
        )))
    }

    /// Decompresses a whole file (streams one after another read as one, as
    /// `cat a.gz b.gz` makes and Hadoop reads them). An empty file is empty
    /// text (Spark skips empty splits).
    fn reader(self, f: File) -> std::io::Result<Box<dyn Read + Send>> {
        if f.metadata()?.len() == 0 {
            return Ok(Box::new(std::io::empty()));
        }
        Ok(match self {
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
            Codec::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(f)),
            Codec::Deflate => Box::new(MultiZlib {
                stream: Some(flate2::bufread::ZlibDecoder::new(BufReader::new(f))),
            }),
        })
    }
}

/// Zlib streams one after another, read as one text (flate2's decoder stops
/// at the first stream's end, and would drop the rest unnoticed).
struct MultiZlib {
    stream: Option<flate2::bufread::ZlibDecoder<BufReader<File>>>,
}

impl Read for MultiZlib {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(0);
            };
            let n = stream.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // A stream ended: another follows unless the file did. The
            // decoder leaves the bytes it did not use in the buffer.
            let Some(stream) = self.stream.take() else {
                return Ok(0);
            };
            let mut rest = stream.into_inner();
            if rest.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.stream = Some(flate2::bufread::ZlibDecoder::new(rest));
        }
    }
}

/// The whole of `path`, decompressed when its name says it is compressed.
pub(crate) fn read_whole(path: &Path) -> Result<Vec<u8>> {
    let read = || -> std::io::Result<Vec<u8>> {
        let f = File::open(path)?;
        let mut r: Box<dyn Read + Send> = match Codec::of(path).ok().flatten() {
            Some(c) => c.reader(f)?,
            None => Box::new(f),
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    };
    read().map_err(|e| FlintError::io("cannot read", path, e))
}

/// Hadoop's rule: split size = max(1, min(total / min_partitions, block size)),
/// with the local file system's 32 MiB block size; the last piece of a file may be
/// up to 10% larger than the split size rather than leave a sliver.
///
/// With `text`, a compressed file (see [`Codec`]) is one split, read whole.
pub(crate) fn compute_splits(
    files: &[PathBuf],
    min_partitions: usize,
    align: u64,
    text: bool,
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
        let codec = if text { Codec::of(f)? } else { None };
        if codec.is_some() {
            out.push(FileSplit {
                path: f.clone(),
                start: 0,
                len: size,
                file_len: size,
                codec,
            });
            continue;
        }
        let mut start = 0;
        while size - start > split + split / 10 {
            out.push(FileSplit {
                path: f.clone(),
                start,
                len: split,
                file_len: size,
                codec: None,
            });
            start += split;
        }
        if size > start || size == 0 {
            out.push(FileSplit {
                path: f.clone(),
                start,
                len: size - start,
                file_len: size,
                codec: None,
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

/// A file that ends before byte `planned`, which it held when the job was
/// planned: an error, never fewer records.
fn shrunk(planned: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "the file ends before byte {planned}: it changed after the job was planned"
    ))
}

/// Lines of text files; a line belongs to the split in which it starts.
/// With `chunks`, each record is a run of whole lines (about 64 KiB, line
/// ends kept) instead of one line.
#[derive(Serialize, Deserialize)]
pub struct TextFileRdd {
    pub(crate) id: usize,
    pub(crate) splits: Vec<FileSplit>,
    pub(crate) chunks: bool,
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
        // Start one byte early: if that byte is a newline, a line starts exactly at
        // `start` and belongs to us; otherwise we skip the rest of a line the
        // previous split owns.
        let first = s.start.saturating_sub(1);
        let file = open_at(&s.path, first)?;
        // A compressed file is one split: every decompressed line is its own,
        // and a truncated stream is the decoder's error.
        let (file, end, file_len): (Box<dyn Read + Send>, u64, u64) = match s.codec {
            Some(c) => (
                c.reader(file)
                    .map_err(|e| FlintError::io("cannot read", &s.path, e))?,
                u64::MAX,
                0,
            ),
            None => (Box::new(file), s.start + s.len, s.file_len),
        };
        Ok(Lines {
            file,
            chunk: Chunk::Text(String::new()),
            at: 0,
            chunk_pos: first,
            tail: Vec::new(),
            eof: false,
            end,
            file_len,
            skip_first: s.start > 0,
            chunks: self.chunks,
            path: s.path.clone(),
            errors: tc.errors(),
        })
    }
}

/// Bytes read per chunk of lines.
const LINES_CHUNK: u64 = 64 << 10;

/// A chunk of whole lines: checked as UTF-8 once, or raw when it is not valid
/// UTF-8 (its lines are then converted one by one, lossily, as Spark's `Text`
/// decoding replaces bad bytes).
enum Chunk {
    Text(String),
    Raw(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Text(s) => s.as_bytes(),
            Chunk::Raw(b) => b,
        }
    }
}

/// Lines of one split. The file is read in chunks of whole lines, each checked
/// as UTF-8 in one pass, and every line is copied once, into its `String`.
struct Lines {
    file: Box<dyn Read + Send>,
    chunk: Chunk,
    /// Where the next line starts in `chunk`.
    at: usize,
    /// File offset of `chunk`'s first byte.
    chunk_pos: u64,
    /// Bytes read after the chunk's last newline: the start of the next line.
    tail: Vec<u8>,
    eof: bool,
    /// Lines starting at or after this offset belong to the next split.
    end: u64,
    /// The file's planned size (the last line may run past `end`).
    file_len: u64,
    /// The first line read belongs to the previous split.
    skip_first: bool,
    /// Yield runs of whole lines (all of a chunk's lines that belong to the
    /// split) instead of single lines.
    chunks: bool,
    path: PathBuf,
    errors: crate::env::ErrorSink,
}

impl Lines {
    /// Replaces the consumed chunk with the next chunk of whole lines (at end
    /// of file, the last line even without a newline). False when nothing is left.
    fn refill(&mut self) -> std::io::Result<bool> {
        let old = std::mem::replace(&mut self.chunk, Chunk::Raw(Vec::new()));
        let mut buf = match old {
            Chunk::Text(s) => s.into_bytes(),
            Chunk::Raw(b) => b,
        };
        self.chunk_pos += buf.len() as u64;
        self.at = 0;
        buf.clear();
        // A chunk handed out whole (`chunks`) left an empty buffer: make room
        // at once rather than growing it read by read.
        buf.reserve(LINES_CHUNK as usize + self.tail.len());
        buf.append(&mut self.tail);
        let mut searched = 0;
        while !self.eof {
            let n = (&mut self.file).take(LINES_CHUNK).read_to_end(&mut buf)?;
            if n == 0 {
                if self.chunk_pos + (buf.len() as u64) < self.file_len {
                    return Err(shrunk(self.file_len));
                }
                self.eof = true;
            } else if memchr::memchr(b'\n', &buf[searched..]).is_some() {
                break;
            }
            searched = buf.len();
        }
        if !self.eof {
            let cut = memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1);
            self.tail.extend_from_slice(&buf[cut..]);
            buf.truncate(cut);
        }
        let empty = buf.is_empty();
        self.chunk = match String::from_utf8(buf) {
            Ok(s) => Chunk::Text(s),
            Err(e) => Chunk::Raw(e.into_bytes()),
        };
        Ok(!empty)
    }
}

impl Lines {
    /// The chunk's lines from `start` on that start before the split's end,
    /// as one string (the chunk itself when that is all of it: no copy).
    fn take_lines(&mut self, start: usize) -> String {
        let bytes = self.chunk.bytes();
        let n = bytes.len();
        // The first line start at or after the split's end: after the first
        // newline at or after the byte before it.
        let limit = self.end.saturating_sub(self.chunk_pos);
        let cut = if limit < n as u64 {
            let from = (limit as usize).saturating_sub(1).max(start);
            memchr::memchr(b'\n', &bytes[from..]).map_or(n, |j| from + j + 1)
        } else {
            n
        };
        self.at = cut;
        match &mut self.chunk {
            Chunk::Text(s) if start == 0 && cut == n => {
                // The chunk is now empty: account for its bytes here, as
                // `refill` would have.
                self.chunk_pos += n as u64;
                self.at = 0;
                std::mem::take(s)
            }
            // Cut at newlines (ASCII): char boundaries.
            Chunk::Text(s) => s[start..cut].to_owned(),
            Chunk::Raw(b) => String::from_utf8_lossy(&b[start..cut]).into_owned(),
        }
    }
}

impl Iterator for Lines {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            let bytes = self.chunk.bytes();
            if self.at < bytes.len() {
                let start = self.at;
                if !self.skip_first && self.chunk_pos + start as u64 >= self.end {
                    return None;
                }
                if self.chunks && !self.skip_first {
                    return Some(self.take_lines(start));
                }
                let len = memchr::memchr(b'\n', &bytes[start..]).unwrap_or(bytes.len() - start);
                self.at = start + len + 1;
                if std::mem::take(&mut self.skip_first) {
                    continue;
                }
                let line = &bytes[start..start + len];
                let trim = usize::from(line.last() == Some(&b'\r'));
                // Slicing at newlines and carriage returns (ASCII) keeps char
                // boundaries, so the text case cannot fail.
                return Some(match &self.chunk {
                    Chunk::Text(s) => s[start..start + len - trim].to_owned(),
                    Chunk::Raw(_) => String::from_utf8_lossy(&line[..len - trim]).into_owned(),
                });
            }
            match self.refill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.errors
                        .fail(FlintError::io("cannot read", &self.path, e));
                    return None;
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
            let bytes = read_whole(p)?;
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
        // Bytes of the split still to come: a file that ends before (it
        // shrank after the job was planned) is an error, not fewer records.
        let mut left = s.len;
        let end = s.start + s.len;
        Ok(Box::new(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            // Copied from the reader's buffer when it holds the whole record
            // (no zeroed buffer to read into).
            let rec = match reader.fill_buf() {
                Ok(buf) if buf.len() >= len => {
                    let rec = buf[..len].to_vec();
                    reader.consume(len);
                    Ok(rec)
                }
                Ok(_) => {
                    let mut rec = vec![0u8; len];
                    reader.read_exact(&mut rec).map(|()| rec)
                }
                Err(e) => Err(e),
            };
            match rec {
                Ok(rec) => {
                    left = left.saturating_sub(len as u64);
                    Some(Bytes(rec))
                }
                Err(e) => {
                    let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        shrunk(end)
                    } else {
                        e
                    };
                    errors.fail(FlintError::io("cannot read", &path, e));
                    None
                }
            }
        })))
    }
    shippable!();
}
