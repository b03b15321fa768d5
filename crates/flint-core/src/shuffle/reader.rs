//! The reduce side: stream one reduce partition's segments from every map output.
//! A segment this executor wrote is read from its file; on a cluster, a segment
//! another executor wrote is fetched from it in bounded chunks through the
//! executor's `ShuffleClient` (by shuffle, map and reduce ids, never by path),
//! after refreshing the map outputs from the driver, unless that executor is on
//! this host and its file can be opened here (node-local; the executor's
//! client names the file from numbers alone). Every segment must yield
//! exactly its recorded length of intact frames (see `frames`); an output that
//! is missing, short, corrupt or unreachable is reported as a fetch failure so
//! the DAG scheduler recomputes the map stage, never as fewer records.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::frames::FrameReader;
use super::tracker::SegmentLocation;
use crate::env::{ShuffleClient, TaskContext, TaskEnv};
use crate::error::{FlintError, Result};
use crate::func::Data;

type ResIter<T> = Box<dyn Iterator<Item = Result<T>>>;

/// Bytes asked of another executor per request
/// (`flint.reducer.maxSizeInFlight`, 48m, bounds it).
const FETCH_CHUNK: u64 = 4 << 20;

pub(crate) fn read_partition<T: Data>(
    tc: &TaskContext,
    shuffle_id: usize,
    reduce: usize,
) -> Result<ResIter<T>> {
    let mut segments = Segments::new(tc, shuffle_id, reduce)?;
    let mut current: Option<Current<T>> = None;
    Ok(Box::new(std::iter::from_fn(move || {
        loop {
            if let Some((seg, r)) = current.as_mut() {
                match r.next_record() {
                    Ok(Some(rec)) => {
                        segments.count.record();
                        return Some(Ok(rec));
                    }
                    Ok(None) => current = None,
                    Err(e) => {
                        let err = segments.failed_on(seg, e);
                        current = None;
                        return Some(Err(err));
                    }
                }
            }
            match segments.next()? {
                Ok(c) => current = Some(c),
                Err(e) => return Some(Err(e)),
            }
        }
    })))
}

/// Reads a sorted shuffle's partition (records framed as the key, then the
/// value's encoding behind its length; see `writer`), handing each key and
/// its value's bytes, undecoded, to `each`.
pub(crate) fn read_sized_partition<K: Data>(
    tc: &TaskContext,
    shuffle_id: usize,
    reduce: usize,
    mut each: impl FnMut(K, &[u8]) -> Result<()>,
) -> Result<()> {
    read_sized_with(Segments::new(tc, shuffle_id, reduce)?, |r| {
        Ok(r.next_sized::<K>()?.map(|(k, raw)| each(k, raw)))
    })
}

/// As `read_sized_partition`, the keys left encoded too: `key_len` tells
/// how long the key encoding at the front of its input is.
pub(crate) fn read_sized_raw_partition(
    tc: &TaskContext,
    shuffle_id: usize,
    reduce: usize,
    key_len: impl Fn(&[u8]) -> Option<usize>,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    read_sized_with(Segments::new(tc, shuffle_id, reduce)?, |r| {
        Ok(r.next_sized_raw(&key_len)?.map(|(k, raw)| each(k, raw)))
    })
}

/// After a value of a sized partition failed to decode on its way out of a
/// sorter (its frame's checksum matched: written so by a bug or a peer):
/// reads the partition again, decoding every record, to name the segment
/// that holds it, as a fetch failure that recomputes that map output. None if
/// every record decodes (the error came from elsewhere). Reads are not
/// counted in the task's metrics.
pub(crate) fn find_undecodable<K: Data, V: Data>(
    env: &TaskEnv,
    shuffle_id: usize,
    reduce: usize,
) -> Option<FlintError> {
    // A value that does not decode is the data's error: it names the segment.
    let scan = || {
        read_sized_with(
            Segments::with(env, Arc::default(), shuffle_id, reduce)?,
            |r| {
                let Some((_, raw)) = r.next_sized::<K>()? else {
                    return Ok(None);
                };
                crate::codec::decode_exact::<V>("shuffle record", raw)?;
                Ok(Some(Ok(())))
            },
        )
    };
    match scan() {
        Err(e @ FlintError::FetchFailed { .. }) => Some(e),
        _ => None,
    }
}

