//! Where each map task's shuffle output is (Spark's MapOutputTracker).

use std::collections::HashMap;
use std::path::PathBuf;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::{FlintError, Result};

/// The output of one map task: its file and the byte length of each reduce
/// partition's segment in it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapStatus {
    pub executor_id: String,
    pub data_file: PathBuf,
    pub segment_lengths: Vec<u64>,
}

/// One reduce partition's segment of one map output: what a reducer reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentLocation {
    pub map_id: usize,
    pub executor_id: String,
    /// The map task attempt that wrote it: another executor serves exactly
    /// that attempt's output, never a later one of the same map.
    pub attempt: Option<u64>,
    pub data_file: PathBuf,
    pub start: u64,
    pub len: u64,
}

/// A registered output with its segment offsets computed once, so a reducer
/// finds its segment in O(1) per map (not O(reduce partitions)).
struct Registered {
    status: MapStatus,
    offsets: Vec<u64>,
}

impl Registered {
    fn new(status: MapStatus) -> Self {
        let mut offsets = Vec::with_capacity(status.segment_lengths.len() + 1);
        let mut off = 0u64;
        offsets.push(0);
        for l in &status.segment_lengths {
            off = off.saturating_add(*l);
            offsets.push(off);
        }
        Registered { status, offsets }
    }
}

#[derive(Default)]
pub struct MapOutputTracker {
    shuffles: RwLock<HashMap<usize, Vec<Option<Registered>>>>,
}

impl MapOutputTracker {
    pub fn register_shuffle(&self, shuffle_id: usize, num_maps: usize) {
        self.shuffles
            .write()
            .entry(shuffle_id)
            .or_insert_with(|| (0..num_maps).map(|_| None).collect());
    }

    pub fn register_map_output(&self, shuffle_id: usize, map_id: usize, status: MapStatus) {
        if let Some(v) = self.shuffles.write().get_mut(&shuffle_id)
            && map_id < v.len()
        {
            v[map_id] = Some(Registered::new(status));
        }
    }

    /// Forgets a map output if `executor` still holds it (a copy recomputed
    /// elsewhere since then stays).
    pub fn unregister_map_output_on(&self, shuffle_id: usize, map_id: usize, executor: &str) {
        if let Some(v) = self.shuffles.write().get_mut(&shuffle_id)
            && let Some(slot) = v.get_mut(map_id)
            && slot
                .as_ref()
                .is_some_and(|s| s.status.executor_id == executor)
        {
            *slot = None;
        }
    }

    /// Map ids whose output is missing (all of them for an unknown shuffle).
    pub fn missing(&self, shuffle_id: usize, num_maps: usize) -> Vec<usize> {
        match self.shuffles.read().get(&shuffle_id) {
            Some(v) => (0..v.len()).filter(|&i| v[i].is_none()).collect(),
            None => (0..num_maps).collect(),
        }
    }

    pub fn is_available(&self, shuffle_id: usize) -> bool {
        self.shuffles
            .read()
            .get(&shuffle_id)
            .is_some_and(|v| v.iter().all(Option::is_some))
    }

    /// The non-empty segments of reduce partition `reduce`, one per map output
    /// in map order, or a fetch failure naming the first map whose output is
    /// missing or has no such partition.
    pub fn segments(&self, shuffle_id: usize, reduce: usize) -> Result<Vec<SegmentLocation>> {
        let guard = self.shuffles.read();
        let v = guard.get(&shuffle_id).ok_or(FlintError::FetchFailed {
            shuffle_id,
            map_id: 0,
            executor: None,
            reason: "shuffle is not registered".into(),
        })?;
        let mut out = Vec::new();
        for (map_id, slot) in v.iter().enumerate() {
            let Some(r) = slot else {
                return Err(FlintError::FetchFailed {
                    shuffle_id,
                    map_id,
                    executor: None,
                    reason: "no output registered".into(),
                });
            };
            let Some(&len) = r.status.segment_lengths.get(reduce) else {
                return Err(FlintError::FetchFailed {
                    shuffle_id,
                    map_id,
                    executor: Some(r.status.executor_id.clone()),
                    reason: format!("map output has no partition {reduce}"),
                });
            };
            if len > 0 {
                out.push(SegmentLocation {
                    map_id,
                    executor_id: r.status.executor_id.clone(),
                    attempt: super::map_output_ids(&r.status.data_file).map(|(_, _, t)| t),
                    data_file: r.status.data_file.clone(),
                    start: r.offsets[reduce],
                    len,
                });
            }
        }
        Ok(out)
    }

    /// Forgets a shuffle entirely (its dependency is gone).
    pub fn unregister_shuffle(&self, shuffle_id: usize) {
        self.shuffles.write().remove(&shuffle_id);
    }

    /// Shuffles with registered state (for leak checks).
    pub fn num_shuffles(&self) -> usize {
        self.shuffles.read().len()
    }

    /// Forgets every map output written by `executor` (all shuffles): its files
    /// are considered lost, as Spark does without an external shuffle service.
    pub fn remove_outputs_on_executor(&self, executor: &str) -> usize {
        let mut n = 0;
        for v in self.shuffles.write().values_mut() {
            for slot in v.iter_mut() {
                if slot
                    .as_ref()
                    .is_some_and(|s| s.status.executor_id == executor)
                {
                    *slot = None;
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(exec: &str, lengths: Vec<u64>) -> MapStatus {
        MapStatus {
            executor_id: exec.into(),
            data_file: PathBuf::from(format!("/data/{exec}")),
            segment_lengths: lengths,
        }
    }

    #[test]
    fn segments_skip_empty_ones_and_know_their_offsets() {
        let t = MapOutputTracker::default();
        t.register_shuffle(3, 2);
        assert!(matches!(
            t.segments(3, 0),
            Err(FlintError::FetchFailed { map_id: 0, .. })
        ));
        t.register_map_output(3, 0, status("a", vec![5, 0, 7]));
        t.register_map_output(3, 1, status("b", vec![0, 0, 4]));
        assert!(t.segments(3, 1).unwrap().is_empty());
        let s = t.segments(3, 2).unwrap();
        assert_eq!(
            s.iter()
                .map(|s| (s.map_id, s.start, s.len))
                .collect::<Vec<_>>(),
            vec![(0, 5, 7), (1, 0, 4)]
        );
        let err = t.segments(3, 3).unwrap_err();
        assert!(
            matches!(&err, FlintError::FetchFailed { executor: Some(e), .. } if e == "a"),
            "{err:?}"
        );
        // A stale report about executor b does not remove a copy now on c.
        t.register_map_output(3, 1, status("c", vec![0, 0, 4]));
        t.unregister_map_output_on(3, 1, "b");
        assert!(t.is_available(3));
        t.unregister_map_output_on(3, 1, "c");
        assert_eq!(t.missing(3, 2), vec![1]);
    }
}
