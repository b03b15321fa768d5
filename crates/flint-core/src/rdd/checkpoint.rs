//! RDD contents in files: `save_as_object_file` / `FlintContext::object_file`
//! (Spark's objectFile, here framed postcard records) and reliable
//! checkpointing, which writes an RDD's partitions to the checkpoint directory
//! and from then on reads them from there, truncating the lineage (iterative
//! jobs such as PageRank need it, or their lineage and its recomputation grow
//! with every iteration).
//!
//! Each part file is checksummed frames followed by a 16-byte footer (magic and
//! the frames' length), so a truncated or damaged file is an error that names
//! it, never fewer records.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{BoxIter, Dependency, PartitionFn, Ph, Rdd, RddBase, RddNode, shippable};
use crate::context::FlintContext;
use crate::env::{Compression, TaskContext};
use crate::error::{FlintError, Result};
use crate::func::Data;
use crate::shuffle::{FrameReader, FrameWriter};

const MAGIC: &[u8; 8] = b"FLINTOB1";

/// Writes a partition as `part-NNNNN` in `dir` (through a temporary name,
/// renamed when complete); returns the file's size.
#[derive(Serialize, Deserialize)]
pub struct SaveObjectsFn {
    dir: PathBuf,
}

impl<T: Data> PartitionFn<T> for SaveObjectsFn {
    type Out = u64;
    fn apply(&self, it: BoxIter<T>, tc: &TaskContext) -> Result<u64> {
        let name = format!("part-{:05}", tc.partition);
        let tmp = self.dir.join(format!(".{name}-attempt-{}.tmp", tc.task_id));
        let write = || -> Result<u64> {
            let f = File::create(&tmp).map_err(|e| FlintError::io("cannot create", &tmp, e))?;
            let mut w = FrameWriter::new(BufWriter::with_capacity(1 << 20, f), Compression::Lz4);
            for x in it {
                w.write(&x)?;
            }
            let len = w.finish_segment()?;
            let mut out = w.into_inner()?;
            let io = |e| FlintError::io("cannot write", &tmp, e);
            out.write_all(MAGIC).map_err(io)?;
            out.write_all(&len.to_le_bytes()).map_err(io)?;
            out.flush().map_err(io)?;
            if let Some(e) = tc.take_error() {
                return Err(e);
            }
            Ok(len + 16)
        };
        let size = match write() {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let dst = self.dir.join(&name);
        std::fs::rename(&tmp, &dst).map_err(|e| FlintError::io("cannot commit", &dst, e))?;
        Ok(size)
    }
}

/// Reads one part file per partition; `sizes` (when known, as for checkpoints)
/// must match the files.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ObjectFileRdd<T: Data> {
    pub(crate) id: usize,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) sizes: Option<Vec<u64>>,
    pub(crate) name: String,
    /// A checkpoint keeps the partitioner of the RDD it replaced (driver only).
    #[serde(skip)]
    pub(crate) partitioner: Option<Arc<super::PartitionerAny>>,
    #[serde(skip)]
    pub(crate) _p: Ph<T>,
}

impl<T: Data> RddBase for ObjectFileRdd<T> {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn num_partitions(&self) -> usize {
        self.files.len()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
    fn partitioner(&self) -> Option<Arc<super::PartitionerAny>> {
        self.partitioner.clone()
    }
}

impl<T: Data> RddNode for ObjectFileRdd<T> {
    type Item = T;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<T>> {
        let path = &self.files[split];
        let expected = self.sizes.as_ref().map(|s| s[split]);
        let mut r = open_part::<T>(path, expected)?;
        let errors = tc.errors();
        let path = path.clone();
        Ok(Box::new(std::iter::from_fn(move || {
            match r.next_record() {
                Ok(x) => x,
                Err(e) => {
                    errors.fail(FlintError::Codec {
                        what: "object file",
                        reason: format!("{}: {e}", path.display()),
                    });
                    None
                }
            }
        })))
    }
    shippable!();
}

fn open_part<T: Data>(
    path: &Path,
    expected: Option<u64>,
) -> Result<FrameReader<BufReader<std::io::Take<File>>, T>> {
    let bad = |reason: String| FlintError::Codec {
        what: "object file",
        reason: format!("{}: {reason}", path.display()),
    };
    let mut f = File::open(path).map_err(|e| FlintError::io("cannot open", path, e))?;
    let size = f
        .metadata()
        .map_err(|e| FlintError::io("cannot stat", path, e))?
        .len();
    if let Some(want) = expected
        && want != size
    {
        return Err(bad(format!("holds {size} bytes, {want} were written")));
    }
    if size < 16 {
        return Err(bad(format!("{size} bytes is too short for a part file")));
    }
    let mut footer = [0u8; 16];
    f.seek(SeekFrom::Start(size - 16))
        .and_then(|_| f.read_exact(&mut footer))
        .map_err(|e| FlintError::io("cannot read", path, e))?;
    let len = u64::from_le_bytes(footer[8..].try_into().unwrap_or_default());
    if &footer[..8] != MAGIC || len != size - 16 {
        return Err(bad(
            "not a complete Flint object file (its footer is missing or wrong)".into(),
        ));
    }
    f.seek(SeekFrom::Start(0))
        .map_err(|e| FlintError::io("cannot read", path, e))?;
    Ok(FrameReader::new(
        BufReader::with_capacity(128 << 10, f.take(len)),
        Compression::Lz4,
        len,
    ))
}

impl<T: Data> Rdd<T> {
    /// Writes the elements, one file per partition (`part-00000`, ...), in
    /// Flint's binary record format, read back by `FlintContext::object_file`.
    pub fn save_as_object_file(&self, dir: impl Into<PathBuf>) -> Result<()> {
        let dir = super::sources::absolute(&dir.into())?;
        if dir.exists() {
            return Err(FlintError::OutputExists(dir));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| FlintError::io("cannot create output directory", &dir, e))?;
        self.run_job(SaveObjectsFn { dir: dir.clone() }, None)?;
        let ok = dir.join("_SUCCESS");
        std::fs::write(&ok, b"").map_err(|e| FlintError::io("cannot write", &ok, e))
    }

