//! Every operation checked against a plain Rust model of the same computation, on
//! random data and random partition counts (including empty inputs, empty
//! partitions and skewed keys).

#![allow(clippy::type_complexity)]

use std::sync::OnceLock;

use flint::prelude::*;
use proptest::prelude::*;

fn sc() -> &'static FlintContext {
    static SC: OnceLock<FlintContext> = OnceLock::new();
    SC.get_or_init(|| {
        FlintContext::new(FlintConf::new().app_name("model").master("local[3]")).unwrap()
    })
}

mod op_model;

use op_model::{pairs, sorted};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn narrow_ops(data in prop::collection::vec(-1000i32..1000, 0..300), parts in 1usize..9) {
        op_model::narrow_ops(sc(), data, parts)?;
    }

    #[test]
    fn pair_ops(a in pairs(), b in pairs(), pa in 1usize..6, pb in 1usize..6, np in 1usize..7) {
        op_model::pair_ops(sc(), a, b, pa, pb, np)?;
    }
}

#[test]
fn empty_rdds() {
    let e = sc().parallelize(Vec::<(u8, i32)>::new(), 3);
    assert_eq!(e.count().unwrap(), 0);
    assert!(e.is_empty().unwrap());
    assert!(
        e.reduce_by_key(Fn!(|a: i32, b: i32| a + b))
            .collect()
            .unwrap()
            .is_empty()
    );
    assert!(
        e.sort_by_key(true, 4)
            .unwrap()
            .collect()
            .unwrap()
            .is_empty()
    );
    assert!(e.values().reduce(Fn!(|a: i32, b: i32| a + b)).is_err());
    assert!(e.first().is_err());
    let r = sc().range(10, 0, -3, 2).unwrap().collect().unwrap();
    assert_eq!(r, vec![10, 7, 4, 1]);
}

#[test]
fn shuffle_stages_are_reused_across_jobs() {
    let counts = sc()
        .parallelize(
            (0..1000)
                .map(|i| (i % 10, 1u32))
                .collect::<Vec<(i32, u32)>>(),
            4,
        )
        .reduce_by_key(Fn!(|a: u32, b: u32| a + b));
    let first = sorted(counts.collect().unwrap());
    // The second job finds the shuffle output and runs only the result stage.
    let second = sorted(counts.collect().unwrap());
    assert_eq!(first, second);
    assert_eq!(first.len(), 10);
    assert!(first.iter().all(|&(_, c)| c == 100));
}

#[test]
fn text_files_split_on_line_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.txt");
    let lines: Vec<String> = (0..5000)
        .map(|i| format!("line {i} {}", "x".repeat(i % 37)))
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    for parts in [1, 2, 7, 64] {
        let got = sc()
            .text_file(path.to_str().unwrap(), parts)
            .unwrap()
            .collect()
            .unwrap();
        assert_eq!(got, lines, "with {parts} partitions");
    }
    // CRLF endings and no trailing newline.
    std::fs::write(&path, "a\r\nbb\r\nccc").unwrap();
    let got = sc()
        .text_file(path.to_str().unwrap(), 3)
        .unwrap()
        .collect()
        .unwrap();
    assert_eq!(got, vec!["a", "bb", "ccc"]);
    // A directory reads its files, skipping hidden ones and markers.
    std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
    std::fs::write(dir.path().join("b.txt"), "z\n").unwrap();
    let got = sc()
        .text_file(dir.path().to_str().unwrap(), 2)
        .unwrap()
        .collect()
        .unwrap();
    // Files are read in name order: b.txt before in.txt.
    assert_eq!(got, vec!["z", "a", "bb", "ccc"]);
    let whole = sc()
        .whole_text_files(dir.path().to_str().unwrap(), 2)
        .unwrap()
        .collect()
        .unwrap();
    assert_eq!(whole.len(), 2);
}

