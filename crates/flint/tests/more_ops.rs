//! The rest of Spark's RDD API, each operation checked against a plain Rust
//! model on random data and partition counts (empty partitions included).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use flint::prelude::*;
use flint::shuffle::Partitioner;
use proptest::prelude::*;

fn sc() -> &'static FlintContext {
    static SC: OnceLock<FlintContext> = OnceLock::new();
    SC.get_or_init(|| {
        FlintContext::new(
            FlintConf::new()
                .app_name("more-ops")
                .master("local[3]")
                .set("flint.ui.showConsoleProgress", "false"),
        )
        .unwrap()
    })
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn indexing_aggregation_and_numbers(data in prop::collection::vec(-1000i64..1000, 0..300), parts in 1usize..9) {
        let rdd = sc().parallelize(data.clone(), parts);
        let indexed = rdd.zip_with_index().unwrap().collect().unwrap();
        prop_assert_eq!(indexed, data.iter().cloned().zip(0u64..).collect::<Vec<_>>());
        let ids = rdd.zip_with_unique_id().collect().unwrap();
        let mut seen: Vec<u64> = ids.iter().map(|x| x.1).collect();
        seen.sort();
        seen.dedup();
        prop_assert_eq!(seen.len(), data.len(), "unique ids");
        prop_assert_eq!(ids.into_iter().map(|x| x.0).collect::<Vec<_>>(), data.clone());

        let sum: i64 = data.iter().sum();
        for depth in 1..4 {
            prop_assert_eq!(
                rdd.tree_aggregate(0i64, Fn!(|a: i64, x: i64| a + x), Fn!(|a: i64, b: i64| a + b), depth).unwrap(),
                sum
            );
        }
        match data.iter().copied().max() {
            Some(m) => {
                prop_assert_eq!(rdd.tree_reduce(Fn!(|a: i64, b: i64| a.max(b)), 2).unwrap(), m);
                prop_assert_eq!(rdd.max().unwrap(), m);
                prop_assert_eq!(rdd.min().unwrap(), *data.iter().min().unwrap());
            }
            None => {
                prop_assert!(rdd.tree_reduce(Fn!(|a: i64, b: i64| a + b), 2).is_err());
                prop_assert!(rdd.max().is_err());
            }
        }
        let st = rdd.stats().unwrap();
        prop_assert_eq!(st.count, data.len() as u64);
        prop_assert!((rdd.sum().unwrap() - sum as f64).abs() < 1e-6);
        if !data.is_empty() {
            let mean = sum as f64 / data.len() as f64;
            let var = data.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / data.len() as f64;
            prop_assert!((rdd.mean().unwrap() - mean).abs() < 1e-9);
            prop_assert!((st.variance() - var).abs() < 1e-6 * var.max(1.0));
            // Histograms against counting by hand.
            let edges = vec![-1000.0, -10.0, 0.0, 500.0, 1000.0];
            let mut want = vec![0u64; 4];
            for &x in &data {
                let x = x as f64;
                let i = if x >= 500.0 { 3 } else if x >= 0.0 { 2 } else if x >= -10.0 { 1 } else { 0 };
                want[i] += 1;
            }
            prop_assert_eq!(rdd.histogram_with(edges).unwrap(), want);
            let (bounds, counts) = rdd.histogram(4).unwrap();
            prop_assert_eq!(counts.iter().sum::<u64>(), data.len() as u64);
            prop_assert_eq!(bounds.len(), if st.min == st.max { 2 } else { 5 });
        } else {
            prop_assert!(rdd.mean().unwrap().is_nan());
            prop_assert!(rdd.histogram(3).is_err());
        }
    }

    #[test]
    fn splitting_and_sampling(data in prop::collection::vec(0u32..10_000, 0..400), parts in 1usize..7, seed in 0u64..1000) {
        let rdd = sc().parallelize(data.clone(), parts);
        let splits = rdd.random_split(&[1.0, 2.0, 3.0], seed).unwrap();
        let mut all: Vec<u32> = Vec::new();
        for s in &splits {
            all.extend(s.collect().unwrap());
        }
        prop_assert_eq!(sorted(all), sorted(data.clone()), "splits partition the input");
        prop_assert_eq!(splits[0].collect().unwrap(), splits[0].collect().unwrap(), "stable");

        let n = data.len() / 3;
        let s = rdd.take_sample(false, n, seed).unwrap();
        prop_assert_eq!(s.len(), n);
        let mut pool = sorted(data.clone());
        for x in &s {
            let i = pool.binary_search(x);
            prop_assert!(i.is_ok(), "sampled an element not in the input");
            pool.remove(i.unwrap());
        }
        prop_assert_eq!(rdd.take_sample(false, data.len() + 5, seed).unwrap().len(), data.len());
        let with = rdd.take_sample(true, 50, seed).unwrap();
        prop_assert_eq!(with.len(), if data.is_empty() { 0 } else { 50 });
        prop_assert!(with.iter().all(|x| data.contains(x)));
    }

    #[test]
    fn pair_lookups_and_subtraction(
        a in prop::collection::vec((0u8..20, -100i32..100), 0..150),
        b in prop::collection::vec((0u8..20, -100i32..100), 0..150),
        parts in 1usize..6,
    ) {
        let ra = sc().parallelize(a.clone(), parts);
        let rb = sc().parallelize(b.clone(), parts);
        let want = |k: u8| sorted(a.iter().filter(|x| x.0 == k).map(|x| x.1).collect::<Vec<_>>());
        prop_assert_eq!(sorted(ra.lookup(&3).unwrap()), want(3));
        let pa = ra.partition_by(parts);
        prop_assert_eq!(sorted(pa.lookup(&3).unwrap()), want(3));
        let map = ra.collect_as_map().unwrap();
        prop_assert_eq!(sorted(map.keys().copied().collect()), sorted({
            let mut k: Vec<u8> = a.iter().map(|x| x.0).collect(); k.dedup(); k.sort(); k.dedup(); k
        }));
        let bkeys: Vec<u8> = b.iter().map(|x| x.0).collect();
        prop_assert_eq!(
            sorted(ra.subtract_by_key(&rb).collect().unwrap()),
            sorted(a.iter().filter(|x| !bkeys.contains(&x.0)).copied().collect())
        );
        let grouped: BTreeMap<i32, Vec<u8>> = ra
            .keys()
            .group_by(Fn!(|k: u8| (k % 3) as i32))
            .collect()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, sorted(v)))
            .collect();
        let mut model: BTreeMap<i32, Vec<u8>> = BTreeMap::new();
        for x in &a {
            model.entry((x.0 % 3) as i32).or_default().push(x.0);
        }
        for v in model.values_mut() {
            v.sort();
        }
        prop_assert_eq!(grouped, model);
        // Sorted within each partition, partitioned by the hash partitioner.
        let p = Partitioner::Hash(parts);
        let rs = ra.repartition_and_sort_within_partitions(p.clone());
        prop_assert_eq!(rs.partitioner(), Some(p.clone()));
        let glom = rs.glom().collect().unwrap();
        for (i, part) in glom.iter().enumerate() {
            prop_assert!(part.windows(2).all(|w| w[0].0 <= w[1].0));
            prop_assert!(part.iter().all(|kv| p.partition(&kv.0) == i));
        }
        prop_assert_eq!(sorted(glom.concat()), sorted(a.clone()));
    }
}