/// Runs `step` on each segment's reader until it has no record left: its
/// own errors are the data's (a fetch failure names the segment), the
/// inner ones the consumer's.
fn read_sized_with(
    mut segments: Segments,
    mut step: impl FnMut(&mut FrameReader<BufReader<Box<dyn Read>>, ()>) -> Result<Option<Result<()>>>,
) -> Result<()> {
    while let Some(next) = segments.next() {
        let (seg, mut r): Current<()> = next?;
        loop {
            match step(&mut r) {
                Ok(Some(consumed)) => {
                    segments.count.record();
                    consumed?;
                }
                Ok(None) => break,
                Err(e) => return Err(segments.failed_on(&seg, e)),
            }
        }
    }
    Ok(())
}

type Current<T> = (SegmentLocation, FrameReader<BufReader<Box<dyn Read>>, T>);

/// The segments of one reduce partition, opened one after another: from a
/// file here (this executor's, or another's on this host) or fetched.
struct Segments {
    compression: crate::env::Compression,
    client: Option<Arc<dyn ShuffleClient>>,
    me: String,
    chunk: u64,
    shuffle_id: usize,
    reduce: usize,
    segments: std::vec::IntoIter<SegmentLocation>,
    count: ReadCount,
}

impl Segments {
    fn new(tc: &TaskContext, shuffle_id: usize, reduce: usize) -> Result<Self> {
        Segments::with(&tc.env, tc.metrics.clone(), shuffle_id, reduce)
    }

    fn with(
        env: &TaskEnv,
        metrics: Arc<crate::metrics::LiveMetrics>,
        shuffle_id: usize,
        reduce: usize,
    ) -> Result<Self> {
        let client = env.shuffle_client.get().cloned();
        let chunk = env
            .conf
            .get_bytes("flint.reducer.maxSizeInFlight", 48 << 20)?
            .clamp(64 << 10, FETCH_CHUNK)
            // A reply must fit in one RPC frame.
            .min(env.conf.rpc_max_message_size()? as u64 / 2);
        // An executor asks the driver; the driver (and local mode) knows.
        let segments = match &client {
            Some(c) => c.segments(shuffle_id, reduce)?,
            None => env.map_outputs.segments(shuffle_id, reduce)?,
        }
        .into_iter();
        Ok(Segments {
            compression: env.compression,
            client,
            me: env.executor_id.clone(),
            chunk,
            shuffle_id,
            reduce,
            segments,
            count: ReadCount {
                metrics,
                records: 0,
            },
        })
    }

    /// A fetch failure (the map stage reruns), naming the segment; no
    /// segment is read after it.
    fn failed(&mut self, seg: &SegmentLocation, reason: String) -> FlintError {
        self.segments = Vec::new().into_iter();
        FlintError::FetchFailed {
            shuffle_id: self.shuffle_id,
            map_id: seg.map_id,
            executor: Some(seg.executor_id.clone()),
            reason,
        }
    }

    fn failed_on(&mut self, seg: &SegmentLocation, e: impl std::fmt::Display) -> FlintError {
        self.failed(seg, format!("{}: {e}", seg.data_file.display()))
    }

    fn next<T: Data>(&mut self) -> Option<Result<Current<T>>> {
        let seg = self.segments.next()?;
        // Another executor's output: over the network, unless it is on
        // this host and its file is readable here (node-local).
        let theirs = self.client.is_some() && seg.executor_id != self.me;
        let host_local = theirs && !seg.data_file.as_os_str().is_empty();
        let opened = (!theirs || host_local).then(|| {
            open_segment(&seg).map(|f| {
                // Bytes are counted as read (remote ones in `Remote`).
                Box::new(Counted {
                    inner: f,
                    metrics: self.count.metrics.clone(),
                    host_local,
                }) as Box<dyn Read>
            })
        });
        let source: std::io::Result<Box<dyn Read>> = match (opened, &self.client) {
            (Some(Ok(f)), _) => Ok(f),
            (Some(Err(e)), _) if !theirs => Err(e),
            (_, Some(c)) => Ok(Box::new(Remote {
                client: c.clone(),
                seg: seg.clone(),
                shuffle_id: self.shuffle_id,
                reduce: self.reduce,
                pos: 0,
                chunk: self.chunk,
                buf: std::io::Cursor::new(Vec::new()),
                metrics: self.count.metrics.clone(),
            })),
            // Without a client every segment is this process's own.
            (opened, None) => {
                opened.unwrap_or_else(|| Err(std::io::Error::other("no shuffle client")))
            }
        };
        Some(match source {
            Ok(src) => {
                let r = FrameReader::new(
                    BufReader::with_capacity(128 << 10, src),
                    self.compression,
                    seg.len,
                );
                Ok((seg, r))
            }
            Err(e) => Err(self.failed_on(&seg, e)),
        })
    }
}

