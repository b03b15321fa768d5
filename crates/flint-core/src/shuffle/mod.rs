//! Sort-based shuffle, as Spark's: each map task writes one data file (records
//! grouped by reduce partition, compressed in frames) and one index file of
//! partition offsets; aggregation and sorting spill sorted runs to disk when they
//! outgrow the task's memory share and merge them. The map-output tracker records
//! where outputs are; the reader fetches a reduce partition's segments.

pub(crate) mod frames;
mod inline;
mod partitioner;
mod prefix;
mod reader;
mod spill;
mod tracker;
mod writer;

pub use frames::{FrameReader, FrameWriter};
pub use partitioner::{Partitioner, stable_hash};
pub(crate) use reader::{
    find_undecodable, read_partition, read_sized_partition, read_sized_raw_partition,
};
pub(crate) use spill::SpillFile;
pub use spill::{Aggregator, ExternalAggregator, ExternalSorter};
pub use tracker::{MapOutputTracker, MapStatus, SegmentLocation};

/// The (shuffle, map, task attempt) numbers of a map output's file name,
/// `shuffle_{shuffle}_{map}_{attempt}.data` (see `writer`).
pub fn map_output_ids(path: &std::path::Path) -> Option<(usize, usize, u64)> {
    let name = path.file_name()?.to_str()?;
    let mut it = name
        .strip_prefix("shuffle_")?
        .strip_suffix(".data")?
        .split('_');
    let ids = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    it.next().is_none().then_some(ids)
}
pub(crate) use writer::{check_killed, write_map_output};

#[cfg(test)]
mod tests {
    #[test]
    fn map_output_file_names_give_numbers_or_nothing() {
        let ids = |p: &str| super::map_output_ids(std::path::Path::new(p));
        assert_eq!(ids("/w/x/shuffle_3_14_159.data"), Some((3, 14, 159)));
        for bad in [
            "shuffle_3_14.data",
            "shuffle_3_14_159_2.data",
            "shuffle_3_14_159.index",
            "shuffle_a_14_159.data",
            "shuffle_3_14_-1.data",
            "other_3_14_159.data",
            "",
        ] {
            assert_eq!(ids(bad), None, "{bad}");
        }
    }
}