/// The lines a text file should yield: split on `\n`, one trailing `\r`
/// dropped, bad UTF-8 replaced, no empty last line after a final newline.
fn model_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Lines longer than the reader's chunk, empty lines, CRLF, bad UTF-8 and
    /// any split count: every line read exactly once, in order.
    #[test]
    fn text_file_lines_match_a_model(
        lines in prop::collection::vec(
            prop_oneof![
                4 => "[a-z ]{0,40}".prop_map(String::into_bytes),
                1 => Just(Vec::new()),
                1 => (0usize..200_000).prop_map(|n| vec![b'w'; n]),
                1 => Just(b"bad \xff\xfe utf8\r".to_vec()),
                1 => Just("caf\u{e9} \u{1F600}\r".as_bytes().to_vec()),
            ],
            0..60,
        ),
        trailing_newline in any::<bool>(),
        parts in 1usize..9,
    ) {
        let mut bytes = lines.join(&b'\n');
        if trailing_newline {
            bytes.push(b'\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, &bytes).unwrap();
        let got = sc().text_file(path.to_str().unwrap(), parts).unwrap().collect().unwrap();
        prop_assert_eq!(got, model_lines(&bytes));
        // In chunks: the same text, line ends kept, every line whole in one
        // record (each record but the last ends a line), none empty.
        let chunks = sc().text_file_chunks(path.to_str().unwrap(), parts).unwrap().collect().unwrap();
        prop_assert!(chunks.iter().all(|c| !c.is_empty()));
        if let Some((_, init)) = chunks.split_last() {
            prop_assert!(init.iter().all(|c| c.ends_with('\n')));
        }
        prop_assert_eq!(chunks.concat(), String::from_utf8_lossy(&bytes).into_owned());
    }
}

#[test]
fn aggregation_and_sort_spill_under_a_small_memory_budget() {
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.executor.memory", "4m")
            .set("flint.memory.fraction", "0.5"),
    )
    .unwrap();
    let n = 200_000u64;
    let data: Vec<(u64, String)> = (0..n)
        .map(|i| ((i * 7919) % n, format!("value-{i}")))
        .collect();
    let rdd = sc.parallelize(data, 4);
    let grouped = rdd
        .map_values(Fn!(|s: String| s.len() as u64))
        .reduce_by_key_with(3, Fn!(|a: u64, b: u64| a + b));
    assert_eq!(grouped.count().unwrap(), n);
    let sorted_keys: Vec<u64> = rdd.sort_by_key(true, 3).unwrap().keys().collect().unwrap();
    assert_eq!(sorted_keys, (0..n).collect::<Vec<_>>());
    assert!(
        sc.spill_count() > 0,
        "expected spills with a 1 MiB task budget"
    );
}

/// Sorted shuffles carry each value's length (a varint, one byte below 128
/// and more above): values of every length around those boundaries, equal
/// keys, both orders, in memory and spilled, come back whole and in order.
#[test]
fn sorted_values_of_every_length_survive_in_both_orders() {
    let data: Vec<(i32, String)> = (0..20_000)
        .map(|i| {
            (
                (i * 37 % 101) - 50,
                "v".repeat((i * 13 % 400) as usize) + &i.to_string(),
            )
        })
        .collect();
    for memory in ["1g", "2m"] {
        let sc = with_memory(memory);
        let rdd = sc.parallelize(data.clone(), 5);
        for ascending in [true, false] {
            let got = rdd.sort_by_key(ascending, 3).unwrap().collect().unwrap();
            let mut keys: Vec<i32> = got.iter().map(|r| r.0).collect();
            let mut want_keys: Vec<i32> = data.iter().map(|r| r.0).collect();
            want_keys.sort();
            if !ascending {
                want_keys.reverse();
            }
            assert_eq!(keys, want_keys, "{memory} ascending={ascending}");
            let (mut a, mut b) = (got.clone(), data.clone());
            a.sort();
            b.sort();
            assert!(a == b, "{memory} ascending={ascending}: records differ");
            keys.dedup();
        }
        if memory == "2m" {
            // (A task's share is 1 MiB at least.)
            assert!(sc.spill_count() > 0, "a 1 MiB task budget spills");
        }
    }
}

/// A `local[2]` context with this executor memory and half of it for
/// execution (a task's share is 1 MiB at least).
fn with_memory(memory: &str) -> FlintContext {
    FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.executor.memory", memory)
            .set("flint.memory.fraction", "0.5"),
    )
    .unwrap()
}