    /// Saves the partitions to the checkpoint directory now (running a job)
    /// and from then on reads them from there: the lineage before this RDD is
    /// forgotten, by every handle on it and every RDD built on it. Unlike
    /// Spark's lazy `checkpoint()`, which writes after the next action, this is
    /// eager; persist the RDD first if it is expensive to compute, as Spark
    /// advises too. Needs `FlintContext::set_checkpoint_dir`.
    pub fn checkpoint(&self) -> Result<()> {
        let _one_at_a_time = self.meta.checkpointing.lock();
        if self.is_checkpointed() {
            return Ok(());
        }
        let sc = self.context()?;
        let root = sc.checkpoint_dir().ok_or_else(|| {
            FlintError::InvalidArgument(
                "Checkpoint directory has not been set in the FlintContext; call set_checkpoint_dir first"
                    .into(),
            )
        })?;
        let dir = root.join(format!("rdd-{}", self.id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| FlintError::io("cannot clear checkpoint directory", &dir, e))?;
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| FlintError::io("cannot create checkpoint directory", &dir, e))?;
        let sizes = self.run_job(SaveObjectsFn { dir: dir.clone() }, None)?;
        let files = (0..sizes.len())
            .map(|i| dir.join(format!("part-{i:05}")))
            .collect();
        let node: Arc<dyn RddNode<Item = T>> = Arc::new(ObjectFileRdd::<T> {
            id: self.id(),
            files,
            sizes: Some(sizes),
            name: "ReliableCheckpointRDD".into(),
            partitioner: self.partitioner_any(),
            _p: Default::default(),
        });
        // Every handle (and every RDD built on this one) now reads the files;
        // the lineage is dropped once no running job holds it.
        *self.node.write() = node;
        let _ = self.meta.checkpoint.set(dir);
        Ok(())
    }

    pub fn is_checkpointed(&self) -> bool {
        self.meta.checkpoint_dir().is_some()
    }

    /// Where the checkpoint is, once written.
    pub fn checkpoint_file(&self) -> Option<PathBuf> {
        self.meta.checkpoint_dir()
    }
}

impl FlintContext {
    /// Reads a directory written by `save_as_object_file`: one partition per
    /// part file.
    pub fn object_file<T: Data>(&self, path: impl AsRef<Path>) -> Result<Rdd<T>> {
        let path = &super::sources::absolute(path.as_ref())?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| FlintError::io("cannot list directory", path, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
            })
            .collect();
        if files.is_empty() {
            return Err(FlintError::InvalidArgument(format!(
                "{} holds no part files; is it the output of save_as_object_file?",
                path.display()
            )));
        }
        // By partition number: part-100000 comes after part-99999.
        files.sort_by_key(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let num = n
                .as_deref()
                .and_then(|n| n.strip_prefix("part-"))
                .and_then(|d| d.parse::<u64>().ok());
            (num, n)
        });
        Ok(Rdd::from_node(
            self,
            ObjectFileRdd::<T> {
                id: self.new_rdd_id(),
                files,
                sizes: None,
                name: "ObjectFileRDD".into(),
                partitioner: None,
                _p: Default::default(),
            },
        ))
    }
}
