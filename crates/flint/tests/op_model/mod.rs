//! The operation model: every core RDD operation checked against a plain
//! Rust model of the same computation. Shared by `model.rs` (local mode, many
//! cases) and `cluster_mode.rs` (a local cluster, fewer cases).

#![allow(dead_code, clippy::type_complexity)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flint::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

pub fn pairs() -> impl Strategy<Value = Vec<(u8, i32)>> {
    // Keys from a small range give skew and collisions.
    prop::collection::vec((0u8..12, -1000i32..1000), 0..200)
}

pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

pub fn narrow_ops(sc: &FlintContext, data: Vec<i32>, parts: usize) -> Result<(), TestCaseError> {
    let rdd = sc.parallelize(data.clone(), parts);
    prop_assert_eq!(rdd.collect().unwrap(), data.clone());
    prop_assert_eq!(rdd.count().unwrap(), data.len() as u64);
    prop_assert_eq!(
        rdd.map(Fn!(|x: i32| x as i64 * 3))
            .filter(Fn!(|x: &i64| x % 2 == 0))
            .collect()
            .unwrap(),
        data.iter()
            .map(|&x| x as i64 * 3)
            .filter(|x| x % 2 == 0)
            .collect::<Vec<_>>()
    );
    prop_assert_eq!(
        rdd.flat_map(Fn!(|x: i32| std::iter::repeat_n(
            x,
            x.rem_euclid(3) as usize
        )
        .collect::<Vec<i32>>()))
            .collect()
            .unwrap(),
        data.iter()
            .flat_map(|&x| vec![x; x.rem_euclid(3) as usize])
            .collect::<Vec<_>>()
    );
    let glommed = rdd.glom().collect().unwrap();
    prop_assert_eq!(glommed.len(), parts);
    prop_assert_eq!(glommed.concat(), data.clone());
    prop_assert_eq!(
        rdd.union(&rdd).collect().unwrap(),
        [data.clone(), data.clone()].concat()
    );
    prop_assert_eq!(rdd.coalesce(2).collect().unwrap(), data.clone());
    prop_assert_eq!(rdd.coalesce(2).num_partitions(), parts.min(2));
    let re = rdd.repartition(5);
    prop_assert_eq!(re.num_partitions(), 5);
    prop_assert_eq!(sorted(re.collect().unwrap()), sorted(data.clone()));
    prop_assert_eq!(
        rdd.take(7).unwrap(),
        data.iter().take(7).copied().collect::<Vec<_>>()
    );
    prop_assert_eq!(rdd.is_empty().unwrap(), data.is_empty());
    prop_assert_eq!(
        rdd.fold(0, Fn!(|a: i32, b: i32| a + b)).unwrap(),
        data.iter().sum::<i32>()
    );
    prop_assert_eq!(
        rdd.reduce(Fn!(|a: i32, b: i32| a.max(b))).ok(),
        data.iter().copied().max()
    );
    prop_assert_eq!(
        rdd.aggregate(
            (0i64, 0u64),
            Fn!(|a: (i64, u64), x: i32| (a.0 + x as i64, a.1 + 1)),
            Fn!(|a: (i64, u64), b: (i64, u64)| (a.0 + b.0, a.1 + b.1))
        )
        .unwrap(),
        (
            data.iter().map(|&x| x as i64).sum::<i64>(),
            data.len() as u64
        )
    );
    prop_assert_eq!(
        rdd.take_ordered(5).unwrap(),
        sorted(data.clone()).into_iter().take(5).collect::<Vec<_>>()
    );
    prop_assert_eq!(
        rdd.top(5).unwrap(),
        sorted(data.clone())
            .into_iter()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
    );
    prop_assert_eq!(
        sorted(rdd.distinct().collect().unwrap()),
        data.iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    let sorted_rdd = rdd.sort_by(Fn!(|x: i32| x), true, 3).unwrap();
    prop_assert_eq!(sorted_rdd.collect().unwrap(), sorted(data.clone()));
    let desc = rdd.sort_by(Fn!(|x: i32| x), false, 4).unwrap();
    prop_assert_eq!(
        desc.collect().unwrap(),
        sorted(data.clone()).into_iter().rev().collect::<Vec<_>>()
    );
    let zipped = rdd
        .zip(&rdd.map(Fn!(|x: i32| x + 1)))
        .unwrap()
        .collect()
        .unwrap();
    prop_assert_eq!(zipped, data.iter().map(|&x| (x, x + 1)).collect::<Vec<_>>());
    let small: Vec<i32> = data.iter().take(15).copied().collect();
    let s = sc.parallelize(small.clone(), 2);
    prop_assert_eq!(
        sorted(s.cartesian(&s).collect().unwrap()),
        sorted(
            small
                .iter()
                .flat_map(|&a| small.iter().map(move |&b| (a, b)))
                .collect()
        )
    );
    let counts = rdd.count_by_value().unwrap();
    let mut model: HashMap<i32, u64> = HashMap::new();
    for &x in &data {
        *model.entry(x).or_default() += 1;
    }
    prop_assert_eq!(counts, model);
    Ok(())
}

pub fn pair_ops(
    sc: &FlintContext,
    a: Vec<(u8, i32)>,
    b: Vec<(u8, i32)>,
    pa: usize,
    pb: usize,
    np: usize,
) -> Result<(), TestCaseError> {
    let ra = sc.parallelize(a.clone(), pa);
    let rb = sc.parallelize(b.clone(), pb);
    let mut sum: BTreeMap<u8, i64> = BTreeMap::new();
    let mut groups: BTreeMap<u8, Vec<i32>> = BTreeMap::new();
    for &(k, v) in &a {
        *sum.entry(k).or_default() += v as i64;
        groups.entry(k).or_default().push(v);
    }
    let got = ra
        .map_values(Fn!(|v: i32| v as i64))
        .reduce_by_key_with(np, Fn!(|x: i64, y: i64| x + y));
    prop_assert_eq!(got.num_partitions(), np);
    prop_assert_eq!(
        sorted(got.collect().unwrap()),
        sum.clone().into_iter().collect::<Vec<_>>()
    );
    let g: Vec<(u8, Vec<i32>)> = ra
        .group_by_key()
        .collect()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, sorted(v)))
        .collect();
    prop_assert_eq!(
        sorted(g),
        groups
            .iter()
            .map(|(k, v)| (*k, sorted(v.clone())))
            .collect::<Vec<_>>()
    );
    prop_assert_eq!(
        sorted(
            ra.fold_by_key(0, Fn!(|x: i32, y: i32| x.wrapping_add(y)))
                .collect()
                .unwrap()
        ),
        groups
            .iter()
            .map(|(k, v)| (*k, v.iter().fold(0i32, |x, y| x.wrapping_add(*y))))
            .collect::<Vec<_>>()
    );
    prop_assert_eq!(
        sorted(
            ra.combine_by_key(
                Fn!(|v: i32| vec![v]),
                Fn!(|mut c: Vec<i32>, v: i32| {
                    c.push(v);
                    c
                }),
                Fn!(|mut c: Vec<i32>, d: Vec<i32>| {
                    c.extend(d);
                    c
                }),
                np
            )
            .map_values(Fn!(|c: Vec<i32>| c.len()))
            .collect()
            .unwrap()
        ),
        groups
            .iter()
            .map(|(k, v)| (*k, v.len()))
            .collect::<Vec<_>>()
    );
    prop_assert_eq!(
        sorted(
            ra.aggregate_by_key(
                0usize,
                Fn!(|c: usize, _v: i32| c + 1),
                Fn!(|x: usize, y: usize| x + y)
            )
            .collect()
            .unwrap()
        ),
        groups
            .iter()
            .map(|(k, v)| (*k, v.len()))
            .collect::<Vec<_>>()
    );
    // Sorting by key is stable per key only up to partition order; compare keys.
    let sk = ra.sort_by_key(true, np).unwrap().collect().unwrap();
    prop_assert_eq!(
        sk.iter().map(|x| x.0).collect::<Vec<_>>(),
        sorted(a.iter().map(|x| x.0).collect())
    );
    prop_assert_eq!(sorted(sk), sorted(a.clone()));
    let sd = ra.sort_by_key(false, np).unwrap().collect().unwrap();
    prop_assert_eq!(
        sd.iter().map(|x| x.0).collect::<Vec<_>>(),
        sorted(a.iter().map(|x| x.0).collect())
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
    );
    prop_assert_eq!(
        sorted(ra.partition_by(np).collect().unwrap()),
        sorted(a.clone())
    );
    prop_assert_eq!(
        sorted(ra.keys().collect().unwrap()),
        sorted(a.iter().map(|x| x.0).collect())
    );
    prop_assert_eq!(
        sorted(ra.values().collect().unwrap()),
        sorted(a.iter().map(|x| x.1).collect())
    );
    prop_assert_eq!(
        sorted(ra.flat_map_values(Fn!(|v: i32| [v, v])).collect().unwrap()),
        sorted(a.iter().flat_map(|&(k, v)| vec![(k, v); 2]).collect())
    );

    // Joins against a nested-loop model.
    let mut inner = Vec::new();
    for &(k, v) in &a {
        for &(k2, w) in &b {
            if k == k2 {
                inner.push((k, (v, w)));
            }
        }
    }
    prop_assert_eq!(
        sorted(ra.join(&rb).collect().unwrap()),
        sorted(inner.clone())
    );
    let bkeys: BTreeSet<u8> = b.iter().map(|x| x.0).collect();
    let akeys: BTreeSet<u8> = a.iter().map(|x| x.0).collect();
    let mut left: Vec<(u8, (i32, Option<i32>))> =
        inner.iter().map(|&(k, (v, w))| (k, (v, Some(w)))).collect();
    left.extend(
        a.iter()
            .filter(|x| !bkeys.contains(&x.0))
            .map(|&(k, v)| (k, (v, None))),
    );
    prop_assert_eq!(
        sorted(ra.left_outer_join(&rb).collect().unwrap()),
        sorted(left.clone())
    );
    let mut right: Vec<(u8, (Option<i32>, i32))> =
        inner.iter().map(|&(k, (v, w))| (k, (Some(v), w))).collect();
    right.extend(
        b.iter()
            .filter(|x| !akeys.contains(&x.0))
            .map(|&(k, w)| (k, (None, w))),
    );
    prop_assert_eq!(
        sorted(ra.right_outer_join(&rb).collect().unwrap()),
        sorted(right)
    );
    let mut full: Vec<(u8, (Option<i32>, Option<i32>))> =
        left.iter().map(|&(k, (v, w))| (k, (Some(v), w))).collect();
    full.extend(
        b.iter()
            .filter(|x| !akeys.contains(&x.0))
            .map(|&(k, w)| (k, (None, Some(w)))),
    );
    prop_assert_eq!(
        sorted(ra.full_outer_join(&rb).collect().unwrap()),
        sorted(full)
    );
    let cg = ra.cogroup(&rb).collect().unwrap();
    prop_assert_eq!(cg.len(), akeys.union(&bkeys).count());
    // The same joins with one or both sides already partitioned (read
    // through narrow dependencies instead of shuffled again).
    let pa = ra.partition_by(np);
    let pb = rb.partition_by(np).map_values(Fn!(|w: i32| w));
    prop_assert_eq!(
        sorted(pa.join(&pb).collect().unwrap()),
        sorted(inner.clone())
    );
    prop_assert_eq!(
        sorted(pa.join(&rb).collect().unwrap()),
        sorted(inner.clone())
    );
    prop_assert_eq!(
        sorted(ra.left_outer_join(&pb).collect().unwrap()),
        sorted(left.clone())
    );
    prop_assert_eq!(pa.join(&pb).partitioner(), pa.partitioner());
    // Aggregations by that partitioning combine in place (no shuffle).
    let in_place = pa
        .map_values(Fn!(|v: i32| v as i64))
        .reduce_by_key(Fn!(|x: i64, y: i64| x + y));
    prop_assert_eq!(in_place.partitioner(), pa.partitioner());
    prop_assert_eq!(
        sorted(in_place.collect().unwrap()),
        sum.clone().into_iter().collect::<Vec<_>>()
    );

    let mut cbk: HashMap<u8, u64> = HashMap::new();
    for &(k, _) in &a {
        *cbk.entry(k).or_default() += 1;
    }
    prop_assert_eq!(ra.count_by_key().unwrap(), cbk);

    let xa = ra.keys();
    let xb = rb.keys();
    prop_assert_eq!(
        sorted(xa.intersection(&xb).collect().unwrap()),
        akeys.intersection(&bkeys).copied().collect::<Vec<_>>()
    );
    prop_assert_eq!(
        sorted(xa.subtract(&xb).collect().unwrap()),
        sorted(
            a.iter()
                .map(|x| x.0)
                .filter(|k| !bkeys.contains(k))
                .collect()
        )
    );
    Ok(())
}
