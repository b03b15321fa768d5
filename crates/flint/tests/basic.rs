use flint::prelude::*;

fn sc(master: &str) -> FlintContext {
    FlintContext::new(FlintConf::new().app_name("test").master(master)).unwrap()
}

#[test]
fn map_filter_collect() {
    let sc = sc("local[2]");
    let k = 3;
    let v = sc
        .parallelize((1..=10).collect::<Vec<i32>>(), 3)
        .map(Fn!(move |x: i32| x * k))
        .filter(Fn!(|x: &i32| x % 2 == 0))
        .collect()
        .unwrap();
    assert_eq!(v, vec![6, 12, 18, 24, 30]);
}

#[test]
fn word_count() {
    let sc = sc("local[2]");
    let lines = vec!["a b a".to_string(), "b c".to_string(), "a".to_string()];
    let mut counts = sc
        .parallelize(lines, 2)
        .flat_map(Fn!(|l: String| l
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()))
        .map(Fn!(|w: String| (w, 1u64)))
        .reduce_by_key(Fn!(|a: u64, b: u64| a + b))
        .collect()
        .unwrap();
    counts.sort();
    assert_eq!(
        counts,
        vec![("a".into(), 3), ("b".into(), 2), ("c".into(), 1)]
    );
}

/// flat_map hands its outputs on in batches of 64 (the pushed path a map
/// stage runs, so a shuffle follows): runs of every length around that size
/// (none, one, 63, 64, 65, several batches) arrive whole, and in order on
/// the iterator path `collect` takes.
#[test]
fn flat_map_keeps_every_output_across_batches() {
    let sc = sc("local[2]");
    let counts: Vec<u32> = vec![0, 1, 63, 64, 65, 0, 130, 2, 64, 0, 200, 1, 127, 128, 129];
    let mut want: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for &n in &counts {
        want.entry(n).or_default().extend(0..n);
    }
    want.retain(|_, v| !v.is_empty());
    for v in want.values_mut() {
        v.sort_unstable();
    }
    let pairs = sc
        .parallelize(counts.clone(), 3)
        .flat_map(Fn!(|n: u32| (0..n)
            .map(move |i| (n, i))
            .collect::<Vec<_>>()));
    let mut got: std::collections::BTreeMap<u32, Vec<u32>> = pairs
        .group_by_key()
        .collect()
        .unwrap()
        .into_iter()
        .collect();
    for v in got.values_mut() {
        v.sort_unstable();
    }
    assert_eq!(got, want);
    let in_order: Vec<(u32, u32)> = counts
        .iter()
        .flat_map(|&n| (0..n).map(move |i| (n, i)))
        .collect();
    assert_eq!(pairs.collect().unwrap(), in_order);
    // And an iterator that is not a Vec, through a shuffle.
    let got = sc
        .parallelize(counts.clone(), 2)
        .flat_map(Fn!(|n: u32| (0..n)
            .filter(|i| i % 3 != 1)
            .map(move |i| (i % 7, 1u64))))
        .reduce_by_key(Fn!(|a: u64, b: u64| a + b))
        .map(Fn!(|(_k, c): (u32, u64)| c))
        .collect()
        .unwrap()
        .into_iter()
        .sum::<u64>();
    let want = counts
        .iter()
        .map(|&n| (0..n).filter(|i| i % 3 != 1).count() as u64)
        .sum::<u64>();
    assert_eq!(got, want);
}
