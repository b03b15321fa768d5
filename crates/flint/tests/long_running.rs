//! A driver that runs jobs for a long time (a service, a notebook) must not grow:
//! the blocks, shuffle files and map-output entries of RDDs, shuffles and
//! broadcasts it no longer holds are cleaned up. Alone in its own test binary so
//! the process's RSS is this test's.

use flint::prelude::*;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// One job's worth of everything that used to stay behind: a parallelized
/// collection, a shuffle, a DISK_ONLY cached RDD and a broadcast.
fn one_job(sc: &FlintContext, i: u64) {
    let data: Vec<u64> = (0..20_000).map(|x| x + i).collect();
    let table = sc.broadcast(vec![i; 4096]);
    let counts = sc
        .parallelize(data, 4)
        .map(Fn!(move |x: u64| (x % 97, table.value()[0] + 1)))
        .reduce_by_key_with(4, Fn!(|a: u64, b: u64| a + b))
        .persist(StorageLevel::DISK_ONLY);
    assert_eq!(counts.count().unwrap(), 97);
    assert_eq!(
        counts
            .map(Fn!(|kv: (u64, u64)| kv.1))
            .reduce(Fn!(|a: u64, b: u64| a + b))
            .unwrap(),
        20_000 * (i + 1)
    );
}

#[test]
fn a_thousand_jobs_leave_memory_and_the_local_dir_flat() {
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let dir = sc.env().local_dir().to_path_buf();
    for i in 0..50 {
        one_job(&sc, i);
    }
    sc.wait_for_cleanup();
    let (rss0, files0) = (rss_bytes(), files_under(&dir));
    for i in 50..1050 {
        one_job(&sc, i);
    }
    sc.wait_for_cleanup();
    let (rss1, files1) = (rss_bytes(), files_under(&dir));
    assert_eq!(
        sc.env().map_outputs.num_shuffles(),
        0,
        "map-output entries of dropped shuffles are removed"
    );
    assert_eq!(
        files1, 0,
        "shuffle and block files are removed (had {files0} after warm-up)"
    );
    let stats = sc.env().blocks.stats();
    assert_eq!(stats.disk_blocks + stats.memory_blocks, 0, "{stats:?}");
    // Without cleaning, 1,000 jobs pin 160 MB of parallelized slices and 32 MB
    // of broadcasts; the bound leaves room for allocator noise.
    let grown = rss1.saturating_sub(rss0);
    assert!(
        grown < 48 << 20,
        "RSS grew by {} MiB over 1,000 jobs ({} -> {} MiB)",
        grown >> 20,
        rss0 >> 20,
        rss1 >> 20
    );
}
