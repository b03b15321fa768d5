//! The reduce side: stream one reduce partition's segments from every map output.
//! Outputs are local files today; a remote fetcher slots in where the file is
//! opened. Every segment must yield exactly its recorded length of intact frames
//! (see `frames`); an output that is missing, short, corrupt or unreadable is
//! reported as a fetch failure so the DAG scheduler recomputes the map stage,
//! never as fewer records.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use super::frames::FrameReader;
use super::tracker::SegmentLocation;
use crate::env::TaskContext;
use crate::error::{FlintError, Result};
use crate::func::Data;

type ResIter<T> = Box<dyn Iterator<Item = Result<T>>>;

pub(crate) fn read_partition<T: Data>(
    tc: &TaskContext,
    shuffle_id: usize,
    reduce: usize,
) -> Result<ResIter<T>> {
    let compression = tc.env.compression;
    let mut segments = tc.env.map_outputs.segments(shuffle_id, reduce)?.into_iter();
    type Current<T> = (
        SegmentLocation,
        FrameReader<BufReader<std::io::Take<File>>, T>,
    );
    let mut current: Option<Current<T>> = None;
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
                    Ok(Some(rec)) => return Some(Ok(rec)),
                    Ok(None) => current = None,
                    Err(e) => {
                        let err = failed(seg, format!("{}: {e}", seg.data_file.display()));
                        current = None;
                        segments = Vec::new().into_iter();
                        return Some(Err(err));
                    }
                }
            }
            let seg = segments.next()?;
            let opened = File::open(&seg.data_file).and_then(|mut f| {
                f.seek(SeekFrom::Start(seg.start))?;
                Ok(f)
            });
            match opened {
                Ok(f) => {
                    let r = FrameReader::new(
                        BufReader::with_capacity(128 << 10, f.take(seg.len)),
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