#[test]
fn sample_by_key_keeps_about_the_fraction_of_each_key() {
    let data: Vec<(u8, u32)> = (0..40_000u32).map(|i| ((i % 2) as u8, i)).collect();
    let rdd = sc().parallelize(data, 4);
    let fractions = HashMap::from([(0u8, 0.1), (1u8, 0.5)]);
    let s = rdd
        .sample_by_key(false, fractions.clone(), 7)
        .unwrap()
        .collect()
        .unwrap();
    let zeros = s.iter().filter(|x| x.0 == 0).count();
    let ones = s.len() - zeros;
    assert!((1600..2400).contains(&zeros), "{zeros} of 20000 at 0.1");
    assert!((9400..10600).contains(&ones), "{ones} of 20000 at 0.5");
    assert_eq!(
        s,
        rdd.sample_by_key(false, fractions, 7)
            .unwrap()
            .collect()
            .unwrap(),
        "deterministic for a seed"
    );
    let err = rdd
        .sample_by_key(false, HashMap::from([(0u8, 0.5)]), 1)
        .unwrap()
        .count()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no sampling fraction"), "{err}");
    assert!(
        rdd.sample_by_key(false, HashMap::from([(0u8, 1.5)]), 1)
            .is_err()
    );
}

#[test]
fn pipe_runs_a_command_per_partition() {
    let rdd = sc().parallelize((1..=10).collect::<Vec<i32>>(), 3);
    let out = rdd.pipe(&["sed", "s/^/n=/"]).unwrap().collect().unwrap();
    assert_eq!(out, (1..=10).map(|i| format!("n={i}")).collect::<Vec<_>>());
    let counts = rdd.pipe(&["wc", "-l"]).unwrap().collect().unwrap();
    let total: usize = counts
        .iter()
        .map(|c| c.trim().parse::<usize>().unwrap())
        .sum();
    assert_eq!((counts.len(), total), (3, 10));
    let err = rdd
        .pipe(&["false"])
        .unwrap()
        .collect()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Subprocess exited with status 1") && err.contains("false"),
        "{err}"
    );
    let err = rdd
        .pipe(&["/nonexistent/program"])
        .unwrap()
        .collect()
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot run pipe command"), "{err}");
    assert!(rdd.pipe(&[]).is_err());
}

