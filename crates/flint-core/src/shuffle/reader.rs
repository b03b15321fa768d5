//! The reduce side: stream one reduce partition's segments from every map output.
//! Outputs are local files today; a remote fetcher slots in where the file is
//! opened, and any unreadable output is reported as a fetch failure so the DAG
//! scheduler can recompute the map stage.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use super::frames::FrameReader;
use crate::env::TaskContext;
use crate::error::{FlintError, Result};
use crate::func::Data;

type ResIter<T> = Box<dyn Iterator<Item = Result<T>>>;

pub(crate) fn read_partition<T: Data>(
    tc: &TaskContext,
    shuffle_id: usize,
    reduce: usize,
) -> Result<ResIter<T>> {
    let statuses = tc.env.map_outputs.statuses(shuffle_id)?;
    let compression = tc.env.compression;
    let mut segments = Vec::new();
    for (map_id, st) in statuses.into_iter().enumerate() {
        if reduce >= st.segment_lengths.len() {
            return Err(FlintError::FetchFailed {
                shuffle_id,
                map_id,
                reason: format!("map output has no partition {reduce}"),
            });
        }
        let (start, len) = st.segment(reduce);
        if len > 0 {
            segments.push((map_id, st.data_file, start, len));
        }
    }
    let mut segments = segments.into_iter();
    let mut current: Option<(usize, FrameReader<BufReader<std::io::Take<File>>, T>)> = None;
    Ok(Box::new(std::iter::from_fn(move || {
        loop {
            if let Some((map_id, r)) = current.as_mut() {
                match r.next_record() {
                    Ok(Some(rec)) => return Some(Ok(rec)),
                    Ok(None) => current = None,
                    Err(e) => {
                        let map_id = *map_id;
                        current = None;
                        segments = Vec::new().into_iter();
                        return Some(Err(FlintError::FetchFailed {
                            shuffle_id,
                            map_id,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            let (map_id, path, start, len) = segments.next()?;
            let opened = File::open(&path).and_then(|mut f| {
                f.seek(SeekFrom::Start(start))?;
                Ok(f)
            });
            match opened {
                Ok(f) => {
                    current = Some((
                        map_id,
                        FrameReader::new(
                            BufReader::with_capacity(128 << 10, f.take(len)),
                            compression,
                        ),
                    ))
                }
                Err(e) => {
                    segments = Vec::new().into_iter();
                    return Some(Err(FlintError::FetchFailed {
                        shuffle_id,
                        map_id,
                        reason: format!("{}: {e}", path.display()),
                    }));
                }
            }
        }
    })))
}
