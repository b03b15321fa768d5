//! Recovery paths end to end: shuffle output and cached blocks that vanish, are
//! cut short or are damaged behind the engine's back are recomputed from lineage;
//! the job's answer never changes and never loses records.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flint::prelude::*;

fn context() -> FlintContext {
    FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap()
}

fn files(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .collect();
    v.sort();
    v
}

/// Runs `f` on another thread and fails the test if it has not returned within
/// a generous deadline (a hang is the failure these tests look for).
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

type Damage = fn(&Path);

const DAMAGES: [(&str, Damage); 4] = [
    ("emptied", |p| std::fs::write(p, b"").unwrap()),
    ("cut in half", |p| {
        let len = std::fs::metadata(p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(len / 2).unwrap();
    }),
    ("cut after its first frame", |p| {
        let bytes = std::fs::read(p).unwrap();
        let stored = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        std::fs::write(p, &bytes[..(16 + stored).min(bytes.len())]).unwrap();
    }),
    ("with a flipped byte", |p| {
        let mut bytes = std::fs::read(p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(p, bytes).unwrap();
    }),
];

#[test]
fn damaged_shuffle_output_is_recomputed_never_lost() {
    for (what, damage) in DAMAGES {
        let sc = context();
        // Enough distinct keys that each map output holds several frames.
        let counts = sc
            .parallelize(
                (0..200_000u64)
                    .map(|i| (i % 20_000, 1u32))
                    .collect::<Vec<_>>(),
                4,
            )
            .reduce_by_key_with(3, Fn!(|a: u32, b: u32| a + b));
        let first = sorted(counts.collect().unwrap());
        assert_eq!(first.len(), 20_000);
        let outputs = files(sc.env().local_dir(), "shuffle_", ".data");
        assert_eq!(outputs.len(), 4);
        for p in &outputs {
            damage(p);
        }
        let again = within_deadline("the job after the damage", move || counts.collect());
        assert_eq!(
            sorted(again.unwrap()),
            first,
            "shuffle output {what}: the same answer, recomputed"
        );
    }
}

/// The same for a sorted shuffle, whose records carry their values' lengths
/// and whose reducers read values undecoded: with number keys, and with text
/// keys, which reducers also keep undecoded.
#[test]
fn damaged_sorted_shuffle_output_is_recomputed_never_lost() {
    sorted_shuffle_damage(|k| k);
    sorted_shuffle_damage(|k| format!("key {k:05}"));
}

fn sorted_shuffle_damage<K: flint::Key + Ord + std::fmt::Debug>(key: fn(u64) -> K) {
    for (what, damage) in DAMAGES {
        let sc = context();
        let rows = sc
            .parallelize(
                (0..100_000u64)
                    .map(|i| (key(i * 7919 % 20_000), format!("value {i}")))
                    .collect::<Vec<_>>(),
                4,
            )
            .sort_by_key(true, 3)
            .unwrap();
        let first = rows.collect().unwrap();
        assert_eq!(first.len(), 100_000);
        assert!(first.windows(2).all(|w| w[0].0 <= w[1].0));
        let outputs = files(sc.env().local_dir(), "shuffle_", ".data");
        assert_eq!(outputs.len(), 4);
        for p in &outputs {
            damage(p);
        }
        let again = within_deadline("the job after the damage", move || rows.collect());
        assert!(
            again.unwrap() == first,
            "sorted shuffle output {what}: the same rows in the same order, recomputed"
        );
    }
}

/// Text that is not UTF-8, in a frame whose checksum matches (a bug or a
/// peer that frames it so), in a sorted shuffle's keys or values: reducers
/// keep such keys and values undecoded until output, yet the map output that
/// holds the text must be recomputed, as it is when a record fails to decode
/// while fetching, never the job failed.
#[test]
fn sealed_text_that_is_not_text_is_recomputed() {
    sealed_forgery_is_recomputed(b"key ");
    sealed_forgery_is_recomputed(b"val ");
}

fn sealed_forgery_is_recomputed(needle: &[u8]) {
    let what = String::from_utf8_lossy(needle).into_owned();
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.shuffle.compress", "false"),
    )
    .unwrap();
    let rows = sc
        .parallelize(
            (0..20_000u64)
                .map(|i| (format!("key {:05}", i * 7919 % 20_000), format!("val {i}")))
                .collect::<Vec<_>>(),
            4,
        )
        .sort_by_key(true, 3)
        .unwrap();
    let first = rows.collect().unwrap();
    let outputs = files(sc.env().local_dir(), "shuffle_", ".data");
    assert_eq!(outputs.len(), 4);
    let mut forged = 0;
    for p in &outputs {
        let mut bytes = std::fs::read(p).unwrap();
        let mut at = 0;
        // Each frame: stored length, raw length, checksum, then its bytes.
        while at + 16 <= bytes.len() {
            let stored = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let raw = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
            let body = at + 16..at + 16 + stored;
            if let Some(i) = bytes[body.clone()].windows(4).position(|w| w == needle) {
                bytes[body.start + i] = 0xff;
                let sum = xxhash_rust::xxh3::xxh3_64_with_seed(&bytes[body.clone()], raw.into());
                bytes[at + 8..at + 16].copy_from_slice(&sum.to_le_bytes());
                forged += 1;
            }
            at = body.end;
        }
        std::fs::write(p, bytes).unwrap();
    }
    assert!(forged >= 4, "{what}: {forged} frames forged");
    let again = within_deadline("the job after the forged text", move || rows.collect());
    assert!(
        again.unwrap() == first,
        "{what}: the same rows in the same order, recomputed"
    );
}

#[test]
fn a_rerun_result_stage_completes_after_some_partitions_finished() {
    // Two keys over 16 reducers: most reducers are empty and finish at once,
    // the rest lose their input; the rerun holds only the unfinished ones.
    let sc = context();
    let counts = sc
        .parallelize((0..1000u32).map(|i| (i % 2, 1u32)).collect::<Vec<_>>(), 2)
        .reduce_by_key_with(16, Fn!(|a: u32, b: u32| a + b));
    let first = sorted(counts.collect().unwrap());
    assert_eq!(first, vec![(0, 500), (1, 500)]);
    let outputs = files(sc.env().local_dir(), "shuffle_", ".data");
    std::fs::remove_file(&outputs[0]).unwrap();
    let again = within_deadline("the job after losing a map output", move || {
        counts.collect()
    });
    assert_eq!(sorted(again.unwrap()), first);
}

static COMPUTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn missing_or_damaged_disk_blocks_are_recomputed() {
    let sc = context();
    let data: Vec<(u64, String)> = (0..30_000).map(|i| (i, format!("row-{i}"))).collect();
    let rdd = sc
        .parallelize(data.clone(), 3)
        .map(Fn!(|kv: (u64, String)| {
            COMPUTED.fetch_add(1, Ordering::SeqCst);
            kv
        }))
        .persist(StorageLevel::DISK_ONLY);
    assert_eq!(rdd.collect().unwrap(), data);
    assert_eq!(COMPUTED.load(Ordering::SeqCst), 30_000);
    let blocks_dir = sc.env().local_dir().join("blocks");
    let blocks = files(&blocks_dir, "rdd_", "");
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    std::fs::remove_file(&blocks[0]).unwrap();
    DAMAGES[1].1(&blocks[1]);
    DAMAGES[3].1(&blocks[2]);
    assert_eq!(rdd.collect().unwrap(), data, "the same records, recomputed");
    assert_eq!(
        COMPUTED.load(Ordering::SeqCst),
        60_000,
        "all three partitions were recomputed from lineage"
    );
    assert_eq!(rdd.collect().unwrap(), data);
    assert_eq!(COMPUTED.load(Ordering::SeqCst), 60_000, "and cached again");
}

#[test]
fn jobs_over_partitions_that_do_not_exist_are_refused_up_front() {
    let sc = context();
    let rdd = sc.parallelize(vec![1, 2, 3], 2);
    let err = rdd
        .run_job(flint::rdd::CountFn, Some(vec![0, 2]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("non-existent partition: 2") && err.contains("Total number of partitions: 2"),
        "{err}"
    );
    let err = rdd
        .run_job(flint::rdd::CountFn, Some(vec![1, 1]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("listed twice"), "{err}");
    assert_eq!(
        rdd.run_job(flint::rdd::CountFn, Some(vec![1])).unwrap(),
        vec![2]
    );
}

#[test]
fn a_pipe_over_a_lost_shuffle_recomputes_it() {
    let sc = context();
    let piped = sc
        .parallelize((0..100u32).map(|i| (i % 10, 1u32)).collect::<Vec<_>>(), 2)
        .reduce_by_key_with(2, Fn!(|a: u32, b: u32| a + b))
        .map(Fn!(|kv: (u32, u32)| kv.0 * 1000 + kv.1))
        .pipe(&["cat"])
        .unwrap();
    let first = sorted(piped.collect().unwrap());
    for p in files(sc.env().local_dir(), "shuffle_", ".data") {
        std::fs::remove_file(p).unwrap();
    }
    let again = within_deadline("the piped job after losing its shuffle", move || {
        piped.collect()
    });
    assert_eq!(sorted(again.unwrap()), first);
}