#[test]
fn object_files_round_trip_and_damage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("objs");
    let data: Vec<(String, Vec<u16>)> = (0..5000u16)
        .map(|i| (format!("k{i}"), vec![i; 3]))
        .collect();
    sc().parallelize(data.clone(), 3)
        .save_as_object_file(&out)
        .unwrap();
    let back = sc().object_file::<(String, Vec<u16>)>(&out).unwrap();
    assert_eq!(back.num_partitions(), 3);
    assert_eq!(back.collect().unwrap(), data);
    // A part file cut short is an error naming it, not fewer records.
    let part = out.join("part-00001");
    let len = std::fs::metadata(&part).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let err = back.count().unwrap_err().to_string();
    assert!(err.contains("part-00001"), "{err}");
    assert!(sc().object_file::<u8>(dir.path()).is_err(), "no part files");
    assert!(
        sc().parallelize(vec![1], 1)
            .save_as_object_file(&out)
            .is_err(),
        "exists"
    );
}

#[test]
fn checkpointing_truncates_the_lineage() {
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let rdd = sc
        .parallelize((0..100u32).collect::<Vec<_>>(), 4)
        .map(Fn!(|x: u32| x * 2));
    assert!(
        rdd.checkpoint()
            .unwrap_err()
            .to_string()
            .contains("set_checkpoint_dir")
    );
    let dir = tempfile::tempdir().unwrap();
    sc.set_checkpoint_dir(dir.path()).unwrap();
    // An iterative chain whose lineage would otherwise grow every round.
    let mut cur = rdd.clone();
    for round in 0..5u32 {
        cur = cur.map(Fn!(move |x: u32| x + round));
        if round % 2 == 0 {
            cur.checkpoint().unwrap();
            assert!(cur.is_checkpointed());
            let lineage = cur.to_debug_string();
            assert_eq!(lineage.lines().count(), 1, "only the checkpoint: {lineage}");
        }
    }
    let want: Vec<u32> = (0..100u32).map(|x| x * 2 + 10).collect();
    assert_eq!(cur.collect().unwrap(), want);
    // RDDs built on a checkpointed one read the checkpoint, not the lineage.
    let child = cur.map(Fn!(|x: u32| x + 1));
    assert_eq!(child.to_debug_string().lines().count(), 2);
    assert_eq!(
        child.collect().unwrap(),
        want.iter().map(|x| x + 1).collect::<Vec<_>>()
    );
    let files = cur.checkpoint_file().unwrap();
    assert!(files.starts_with(dir.path()) && files.join("part-00000").exists());
    // A damaged checkpoint cannot be recomputed (its lineage is gone): a clear error.
    std::fs::write(files.join("part-00002"), b"junk").unwrap();
    let err = cur.collect().unwrap_err().to_string();
    assert!(err.contains("part-00002"), "{err}");
}

