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

impl MapStatus {
    pub fn segment(&self, reduce: usize) -> (u64, u64) {
        let start: u64 = self.segment_lengths[..reduce].iter().sum();
        (start, self.segment_lengths[reduce])
    }
}

#[derive(Default)]
pub struct MapOutputTracker {
    shuffles: RwLock<HashMap<usize, Vec<Option<MapStatus>>>>,
}

impl MapOutputTracker {
    pub fn register_shuffle(&self, shuffle_id: usize, num_maps: usize) {
        self.shuffles
            .write()
            .entry(shuffle_id)
            .or_insert_with(|| vec![None; num_maps]);
    }

    pub fn register_map_output(&self, shuffle_id: usize, map_id: usize, status: MapStatus) {
        if let Some(v) = self.shuffles.write().get_mut(&shuffle_id)
            && map_id < v.len()
        {
            v[map_id] = Some(status);
        }
    }

    pub fn unregister_map_output(&self, shuffle_id: usize, map_id: usize) {
        if let Some(v) = self.shuffles.write().get_mut(&shuffle_id)
            && map_id < v.len()
        {
            v[map_id] = None;
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

    /// All statuses of a shuffle, or a fetch failure naming the first missing map.
    pub fn statuses(&self, shuffle_id: usize) -> Result<Vec<MapStatus>> {
        let guard = self.shuffles.read();
        let v = guard.get(&shuffle_id).ok_or(FlintError::FetchFailed {
            shuffle_id,
            map_id: 0,
            reason: "shuffle is not registered".into(),
        })?;
        v.iter()
            .enumerate()
            .map(|(i, s)| {
                s.clone().ok_or(FlintError::FetchFailed {
                    shuffle_id,
                    map_id: i,
                    reason: "no output registered".into(),
                })
            })
            .collect()
    }

    /// The executor that wrote a map output, if registered.
    pub fn executor_of(&self, shuffle_id: usize, map_id: usize) -> Option<String> {
        self.shuffles
            .read()
            .get(&shuffle_id)
            .and_then(|v| v.get(map_id).cloned().flatten())
            .map(|s| s.executor_id)
    }

    /// Forgets every map output written by `executor` (all shuffles): its files
    /// are considered lost, as Spark does without an external shuffle service.
    pub fn remove_outputs_on_executor(&self, executor: &str) -> usize {
        let mut n = 0;
        for v in self.shuffles.write().values_mut() {
            for slot in v.iter_mut() {
                if slot.as_ref().is_some_and(|s| s.executor_id == executor) {
                    *slot = None;
                    n += 1;
                }
            }
        }
        n
    }
}
