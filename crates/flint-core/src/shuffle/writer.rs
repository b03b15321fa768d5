//! The map side: partition (and combine) one map task's records and write them as
//! one data file with per-partition segments plus an index file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::frames::FrameWriter;
use super::partitioner::{Partitioner, stable_hash};
use super::spill::{Aggregator, ExternalAggregator, ExternalSorter};
use super::tracker::MapStatus;
use crate::env::TaskContext;
use crate::error::{FlintError, Result};
use crate::func::{Data, Key};
use crate::rdd::BoxIter;

pub(crate) fn write_map_output<K: Key, V: Data, C: Data, A: Aggregator<V, C>>(
    tc: &TaskContext,
    shuffle_id: usize,
    records: BoxIter<(K, V)>,
    partitioner: &Partitioner<K>,
    aggregator: Option<&A>,
    identity: impl Fn(V) -> C,
) -> Result<MapStatus> {
    let env = &tc.env;
    let n = partitioner.num_partitions();
    let tmp = env.temp_file(&format!("shuffle_{shuffle_id}_{}", tc.partition));
    let file =
        File::create(&tmp).map_err(|e| FlintError::io("cannot create shuffle file", &tmp, e))?;
    let mut w = FrameWriter::new(BufWriter::with_capacity(1 << 20, file), env.compression);
    let mut lengths = vec![0u64; n];
    let result = (|| -> Result<()> {
        let mut current = 0usize;
        let mut emit = |w: &mut FrameWriter<_>, p: usize, rec: &(K, C)| -> Result<()> {
            if p != current {
                lengths[current] = w.finish_segment()?;
                current = p;
            }
            w.write(rec)
        };
        match aggregator {
            Some(agg) => {
                let mut map = ExternalAggregator::<K, C>::new(env.clone());
                for (n, (k, v)) in records.enumerate() {
                    if n % 4096 == 4095 && tc.is_killed() {
                        return Err(FlintError::User("task killed".into()));
                    }
                    let h = stable_hash(&k);
                    let p = partitioner.partition_hashed(&k, h) as u32;
                    map.insert_value(agg, h, p, k, v)?;
                }
                check(tc)?;
                for kv in map.into_iter(agg, true, false)? {
                    let ((p, k), c) = kv?;
                    emit(&mut w, p as usize, &(k, c))?;
                }
            }
            None => {
                let mut sorter = ExternalSorter::<u32, (K, V)>::new(env.clone());
                for (n, (k, v)) in records.enumerate() {
                    if n % 4096 == 4095 && tc.is_killed() {
                        return Err(FlintError::User("task killed".into()));
                    }
                    let p = partitioner.partition(&k) as u32;
                    sorter.insert(p, (k, v))?;
                }
                check(tc)?;
                for rec in sorter.into_sorted()? {
                    let (p, (k, v)) = rec?;
                    emit(&mut w, p as usize, &(k, identity(v)))?;
                }
            }
        }
        lengths[current] = w.finish_segment()?;
        Ok(())
    })();
    let finish = result.and_then(|()| {
        w.into_inner()?
            .into_inner()
            .map_err(|e| FlintError::io("cannot write", &tmp, e.into_error()))?
            .sync_data()
            .ok();
        check(tc)
    });
    if let Err(e) = finish {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let base = env.local_dir().join(format!(
        "shuffle_{shuffle_id}_{}_{}",
        tc.partition, tc.task_id
    ));
    let data = base.with_extension("data");
    write_index(&base.with_extension("index"), &lengths)?;
    std::fs::rename(&tmp, &data)
        .map_err(|e| FlintError::io("cannot commit shuffle file", &data, e))?;
    Ok(MapStatus {
        executor_id: env.executor_id.clone(),
        data_file: data,
        segment_lengths: lengths,
    })
}

fn check(tc: &TaskContext) -> Result<()> {
    match tc.take_error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Offsets of each segment (n + 1 little-endian u64s), as Spark's index files.
fn write_index(path: &Path, lengths: &[u64]) -> Result<()> {
    let mut f =
        BufWriter::new(File::create(path).map_err(|e| FlintError::io("cannot create", path, e))?);
    let mut off = 0u64;
    let io = |e| FlintError::io("cannot write", path, e);
    f.write_all(&off.to_le_bytes()).map_err(io)?;
    for l in lengths {
        off += l;
        f.write_all(&off.to_le_bytes()).map_err(io)?;
    }
    f.flush().map_err(io)
}
