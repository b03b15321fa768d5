//! Sort-based shuffle, as Spark's: each map task writes one data file (records
//! grouped by reduce partition, compressed in frames) and one index file of
//! partition offsets; aggregation and sorting spill sorted runs to disk when they
//! outgrow the task's memory share and merge them. The map-output tracker records
//! where outputs are; the reader fetches a reduce partition's segments.

pub(crate) mod frames;
mod partitioner;
mod reader;
mod spill;
mod tracker;
mod writer;

pub use frames::{FrameReader, FrameWriter};
pub use partitioner::{Partitioner, stable_hash};
pub(crate) use reader::read_partition;
pub(crate) use spill::SpillFile;
pub use spill::{Aggregator, ExternalAggregator, ExternalSorter};
pub use tracker::{MapOutputTracker, MapStatus, SegmentLocation};
pub(crate) use writer::write_map_output;