/// Text and byte keys, which a sorter keeps encoded and compares as bytes,
/// sort as their order through a shuffle, ascending and descending, in
/// memory and spilled: shared prefixes longer than 8 bytes, empty keys, keys
/// that extend others, non-ASCII text.
#[test]
fn text_and_byte_keys_sort_in_both_orders() {
    let data: Vec<(String, u32)> = (0..80_000u32)
        .map(|i| {
            let x = i.wrapping_mul(2_654_435_761) >> 8;
            let k = match x % 5 {
                0 => String::new(),
                1 => format!("sharedprefix{}", x % 700),
                2 => "b".repeat((x % 11) as usize),
                3 => format!("ü{}", x % 90),
                _ => format!("{x:x}"),
            };
            (k, i)
        })
        .collect();
    for memory in ["1g", "2m"] {
        let sc = with_memory(memory);
        for ascending in [true, false] {
            let mut want = data.clone();
            want.sort();
            if !ascending {
                want.reverse();
            }
            let texts = sc.parallelize(data.clone(), 5);
            let got = texts.sort_by_key(ascending, 3).unwrap().collect().unwrap();
            let keys: Vec<&String> = got.iter().map(|r| &r.0).collect();
            let want_keys: Vec<&String> = want.iter().map(|r| &r.0).collect();
            assert!(
                keys == want_keys,
                "{memory} ascending={ascending}: text key order"
            );
            let mut records = got.clone();
            records.sort();
            let mut all = data.clone();
            all.sort();
            assert!(
                records == all,
                "{memory} ascending={ascending}: records differ"
            );
            let bytes = texts.map(Fn!(|(k, v): (String, u32)| (
                flint::Bytes(k.into_bytes()),
                v
            )));
            let got = bytes
                .sort_by_key(ascending, 3)
                .unwrap()
                .keys()
                .collect()
                .unwrap();
            let got: Vec<String> = got
                .into_iter()
                .map(|b| String::from_utf8(b.0).unwrap())
                .collect();
            assert!(
                got.iter().collect::<Vec<_>>() == want_keys,
                "{memory} ascending={ascending}: byte key order"
            );
        }
        if memory == "2m" {
            assert!(sc.spill_count() > 0, "a 1 MiB task budget spills");
        }
    }
}

/// Records whose encoding is empty (keys and values of unit types) still
/// cross a shuffle and a spill, each one.
#[test]
fn records_that_encode_to_nothing_are_not_lost() {
    let units = sc().parallelize(vec![(); 1000], 4);
    assert_eq!(units.distinct().count().unwrap(), 1);
    let pairs = units.map(Fn!(|u: ()| (u, u)));
    assert_eq!(
        pairs
            .group_by_key()
            .map_values(Fn!(|v: Vec<()>| v.len()))
            .collect()
            .unwrap(),
        vec![((), 1000)]
    );
    assert_eq!(pairs.sort_by_key(true, 3).unwrap().count().unwrap(), 1000);
    assert_eq!(pairs.repartition(3).count().unwrap(), 1000);
    let small = with_memory("2m");
    let many = small.parallelize(vec![((), ()); 100_000], 2);
    assert_eq!(many.sort_by_key(true, 2).unwrap().count().unwrap(), 100_000);
    assert!(
        small.spill_count() > 0,
        "the sorter spilled its empty records"
    );
}

#[test]
fn sampling_is_deterministic_and_about_right() {
    let rdd = sc().parallelize((0..20_000).collect::<Vec<u32>>(), 4);
    let a = rdd.sample(false, 0.3, 7).unwrap().collect().unwrap();
    let b = rdd.sample(false, 0.3, 7).unwrap().collect().unwrap();
    assert_eq!(a, b, "same seed, same sample");
    assert!(
        (5_400..6_600).contains(&a.len()),
        "{} of 20000 at fraction 0.3",
        a.len()
    );
    assert!(
        a.windows(2).all(|w| w[0] < w[1]),
        "without replacement: a subsequence"
    );
    let c = rdd.sample(false, 0.3, 8).unwrap().collect().unwrap();
    assert_ne!(a, c, "another seed, another sample");
    let with = rdd.sample(true, 2.0, 1).unwrap().count().unwrap();
    assert!(
        (36_000..44_000).contains(&with),
        "{with} at fraction 2 with replacement"
    );
    assert!(rdd.sample(false, 1.5, 1).is_err());
}

