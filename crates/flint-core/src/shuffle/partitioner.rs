//! Which reduce partition a key goes to.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::func::Key;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Partitioner<K: Key> {
    /// Hash of the key modulo the partition count.
    Hash(usize),
    /// Keys up to `bounds[i]` go to partition i (reversed when descending).
    Range { bounds: Vec<K>, ascending: bool },
}

impl<K: Key> PartialEq for Partitioner<K> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Partitioner::Hash(a), Partitioner::Hash(b)) => a == b,
            (
                Partitioner::Range {
                    bounds: a,
                    ascending: x,
                },
                Partitioner::Range {
                    bounds: b,
                    ascending: y,
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

/// A hash that is the same in every process running this binary.
pub fn stable_hash<K: Hash + ?Sized>(k: &K) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    k.hash(&mut h);
    // FxHash's low bits are weak for small integers; finish with a mixer.
    let mut z = h.finish();
    z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^ (z >> 33)
}

impl<K: Key> Partitioner<K> {
    pub fn num_partitions(&self) -> usize {
        match self {
            Partitioner::Hash(n) => *n,
            Partitioner::Range { bounds, .. } => bounds.len() + 1,
        }
    }

    pub fn partition(&self, k: &K) -> usize {
        self.partition_hashed(k, stable_hash(k))
    }

    /// As `partition`, with `hash == stable_hash(k)` already computed.
    #[inline]
    pub fn partition_hashed(&self, k: &K, hash: u64) -> usize {
        match self {
            // Multiply-shift on the low 32 bits instead of a 64-bit modulo (a
            // division per record); the high bits stay free for hash tables.
            Partitioner::Hash(n) => (((hash & 0xffff_ffff) * (*n).max(1) as u64) >> 32) as usize,
            Partitioner::Range { bounds, ascending } => {
                let i = bounds.partition_point(|b| b < k);
                if *ascending { i } else { bounds.len() - i }
            }
        }
    }

    /// Range bounds from a sample: `parts - 1` evenly spaced keys of the sorted sample.
    pub fn range_from_sample(mut sample: Vec<K>, parts: usize, ascending: bool) -> Self {
        sample.sort();
        sample.dedup();
        let mut bounds = Vec::new();
        if parts > 1 && !sample.is_empty() {
            for i in 1..parts {
                let idx = i * sample.len() / parts;
                if idx < sample.len() {
                    let b = sample[idx].clone();
                    if bounds.last() != Some(&b) {
                        bounds.push(b);
                    }
                }
            }
        }
        Partitioner::Range { bounds, ascending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_partitioning_is_ordered() {
        let p = Partitioner::range_from_sample((0..1000).collect::<Vec<i32>>(), 4, true);
        assert_eq!(p.num_partitions(), 4);
        let mut last = 0;
        for k in 0..1000 {
            let part = p.partition(&k);
            assert!(part >= last && part < 4);
            last = part;
        }
        let d = Partitioner::range_from_sample((0..1000).collect::<Vec<i32>>(), 4, false);
        assert_eq!(d.partition(&0), 3);
        assert_eq!(d.partition(&999), 0);
    }

    #[test]
    fn hash_partitioning_spreads() {
        let p = Partitioner::<u64>::Hash(8);
        let mut counts = [0usize; 8];
        for k in 0..8000u64 {
            counts[p.partition(&k)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