#[test]
fn review_regressions_sampling_numbers_and_pipe_output() {
    // More copies per element than Knuth's Poisson method can draw (e^-mean
    // underflows past ~745): still the requested number, promptly.
    let small = sc().parallelize((0..10u32).collect::<Vec<_>>(), 2);
    assert_eq!(small.take_sample(true, 10_000, 7).unwrap().len(), 10_000);
    let n = sc()
        .parallelize((0..100u32).collect::<Vec<_>>(), 2)
        .sample(true, 2000.0, 3)
        .unwrap()
        .count()
        .unwrap();
    assert!(
        (190_000..210_000).contains(&n),
        "{n} copies at fraction 2000"
    );
    // Integer sums are exact where f64 holds them (a fold, not mean x count).
    let xs: Vec<u64> = (0..1000u64).map(|i| 3_997_006_521 + i * 7919).collect();
    let want: u64 = xs.iter().sum();
    assert_eq!(sc().parallelize(xs, 3).sum().unwrap(), want as f64);
    // NaN reaches min/max, and a histogram over it is refused.
    let with_nan = sc().parallelize(vec![1.0f64, f64::NAN, 3.0], 2);
    assert!(with_nan.stats().unwrap().max.is_nan());
    assert!(with_nan.histogram(2).is_err());
    // Output that is not UTF-8 is decoded lossily, and a large output after it
    // does not wedge the pipe.
    let out = sc()
        .parallelize(vec![1], 1)
        .pipe(&[
            "sh",
            "-c",
            "printf 'a\\377b\\n'; head -c 300000 /dev/zero; echo",
        ])
        .unwrap()
        .collect()
        .unwrap();
    assert_eq!(out[0], "a\u{fffd}b");
    assert_eq!(out.len(), 2);
}

#[test]
fn checkpoints_let_an_iterative_job_shed_its_old_shuffles() {
    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[2]")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    sc.set_checkpoint_dir(dir.path()).unwrap();
    let mut ranks = sc
        .parallelize((0..200u32).map(|k| (k % 20, 1u64)).collect::<Vec<_>>(), 2)
        .reduce_by_key_with(2, Fn!(|a: u64, b: u64| a + b));
    for _ in 0..15 {
        ranks = ranks
            .map_values(Fn!(|v: u64| v + 1))
            .reduce_by_key_with(2, Fn!(|a: u64, b: u64| a + b));
        ranks.checkpoint().unwrap();
        assert_eq!(ranks.count().unwrap(), 20);
    }
    assert_eq!(
        ranks.partitioner(),
        Some(Partitioner::Hash(2)),
        "kept across the checkpoint"
    );
    sc.wait_for_cleanup();
    let shuffle_files = std::fs::read_dir(sc.env().local_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("shuffle_"))
        .count();
    // Only the latest round's shuffle (2 maps x data + index) may remain.
    assert!(
        shuffle_files <= 4,
        "{shuffle_files} shuffle files after 15 checkpointed rounds"
    );
    let sum: u64 = ranks.values().collect().unwrap().iter().sum();
    assert_eq!(sum, 200 + 15 * 20);
}

/// `max` and `min` of doubles order NaN above every number, as Spark's
/// ordering of doubles does, wherever the NaN lies in the data; an empty
/// sum is +0.0, as in Spark.
#[test]
fn max_and_min_with_nan_do_not_depend_on_the_order_of_the_data() {
    for data in [
        vec![f64::NAN, 1.0, 3.0, -2.0],
        vec![1.0, 3.0, f64::NAN, -2.0],
        vec![1.0, 3.0, -2.0, f64::NAN],
    ] {
        for parts in [1, 2, 4] {
            let rdd = sc().parallelize(data.clone(), parts);
            assert!(rdd.max().unwrap().is_nan(), "max of {data:?} in {parts}");
            assert_eq!(rdd.min().unwrap(), -2.0, "min of {data:?} in {parts}");
        }
    }
    // -0.0 below 0.0, as Java's Double.compare.
    for data in [vec![-0.0f64, 0.0], vec![0.0, -0.0]] {
        let rdd = sc().parallelize(data.clone(), 1);
        let (max, min) = (rdd.max().unwrap(), rdd.min().unwrap());
        assert!(max.is_sign_positive() && min.is_sign_negative(), "{data:?}");
    }
    let sum = sc().parallelize(Vec::<f64>::new(), 2).sum().unwrap();
    assert!(sum == 0.0 && sum.is_sign_positive(), "empty sum {sum}");
}