#[test]
fn lost_shuffle_output_is_recomputed() {
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let counts = sc
        .parallelize(
            (0..1000)
                .map(|i| (i % 10, 1u32))
                .collect::<Vec<(i32, u32)>>(),
            4,
        )
        .reduce_by_key_with(3, Fn!(|a: u32, b: u32| a + b));
    let first = sorted(counts.collect().unwrap());
    // Delete the map outputs behind the scheduler's back: the next job skips the
    // map stage, its reducers hit a fetch failure, and the DAG scheduler must
    // resubmit the map stage and retry.
    let mut deleted = 0;
    for e in std::fs::read_dir(sc.env().local_dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("shuffle_") && name.ends_with(".data") {
            std::fs::remove_file(e.path()).unwrap();
            deleted += 1;
        }
    }
    assert_eq!(deleted, 4);
    assert_eq!(sorted(counts.collect().unwrap()), first);
}

#[test]
fn hot_keys_with_growing_combiners_still_spill() {
    // A few hot keys whose groups grow large: they live in the aggregator's
    // front cache, and must still count toward memory and spill.
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.executor.memory", "4m")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let data: Vec<(u32, String)> = (0..60_000u32)
        .map(|i| (i % 6, format!("{i:0>100}")))
        .collect();
    let before = sc.spill_count();
    let groups = sc
        .parallelize(data, 2)
        .group_by_key_with(2)
        .collect()
        .unwrap();
    assert!(
        sc.spill_count() > before,
        "a 6 MB group-by with a 1.2 MB task budget spills"
    );
    assert_eq!(groups.len(), 6);
    for (k, vs) in groups {
        assert_eq!(vs.len(), 10_000, "key {k}");
        assert!(vs.iter().all(|v| v.parse::<u32>().unwrap() % 6 == k));
    }
}

/// Truncates `path` to `len` bytes behind the engine's back.
fn cut_file(path: &std::path::Path, len: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn globs_and_binary_records() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "1\n2\n").unwrap();
    std::fs::write(dir.path().join("b.txt"), "3\n").unwrap();
    std::fs::write(dir.path().join("c.log"), "not me\n").unwrap();
    let pattern = format!("{}/*.txt", dir.path().display());
    let got = sc().text_file(&pattern, 2).unwrap().collect().unwrap();
    assert_eq!(got, vec!["1", "2", "3"]);
    let none = format!("{}/*.csv", dir.path().display());
    let err = sc().text_file(&none, 2).unwrap_err().to_string();
    assert!(err.contains("matches 0 files"), "{err}");

    // 1000 records of 10 bytes, read back in several splits aligned to records.
    let recs: Vec<u8> = (0..1000u32)
        .flat_map(|i| format!("{i:0>10}").into_bytes())
        .collect();
    let path = dir.path().join("recs.bin");
    std::fs::write(&path, &recs).unwrap();
    for parts in [1, 3, 7] {
        let got: Vec<String> = sc()
            .binary_records(path.to_str().unwrap(), 10, parts)
            .unwrap()
            .map(Fn!(
                |b: flint::Bytes| String::from_utf8(b.into_vec()).unwrap_or_default()
            ))
            .collect()
            .unwrap();
        assert_eq!(
            got,
            (0..1000u32)
                .map(|i| format!("{i:0>10}"))
                .collect::<Vec<_>>(),
            "{parts} partitions"
        );
    }
    let err = sc()
        .binary_records(path.to_str().unwrap(), 7, 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a multiple of the record length 7"),
        "{err}"
    );

    // A file cut short after the job was planned: an error naming the file,
    // never fewer records (at a record boundary or inside a record).
    for cut in [9_000u64, 9_005] {
        let rdd = sc().binary_records(path.to_str().unwrap(), 10, 3).unwrap();
        cut_file(&path, cut);
        let err = rdd.count().unwrap_err().to_string();
        assert!(
            err.contains("recs.bin") && err.contains("changed after the job was planned"),
            "cut at {cut}: {err}"
        );
        std::fs::write(&path, &recs).unwrap();
    }
    // The same for lines of text.
    let text = dir.path().join("lines.txt");
    let lines: String = (0..20_000).map(|i| format!("row {i}\n")).collect();
    std::fs::write(&text, &lines).unwrap();
    let rdd = sc().text_file(text.to_str().unwrap(), 3).unwrap();
    assert_eq!(rdd.count().unwrap(), 20_000);
    for cut in [lines.len() as u64 - 1, 100_000, 7] {
        cut_file(&text, cut);
        let err = rdd.count().unwrap_err().to_string();
        assert!(
            err.contains("lines.txt") && err.contains("changed after the job was planned"),
            "cut at {cut}: {err}"
        );
        std::fs::write(&text, &lines).unwrap();
    }
    // Cut inside the line that runs past the first split's end: reading
    // that split alone (take) reports it too, not a shortened last line.
    let first_end = lines.len() / 3;
    let starts: Vec<usize> = std::iter::once(0)
        .chain(lines.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let in_first = starts.iter().filter(|&&p| p < first_end).count();
    let crossing_end = starts[in_first] - 1; // its newline
    let cut = first_end + 1;
    assert!(cut < crossing_end, "the cut falls inside the crossing line");
    cut_file(&text, cut as u64);
    match rdd.take(in_first) {
        Ok(got) => panic!("took {} lines, the last {:?}", got.len(), got.last()),
        Err(e) => assert!(
            e.to_string().contains("changed after the job was planned"),
            "{e}"
        ),
    }
    std::fs::write(&text, &lines).unwrap();
}

