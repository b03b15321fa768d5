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
