//! persist/cache: cached partitions are reused, evicted under memory pressure,
//! spilled to disk for *_AND_DISK levels, and recomputed from lineage when gone.

use std::sync::atomic::{AtomicUsize, Ordering};

use flint::prelude::*;

static COMPUTED_A: AtomicUsize = AtomicUsize::new(0);
static COMPUTED_B: AtomicUsize = AtomicUsize::new(0);

#[test]
fn cached_partitions_are_reused_until_unpersisted() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let rdd = sc
        .parallelize((0..1000).collect::<Vec<u32>>(), 4)
        .map(Fn!(|x: u32| {
            COMPUTED_A.fetch_add(1, Ordering::SeqCst);
            x * 2
        }));
    rdd.cache();
    assert_eq!(rdd.storage_level(), StorageLevel::MEMORY_ONLY);
    let sum = |r: &Rdd<u32>| {
        r.map(Fn!(|x: u32| x as u64))
            .reduce(Fn!(|a: u64, b: u64| a + b))
            .unwrap()
    };
    assert_eq!(sum(&rdd), 999_000);
    assert_eq!(COMPUTED_A.load(Ordering::SeqCst), 1000);
    assert_eq!(sum(&rdd), 999_000);
    assert_eq!(rdd.count().unwrap(), 1000);
    assert_eq!(
        COMPUTED_A.load(Ordering::SeqCst),
        1000,
        "second and third jobs read the cache"
    );
    rdd.unpersist();
    assert_eq!(sum(&rdd), 999_000);
    assert_eq!(
        COMPUTED_A.load(Ordering::SeqCst),
        2000,
        "unpersisted RDD is recomputed"
    );
}

#[test]
fn memory_pressure_evicts_and_disk_levels_survive() {
    // 64 KiB of storage memory: most partitions cannot stay in memory.
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.storage.memory", "64k"),
    )
    .unwrap();
    let data: Vec<(u64, String)> = (0..20_000).map(|i| (i, format!("row-{i}"))).collect();
    let mem = sc
        .parallelize(data.clone(), 8)
        .map(Fn!(|kv: (u64, String)| {
            COMPUTED_B.fetch_add(1, Ordering::SeqCst);
            kv
        }))
        .persist(StorageLevel::MEMORY_AND_DISK);
    assert_eq!(mem.collect().unwrap(), data);
    let first = COMPUTED_B.load(Ordering::SeqCst);
    assert_eq!(first, 20_000);
    assert_eq!(mem.collect().unwrap(), data);
    assert_eq!(
        COMPUTED_B.load(Ordering::SeqCst),
        first,
        "MEMORY_AND_DISK blocks are read back, not recomputed"
    );

    let disk = sc
        .parallelize(data.clone(), 3)
        .persist(StorageLevel::DISK_ONLY);
    assert_eq!(disk.count().unwrap(), 20_000);
    assert_eq!(disk.collect().unwrap(), data);

    // MEMORY_ONLY partitions that do not fit are recomputed: results stay right.
    let only = sc
        .parallelize(data.clone(), 8)
        .map(Fn!(|kv: (u64, String)| kv.0))
        .cache();
    assert_eq!(only.count().unwrap(), 20_000);
    assert_eq!(
        only.reduce(Fn!(|a: u64, b: u64| a + b)).unwrap(),
        (0..20_000u64).sum::<u64>()
    );
}