#[test]
fn map_side_spills_of_plain_shuffles_keep_every_record() {
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.executor.memory", "2m")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let data: Vec<(u32, String)> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) % 1000, format!("{i:0>40}")))
        .collect();
    let before = sc.spill_count();
    let got = sc
        .parallelize(data.clone(), 2)
        .partition_by(7)
        .glom()
        .collect()
        .unwrap();
    assert!(
        sc.spill_count() > before,
        "2.5 MB per map task over a 1 MiB share must spill"
    );
    assert_eq!(got.len(), 7);
    // Each key lands in exactly one partition, and nothing is lost or doubled.
    let mut seen = std::collections::HashMap::new();
    for (p, part) in got.iter().enumerate() {
        for (k, _) in part {
            assert_eq!(*seen.entry(*k).or_insert(p), p, "key {k} in two partitions");
        }
    }
    assert_eq!(sorted(got.concat()), sorted(data));
}

#[test]
fn a_single_hot_key_groups_and_spills() {
    // One key holds every value: reducers must be able to spill even a table of
    // one entry, and measuring its growing group must not cost O(n^2).
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.executor.memory", "4m")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let n = 300_000u64;
    let before = sc.spill_count();
    let groups = sc
        .parallelize((0..n).map(|i| (1u8, i << 40)).collect::<Vec<_>>(), 4)
        .group_by_key_with(2)
        .collect()
        .unwrap();
    assert!(
        sc.spill_count() > before,
        "a 2.4 MB group with a 1.2 MB task budget spills"
    );
    assert_eq!(groups.len(), 1);
    let mut vs = groups.into_iter().next().unwrap().1;
    vs.sort_unstable();
    assert_eq!(vs, (0..n).map(|i| i << 40).collect::<Vec<_>>());
    // The same through cogroup and a join on the hot key.
    let left = sc.parallelize((0..2000u32).map(|i| (0u8, i)).collect::<Vec<_>>(), 2);
    let right = sc.parallelize((0..3000u32).map(|i| (0u8, i)).collect::<Vec<_>>(), 3);
    assert_eq!(left.join(&right).count().unwrap(), 6_000_000);
}

