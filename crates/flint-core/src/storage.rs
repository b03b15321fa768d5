//! Block storage on an executor: values the driver placed for tasks to read
//! (parallelized collections' slices, broadcast values). Blocks are kept as live
//! objects, so a task in the same process reads them without a copy.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockId {
    /// Slice `slice` of the parallelized collection RDD `rdd`.
    ParallelSlice {
        rdd: usize,
        slice: usize,
    },
    Broadcast {
        id: usize,
    },
}

type Block = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
pub struct BlockStore {
    blocks: RwLock<HashMap<BlockId, Block>>,
}

impl BlockStore {
    pub fn put(&self, id: BlockId, value: Block) {
        self.blocks.write().insert(id, value);
    }

    pub fn get<T: Send + Sync + 'static>(&self, id: BlockId) -> Option<Arc<T>> {
        let b = self.blocks.read().get(&id).cloned()?;
        b.downcast::<T>().ok()
    }

    pub fn remove_where(&self, pred: impl Fn(&BlockId) -> bool) {
        self.blocks.write().retain(|k, _| !pred(k));
    }

    pub fn len(&self) -> usize {
        self.blocks.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