/// A segment read from a file here, counting its bytes as they are read.
struct Counted {
    inner: Box<dyn Read>,
    metrics: Arc<crate::metrics::LiveMetrics>,
    /// Another executor's output on this host.
    host_local: bool,
}

impl Read for Counted {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.metrics.add_shuffle_read(n as u64, false);
        if self.host_local {
            self.metrics.add_shuffle_host_local_read(n as u64);
        }
        Ok(n)
    }
}

/// Records read, added to the task's metrics in batches (an atomic add per
/// record would cost) and when the reader is dropped, so a reader that stops
/// early (`take`, `first`) still counts what it read.
struct ReadCount {
    metrics: Arc<crate::metrics::LiveMetrics>,
    records: u64,
}

impl ReadCount {
    #[inline]
    fn record(&mut self) {
        self.records += 1;
        if self.records == 4096 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.metrics.add_shuffle_read_records(self.records);
        self.records = 0;
    }
}

impl Drop for ReadCount {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A segment in a file this process can open: its own map output, or one of
/// another executor on this host. The file must hold the whole segment.
fn open_segment(seg: &SegmentLocation) -> std::io::Result<Box<dyn Read>> {
    let mut f = File::open(&seg.data_file)?;
    let size = f.metadata()?.len();
    if size < seg.start.saturating_add(seg.len) {
        return Err(std::io::Error::other(format!(
            "{} holds {size} bytes, short of the segment's end at {}",
            seg.data_file.display(),
            seg.start + seg.len
        )));
    }
    f.seek(SeekFrom::Start(seg.start))?;
    Ok(Box::new(f.take(seg.len)))
}

/// A segment on another executor, read chunk by chunk.
struct Remote {
    client: Arc<dyn ShuffleClient>,
    seg: SegmentLocation,
    shuffle_id: usize,
    reduce: usize,
    pos: u64,
    chunk: u64,
    buf: std::io::Cursor<Vec<u8>>,
    metrics: Arc<crate::metrics::LiveMetrics>,
}

impl Read for Remote {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.buf.read(out)?;
        if n > 0 || self.pos >= self.seg.len {
            return Ok(n);
        }
        let want = (self.seg.len - self.pos).min(self.chunk);
        let bytes = self
            .client
            .fetch(self.shuffle_id, self.reduce, &self.seg, self.pos, want)
            .map_err(std::io::Error::other)?;
        self.metrics.add_shuffle_read(bytes.len() as u64, true);
        if bytes.len() as u64 != want {
            return Err(std::io::Error::other(format!(
                "executor {} sent {} bytes of the {want} asked for",
                self.seg.executor_id,
                bytes.len()
            )));
        }
        self.pos += want;
        self.buf = std::io::Cursor::new(bytes);
        self.buf.read(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shuffle::frames::FrameWriter;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Another executor "B" whose output sits in `file`; counts fetches.
    struct Peer {
        seg: SegmentLocation,
        file: std::path::PathBuf,
        fetches: AtomicUsize,
    }

    impl ShuffleClient for Peer {
        fn segments(&self, _: usize, _: usize) -> Result<Vec<SegmentLocation>> {
            Ok(vec![self.seg.clone()])
        }
        fn fetch(
            &self,
            _: usize,
            _: usize,
            _: &SegmentLocation,
            off: u64,
            len: u64,
        ) -> Result<Vec<u8>> {
            self.fetches.fetch_add(1, Ordering::Relaxed);
            let all = std::fs::read(&self.file).unwrap();
            Ok(all[off as usize..(off + len) as usize].to_vec())
        }
        fn slice(&self, _: usize, _: usize) -> Result<Vec<u8>> {
            unimplemented!()
        }
        fn broadcast(&self, _: usize) -> Result<Arc<Vec<u8>>> {
            unimplemented!()
        }
    }

    fn read_all(
        dir: &std::path::Path,
        named: Option<&str>,
    ) -> (Vec<(u32, String)>, usize, crate::metrics::TaskMetrics) {
        read_some(dir, named, usize::MAX)
    }

    fn read_some(
        dir: &std::path::Path,
        named: Option<&str>,
        limit: usize,
    ) -> (Vec<(u32, String)>, usize, crate::metrics::TaskMetrics) {
        let env = crate::env::TaskEnv::new(
            crate::conf::FlintConf::new(),
            "A".into(),
            dir.to_path_buf(),
            Arc::default(),
            Arc::default(),
            1,
        )
        .unwrap();
        let file = dir.join("shuffle_0_0_7.data");
        let mut w = FrameWriter::new(Vec::new(), env.compression);
        for i in 0..1000u32 {
            w.write(&(i, format!("v{i}"))).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        std::fs::write(&file, &bytes).unwrap();
        let peer = Arc::new(Peer {
            seg: SegmentLocation {
                map_id: 0,
                executor_id: "B".into(),
                attempt: Some(7),
                data_file: named.map(|n| dir.join(n)).unwrap_or_default(),
                start: 0,
                len: bytes.len() as u64,
            },
            file,
            fetches: AtomicUsize::new(0),
        });
        let _ = env.shuffle_client.set(peer.clone());
        let desc = crate::task::TaskDescription {
            task_id: 1,
            stage_id: 1,
            stage_attempt: 0,
            partition: 0,
            index: 0,
            attempt: 0,
            binary: Arc::new(crate::ship::Shipped::new(
                "t",
                |_| Ok(Box::new(())),
                Vec::new(),
            )),
            driver_blocks: Vec::new(),
        };
        let metrics = Arc::new(crate::metrics::LiveMetrics::default());
        let tc = TaskContext::new(&desc, Arc::new(env), Arc::default(), metrics.clone());
        let got: Vec<(u32, String)> = read_partition(&tc, 0, 0)
            .unwrap()
            .take(limit)
            .collect::<Result<_>>()
            .unwrap();
        (
            got,
            peer.fetches.load(Ordering::Relaxed),
            metrics.snapshot(),
        )
    }

    #[test]
    fn a_node_local_output_is_read_from_disk_and_a_missing_one_is_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let (got, fetches, m) = read_all(dir.path(), Some("shuffle_0_0_7.data"));
        assert_eq!(got.len(), 1000);
        assert_eq!(fetches, 0, "read from its file");
        assert_eq!(m.shuffle_host_local_bytes_read, m.shuffle_read_bytes);
        assert_eq!(
            (m.shuffle_remote_bytes_read, m.shuffle_read_records),
            (0, 1000)
        );
        // Named but not there (another Worker on this host): fetched instead.
        let (again, fetches, m) = read_all(dir.path(), Some("shuffle_0_0_8.data"));
        assert_eq!(again, got);
        assert!(fetches > 0);
        assert_eq!(m.shuffle_remote_bytes_read, m.shuffle_read_bytes);
        assert_eq!(m.shuffle_host_local_bytes_read, 0);
        // Not on this host: fetched.
        let (_, fetches, _) = read_all(dir.path(), None);
        assert!(fetches > 0);
        // A reader that stops early counts the records it read.
        let (some, _, m) = read_some(dir.path(), None, 10);
        assert_eq!((some.len(), m.shuffle_read_records), (10, 10));
        // ... and the bytes it read from disk.
        let (_, _, m) = read_some(dir.path(), Some("shuffle_0_0_7.data"), 10);
        assert!(m.shuffle_read_bytes > 0, "{m:?}");
        assert_eq!(m.shuffle_host_local_bytes_read, m.shuffle_read_bytes);
    }
}