/// Aggregating an RDD by the partitioning it already has needs no shuffle
/// (Spark combines each partition in place and keeps the partitioner): the
/// lineage holds one shuffle, the result keeps the partitioner, and each key
/// stays in the partition it was in. Another partitioning shuffles.
#[test]
fn aggregations_by_an_existing_partitioning_do_not_shuffle_again() {
    let shuffles = |dbg: String| dbg.matches("ShuffledRDD").count();
    let pairs: Vec<(u32, u64)> = (0..1000u32).map(|i| (i % 37, u64::from(i))).collect();
    let expect: Vec<(u32, u64)> = (0..37u32)
        .map(|k| (k, pairs.iter().filter(|p| p.0 == k).map(|p| p.1).sum()))
        .collect();
    let parted = sc().parallelize(pairs, 3).partition_by(5);
    assert_eq!(shuffles(parted.partition_by(5).to_debug_string()), 1);
    assert_eq!(shuffles(parted.partition_by(4).to_debug_string()), 2);
    let sums = parted.reduce_by_key(Fn!(|a: u64, b: u64| a + b));
    assert_eq!(
        shuffles(sums.to_debug_string()),
        1,
        "{}",
        sums.to_debug_string()
    );
    assert_eq!(sums.num_partitions(), 5);
    assert!(sums.partitioner().is_some() && sums.partitioner() == parted.partitioner());
    assert_eq!(sorted(sums.collect().unwrap()), expect);
    // Every key where the partitioner put it.
    let where_before: std::collections::HashMap<u32, usize> = parted
        .glom()
        .collect()
        .unwrap()
        .into_iter()
        .enumerate()
        .flat_map(|(i, part)| part.into_iter().map(move |(k, _)| (k, i)))
        .collect();
    for (i, part) in sums.glom().collect().unwrap().into_iter().enumerate() {
        for (k, _) in part {
            assert_eq!(where_before[&k], i, "key {k}");
        }
    }
    let same = [
        parted
            .aggregate_by_key(
                0u64,
                Fn!(|a: u64, v: u64| a + v),
                Fn!(|a: u64, b: u64| a + b),
            )
            .to_debug_string(),
        parted
            .fold_by_key(0u64, Fn!(|a: u64, b: u64| a + b))
            .to_debug_string(),
        parted
            .combine_by_key(
                Fn!(|v: u64| v),
                Fn!(|c: u64, v: u64| c + v),
                Fn!(|a: u64, b: u64| a + b),
                5,
            )
            .to_debug_string(),
        parted.group_by_key().to_debug_string(),
    ];
    for dbg in same {
        assert_eq!(shuffles(dbg.clone()), 1, "{dbg}");
    }
    let groups = parted
        .group_by_key()
        .map_values(Fn!(|v: Vec<u64>| v.iter().sum::<u64>()));
    assert_eq!(sorted(groups.collect().unwrap()), expect);
    let other = parted.reduce_by_key_with(4, Fn!(|a: u64, b: u64| a + b));
    assert_eq!(shuffles(other.to_debug_string()), 2);
    assert_eq!(sorted(other.collect().unwrap()), expect);
    // `subtract` has as many partitions as its left side, as in Spark.
    let a = sc().parallelize((0..100u32).collect::<Vec<_>>(), 3);
    let b = sc().parallelize((0..50u32).collect::<Vec<_>>(), 7);
    let rest = a.subtract(&b);
    assert_eq!(rest.num_partitions(), 3);
    assert_eq!(
        sorted(rest.collect().unwrap()),
        (50..100).collect::<Vec<_>>()
    );
}

/// An RDD keeps the storage level it was first given (Spark refuses a
/// change) until it is unpersisted; asking again for the same level is fine.
#[test]
fn a_storage_level_stays_until_unpersist() {
    let rdd = sc().parallelize((0..10u32).collect::<Vec<_>>(), 2).cache();
    rdd.persist(StorageLevel::MemoryOnly);
    rdd.persist(StorageLevel::DiskOnly);
    rdd.persist(StorageLevel::None);
    assert_eq!(rdd.storage_level(), StorageLevel::MemoryOnly);
    assert_eq!(rdd.count().unwrap(), 10);
    rdd.unpersist();
    rdd.persist(StorageLevel::DiskOnly);
    assert_eq!(rdd.storage_level(), StorageLevel::DiskOnly);
    assert_eq!(rdd.count().unwrap(), 10);
}