#[test]
fn cartesian_with_a_right_side_larger_than_memory_spills_and_stays_exact() {
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.executor.memory", "4m")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let left = sc.parallelize((0..5u64).collect::<Vec<_>>(), 1);
    let right = sc.parallelize(
        (0..50_000u64)
            .map(|i| (i, format!("{i:0>30}")))
            .collect::<Vec<_>>(),
        1,
    );
    let before = sc.spill_count();
    let sums = left
        .cartesian(&right)
        .map(Fn!(|(l, (r, _s)): (u64, (u64, String))| (l, r)))
        .reduce_by_key(Fn!(|a: u64, b: u64| a + b))
        .collect()
        .unwrap();
    assert!(
        sc.spill_count() > before,
        "a 2 MB right side over a 1.2 MB budget spills"
    );
    assert_eq!(
        sorted(sums),
        (0..5u64)
            .map(|l| (l, 50_000 * 49_999 / 2))
            .collect::<Vec<_>>()
    );
    // Small right sides stay in memory and give the model's answer.
    let small = left
        .cartesian(&sc.parallelize(vec!['a', 'b'], 2))
        .collect()
        .unwrap();
    assert_eq!(small.len(), 10);
    assert!(small.contains(&(4, 'b')));
}

/// A cached partition fetched from another executor that arrives damaged is
/// computed instead, never returned short (a stand-in client serves garbage).
#[test]
fn a_damaged_remote_copy_of_a_cached_partition_is_recomputed() {
    struct Garbage;
    impl flint::env::ShuffleClient for Garbage {
        fn segments(
            &self,
            _: usize,
            _: usize,
        ) -> flint::error::Result<Vec<flint::shuffle::SegmentLocation>> {
            unreachable!("no shuffle in this test")
        }
        fn fetch(
            &self,
            _: usize,
            _: usize,
            _: &flint::shuffle::SegmentLocation,
            _: u64,
            _: u64,
        ) -> flint::error::Result<Vec<u8>> {
            unreachable!("no shuffle in this test")
        }
        fn slice(&self, _: usize, _: usize) -> flint::error::Result<Vec<u8>> {
            unreachable!("slices are on the driver")
        }
        fn broadcast(&self, _: usize) -> flint::error::Result<std::sync::Arc<Vec<u8>>> {
            unreachable!("no broadcast in this test")
        }
        fn cached_block(&self, _: usize, _: usize) -> Option<Vec<u8>> {
            Some(b"definitely not frames of records".to_vec())
        }
    }
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let _ = sc.env().shuffle_client.set(std::sync::Arc::new(Garbage));
    let rdd = sc
        .parallelize((0..100u32).collect::<Vec<_>>(), 4)
        .map(Fn!(|x: u32| x * 2))
        .cache();
    assert_eq!(
        rdd.collect().unwrap(),
        (0..100u32).map(|x| x * 2).collect::<Vec<_>>()
    );
    // Now cached here: read locally, same answer.
    assert_eq!(rdd.count().unwrap(), 100);
    sc.stop();
}

