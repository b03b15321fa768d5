//! Task metrics (Spark's TaskMetrics): what one task attempt spent and moved.
//! A running task updates `LiveMetrics` (relaxed atomics, added in batches so
//! the record loops stay cheap); heartbeats read them while it runs, and the
//! final `TaskMetrics` travels with the task's end to the listener bus.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// A snapshot of one task attempt's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// Time to open the shipped task code (Spark's executorDeserializeTime).
    pub deserialize_ms: u64,
    /// Time running the task's code (Spark's executorRunTime).
    pub run_ms: u64,
    /// Bytes of the encoded result value sent to the driver.
    pub result_size: u64,
    /// Shuffle bytes read, as stored (compressed), local and remote.
    pub shuffle_read_bytes: u64,
    /// The part of `shuffle_read_bytes` fetched from other executors.
    pub shuffle_remote_bytes_read: u64,
    /// The part read from disk though another executor on this host wrote it
    /// (Spark's host-local shuffle read).
    pub shuffle_host_local_bytes_read: u64,
    pub shuffle_read_records: u64,
    /// Shuffle bytes written, as stored.
    pub shuffle_write_bytes: u64,
    pub shuffle_write_records: u64,
}

/// The counters a running task adds to.
#[derive(Debug, Default)]
pub struct LiveMetrics {
    deserialize_ms: AtomicU64,
    run_ms: AtomicU64,
    result_size: AtomicU64,
    shuffle_read_bytes: AtomicU64,
    shuffle_remote_bytes_read: AtomicU64,
    shuffle_host_local_bytes_read: AtomicU64,
    shuffle_read_records: AtomicU64,
    shuffle_write_bytes: AtomicU64,
    shuffle_write_records: AtomicU64,
}

impl LiveMetrics {
    pub fn snapshot(&self) -> TaskMetrics {
        TaskMetrics {
            deserialize_ms: self.deserialize_ms.load(Relaxed),
            run_ms: self.run_ms.load(Relaxed),
            result_size: self.result_size.load(Relaxed),
            shuffle_read_bytes: self.shuffle_read_bytes.load(Relaxed),
            shuffle_remote_bytes_read: self.shuffle_remote_bytes_read.load(Relaxed),
            shuffle_host_local_bytes_read: self.shuffle_host_local_bytes_read.load(Relaxed),
            shuffle_read_records: self.shuffle_read_records.load(Relaxed),
            shuffle_write_bytes: self.shuffle_write_bytes.load(Relaxed),
            shuffle_write_records: self.shuffle_write_records.load(Relaxed),
        }
    }

    pub fn set_times(&self, deserialize_ms: u64, run_ms: u64) {
        self.deserialize_ms.store(deserialize_ms, Relaxed);
        self.run_ms.store(run_ms, Relaxed);
    }

    pub fn set_result_size(&self, n: u64) {
        self.result_size.store(n, Relaxed);
    }

    pub fn add_shuffle_read(&self, bytes: u64, remote: bool) {
        self.shuffle_read_bytes.fetch_add(bytes, Relaxed);
        if remote {
            self.shuffle_remote_bytes_read.fetch_add(bytes, Relaxed);
        }
    }

    pub fn add_shuffle_host_local_read(&self, bytes: u64) {
        self.shuffle_host_local_bytes_read.fetch_add(bytes, Relaxed);
    }

    pub fn add_shuffle_read_records(&self, n: u64) {
        self.shuffle_read_records.fetch_add(n, Relaxed);
    }

    pub fn add_shuffle_write(&self, bytes: u64, records: u64) {
        self.shuffle_write_bytes.fetch_add(bytes, Relaxed);
        self.shuffle_write_records.fetch_add(records, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sees_every_counter() {
        let m = LiveMetrics::default();
        m.set_times(3, 40);
        m.set_result_size(7);
        m.add_shuffle_read(100, false);
        m.add_shuffle_read(50, true);
        m.add_shuffle_read_records(9);
        m.add_shuffle_host_local_read(20);
        m.add_shuffle_write(60, 5);
        m.add_shuffle_write(1, 1);
        assert_eq!(
            m.snapshot(),
            TaskMetrics {
                deserialize_ms: 3,
                run_ms: 40,
                result_size: 7,
                shuffle_read_bytes: 150,
                shuffle_remote_bytes_read: 50,
                shuffle_host_local_bytes_read: 20,
                shuffle_read_records: 9,
                shuffle_write_bytes: 61,
                shuffle_write_records: 6,
            }
        );
    }
}