/// `repartition` deals records round-robin (Spark's), so even a few records
/// spread evenly: each output partition gets its share.
#[test]
fn repartition_spreads_even_a_few_records_evenly() {
    for (records, n) in [(10u32, 5usize), (7, 7), (1000, 9), (3, 8)] {
        let sizes: Vec<usize> = sc()
            .parallelize((0..records).collect::<Vec<_>>(), 1)
            .repartition(n)
            .glom()
            .collect()
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect();
        let (lo, hi) = (records as usize / n, (records as usize).div_ceil(n));
        assert!(
            sizes.len() == n && sizes.iter().all(|s| (lo..=hi).contains(s)),
            "{records} records into {n}: {sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), records as usize);
    }
}

/// Spark's `SparkContext.union`, `emptyRDD`, `toLocalIterator`,
/// `distinct(numPartitions)` and joins into a given partitioning.
#[test]
fn union_of_many_empty_rdds_local_iteration_and_partition_counts() {
    let a = sc().parallelize(vec![1u32, 2], 2);
    let b = sc().parallelize(vec![3u32], 1);
    let c = sc().parallelize(vec![4u32, 5, 6], 3);
    let none = sc().empty_rdd::<u32>();
    let all = sc().union(&[a, none, b, c]);
    assert_eq!(all.num_partitions(), 6);
    assert_eq!(all.collect().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    let empty = sc().empty_rdd::<u32>();
    assert_eq!(empty.num_partitions(), 0);
    assert_eq!(empty.count().unwrap(), 0);
    assert!(empty.collect().unwrap().is_empty());
    assert_eq!(empty.to_local_iterator().count(), 0);
    fn sendable<I: Send>(i: I) -> I {
        i
    }
    let items: Vec<u32> = sendable(all.to_local_iterator())
        .map(Result::unwrap)
        .collect();
    assert_eq!(items, vec![1, 2, 3, 4, 5, 6]);
    // One job per partition, as the iterator reaches it; a failure ends it.
    let failing = sc().parallelize(vec![1u32, 2, 3], 3).map(Fn!(|x: u32| {
        assert!(x != 2, "no twos");
        x
    }));
    let got: Vec<flint::Result<u32>> = failing.to_local_iterator().collect();
    assert_eq!(got.len(), 2, "the first element, then the error");
    assert_eq!(*got[0].as_ref().unwrap(), 1);
    assert!(got[1].as_ref().unwrap_err().to_string().contains("no twos"));
    let d = sc()
        .parallelize(vec![1u32, 1, 2, 3, 3, 3], 2)
        .distinct_with(5);
    assert_eq!(d.num_partitions(), 5);
    assert_eq!(sorted(d.collect().unwrap()), vec![1, 2, 3]);
    let l = sc().parallelize(vec![(1u32, 'a'), (2, 'b')], 2);
    let r = sc().parallelize(vec![(1u32, 10u8), (3, 30)], 2);
    let j = l.join_with(&r, Partitioner::Hash(7));
    assert_eq!(j.num_partitions(), 7);
    assert_eq!(j.collect().unwrap(), vec![(1, ('a', 10))]);
    let full = l.full_outer_join_with(&r, Partitioner::Hash(3));
    assert_eq!(full.num_partitions(), 3);
    assert_eq!(
        sorted(full.collect().unwrap()),
        vec![
            (1, (Some('a'), Some(10))),
            (2, (Some('b'), None)),
            (3, (None, Some(30)))
        ]
    );
    assert_eq!(
        sorted(
            l.left_outer_join_with(&r, Partitioner::Hash(2))
                .collect()
                .unwrap()
        ),
        vec![(1, ('a', Some(10))), (2, ('b', None))]
    );
    assert_eq!(
        sorted(
            l.right_outer_join_with(&r, Partitioner::Hash(2))
                .collect()
                .unwrap()
        ),
        vec![(1, (Some('a'), 10)), (3, (None, 30))]
    );
}