/// Compressed text (`.gz`, `.bz2`, `.deflate`, known by the name as Hadoop
/// knows it) is read decompressed, each file whole by one task; concatenated
/// gzip members read as one text; a truncated file is an error naming it,
/// never fewer lines; formats Flint cannot decode are refused by name.
#[test]
fn compressed_text_files_are_read_decompressed() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..20_000)
        .map(|i| format!("line {i} {}", "y".repeat(i % 23)))
        .collect();
    let text = lines.join("\n") + "\n";
    let half = text[..text.len() / 2].rfind('\n').unwrap() + 1;
    let gz = |t: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(t.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    // Two gzip members, as `cat a.gz b.gz` makes.
    let gzipped = [gz(&text[..half]), gz(&text[half..])].concat();
    let bz2 = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let zlib = |t: &str| {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(t.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    // Two zlib streams one after the other: both are read.
    let deflate = [zlib(&text[..half]), zlib(&text[half..])].concat();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    for (name, bytes) in [
        ("in.gz", &gzipped),
        ("in.bz2", &bz2),
        ("in.deflate", &deflate),
    ] {
        let path = files.join(name);
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        let rdd = sc().text_file(p, 4).unwrap();
        assert_eq!(rdd.num_partitions(), 1, "{name}: one task reads it whole");
        assert_eq!(rdd.collect().unwrap(), lines, "{name}");
        let chunks = sc().text_file_chunks(p, 4).unwrap().collect().unwrap();
        assert_eq!(chunks.concat(), text, "{name} in chunks");
    }
    let whole = sc()
        .whole_text_files(files.to_str().unwrap(), 3)
        .unwrap()
        .collect()
        .unwrap();
    assert_eq!(whole.len(), 3);
    assert!(
        whole.iter().all(|(_, t)| *t == text),
        "whole files decompressed"
    );
    // Empty compressed files hold no lines (Spark skips empty splits).
    for name in ["empty.gz", "empty.bz2", "empty.deflate"] {
        std::fs::write(files.join(name), b"").unwrap();
    }
    let all = sc().text_file(files.to_str().unwrap(), 2).unwrap();
    assert_eq!(all.count().unwrap(), 3 * lines.len() as u64);
    // Braces stand for alternatives, their commas separate no paths.
    let pattern = format!("{}/in.{{gz,bz2,nothing}}", files.display());
    let two = sc().text_file(&pattern, 2).unwrap().count().unwrap();
    assert_eq!(two, 2 * lines.len() as u64);
    // A file two alternatives name is read once; alternatives that are
    // empty directories are no error.
    let again = format!("{}/{{in.gz,*.gz}}", files.display());
    let once = sc().text_file(&again, 2).unwrap().count().unwrap();
    assert_eq!(once, lines.len() as u64);
    for d in ["e1", "e2"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let empties = format!("{}/{{e1,e2}}", dir.path().display());
    assert_eq!(sc().text_file(&empties, 2).unwrap().count().unwrap(), 0);
    // A pattern standing for too many paths is refused at once.
    let huge = format!(
        "{}/{}",
        dir.path().display(),
        "{a,b,c,d,e,f,g,h,i,j}".repeat(5)
    );
    let Err(e) = sc().text_file(&huge, 1) else {
        panic!("100,000 paths accepted")
    };
    assert!(e.to_string().contains("stands for more than"), "{e}");
    // Comma-separated paths, read in the order given.
    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, "last\n").unwrap();
    let both = format!("{},{}", files.join("in.gz").display(), plain.display());
    let got = sc().text_file(&both, 2).unwrap().collect().unwrap();
    assert_eq!(got.len(), lines.len() + 1);
    assert_eq!(got.last().unwrap(), "last");
    // A truncated file fails the job; it does not lose lines quietly.
    for (name, bytes) in [
        ("cut.gz", &gzipped),
        ("cut.bz2", &bz2),
        ("cut.deflate", &deflate),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
        let e = sc()
            .text_file(path.to_str().unwrap(), 1)
            .unwrap()
            .count()
            .unwrap_err()
            .to_string();
        assert!(e.contains(name), "{name}: {e}");
    }
    let zst = dir.path().join("in.zst");
    std::fs::write(&zst, b"(zstd bytes)").unwrap();
    let Err(e) = sc().text_file(zst.to_str().unwrap(), 1) else {
        panic!("a .zst file is refused")
    };
    let e = e.to_string();
    assert!(e.contains("zstd-compressed input is not supported"), "{e}");
}

/// Globs skip hidden files and markers as directory listings do, read
/// files in name order whether matched directly or inside a matched
/// directory, and a glob matching only empty directories is empty input.
#[test]
fn globs_skip_markers_keep_name_order_and_allow_empty_directories() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("out");
    std::fs::create_dir_all(d.join("z")).unwrap();
    std::fs::write(d.join("a.txt"), "a\n").unwrap();
    std::fs::write(d.join("z").join("f.txt"), "f\n").unwrap();
    std::fs::write(d.join("_SUCCESS"), "").unwrap();
    std::fs::write(d.join(".a.txt.crc"), b"\xff\xfe").unwrap();
    let got = sc()
        .text_file(&format!("{}/*", d.display()), 1)
        .unwrap()
        .collect()
        .unwrap();
    assert_eq!(got, vec!["a", "f"]);
    // The same through a relative pattern.
    let old = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let relative = sc().text_file("out/*", 1).and_then(|r| r.collect());
    std::env::set_current_dir(old).unwrap();
    assert_eq!(relative.unwrap(), vec!["a", "f"]);
    for e in ["e1", "e2"] {
        std::fs::create_dir(dir.path().join(e)).unwrap();
    }
    let empty = format!("{}/e*", dir.path().display());
    assert_eq!(sc().text_file(&empty, 1).unwrap().count().unwrap(), 0);
}
