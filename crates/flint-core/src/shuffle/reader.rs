//! The reduce side: stream one reduce partition's segments from every map output.
//! A segment this executor wrote is read from its file; on a cluster, a segment
//! another executor wrote is fetched from it in bounded chunks through the
//! executor's `ShuffleClient` (by shuffle, map and reduce ids, never by path),
//! after refreshing the map outputs from the driver. Every segment must yield
//! exactly its recorded length of intact frames (see `frames`); an output that
//! is missing, short, corrupt or unreachable is reported as a fetch failure so
//! the DAG scheduler recomputes the map stage, never as fewer records.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::frames::FrameReader;
use super::tracker::SegmentLocation;
use crate::env::{ShuffleClient, TaskContext};
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
    let compression = tc.env.compression;
    let client = tc.env.shuffle_client.get().cloned();
    let me = tc.env.executor_id.clone();
    let chunk = tc
        .env
        .conf
        .get_bytes("flint.reducer.maxSizeInFlight", 48 << 20)?
        .clamp(64 << 10, FETCH_CHUNK)
        // A reply must fit in one RPC frame.
        .min(tc.env.conf.rpc_max_message_size()? as u64 / 2);
    // An executor asks the driver; the driver (and local mode) knows.
    let mut segments = match &client {
        Some(c) => c.segments(shuffle_id, reduce)?,
        None => tc.env.map_outputs.segments(shuffle_id, reduce)?,
    }
    .into_iter();
    type Current<T> = (SegmentLocation, FrameReader<BufReader<Box<dyn Read>>, T>);
    let mut current: Option<Current<T>> = None;
    let metrics = tc.metrics.clone();
    // Counted here and added in batches: an atomic add per record would cost.
    let mut records = 0u64;
    let failed = move |seg: &SegmentLocation, reason: String| FlintError::FetchFailed {
        shuffle_id,
        map_id: seg.map_id,
        executor: Some(seg.executor_id.clone()),
        reason,
    };
    Ok(Box::new(std::iter::from_fn(move || {
        loop {
            if let Some((seg, r)) = current.as_mut() {
                match r.next_record() {
                    Ok(Some(rec)) => {
                        records += 1;
                        if records == 4096 {
                            metrics.add_shuffle_read_records(records);
                            records = 0;
                        }
                        return Some(Ok(rec));
                    }
                    Ok(None) => {
                        metrics.add_shuffle_read_records(records);
                        records = 0;
                        current = None;
                    }
                    Err(e) => {
                        let err = failed(seg, format!("{}: {e}", seg.data_file.display()));
                        current = None;
                        segments = Vec::new().into_iter();
                        return Some(Err(err));
                    }
                }
            }
            let seg = segments.next()?;
            let remote = client.is_some() && seg.executor_id != me;
            metrics.add_shuffle_read(seg.len, remote);
            let source: std::io::Result<Box<dyn Read>> = match &client {
                Some(c) if remote => Ok(Box::new(Remote {
                    client: c.clone(),
                    seg: seg.clone(),
                    shuffle_id,
                    reduce,
                    pos: 0,
                    chunk,
                    buf: std::io::Cursor::new(Vec::new()),
                })),
                _ => File::open(&seg.data_file).and_then(|mut f| {
                    f.seek(SeekFrom::Start(seg.start))?;
                    Ok(Box::new(f.take(seg.len)) as Box<dyn Read>)
                }),
            };
            match source {
                Ok(src) => {
                    let r = FrameReader::new(
                        BufReader::with_capacity(128 << 10, src),
                        compression,
                        seg.len,
                    );
                    current = Some((seg, r));
                }
                Err(e) => {
                    segments = Vec::new().into_iter();
                    return Some(Err(failed(
                        &seg,
                        format!("{}: {e}", seg.data_file.display()),
                    )));
                }
            }
        }
    })))
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
            .fetch(
                &self.seg.executor_id,
                self.shuffle_id,
                self.seg.map_id,
                self.reduce,
                self.pos,
                want,
            )
            .map_err(std::io::Error::other)?;
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
