//! Broadcast variables and accumulators.

use std::sync::atomic::{AtomicUsize, Ordering};

use flint::prelude::*;

#[test]
fn broadcast_values_reach_tasks_and_ship_by_id() {
    let sc = FlintContext::new(FlintConf::new().master("local[2]")).unwrap();
    let table: Vec<u64> = (0..100_000).map(|i| i * 3).collect();
    let bc = sc.broadcast(table);
    // Only the id crosses with the task: a 100k-element table encodes to a few bytes.
    assert!(encoded_len(&bc) < 8);
    let b2 = bc.clone();
    let got = sc
        .parallelize(vec![1usize, 10, 99_999], 3)
        .map(Fn!(move |i: usize| b2.value()[i]))
        .collect()
        .unwrap();
    assert_eq!(got, vec![3, 30, 299_997]);
    assert_eq!(bc.value().len(), 100_000);
    sc.destroy_broadcast(&bc);
    let b3 = bc.clone();
    let err = sc
        .parallelize(vec![1usize], 1)
        .map(Fn!(move |i: usize| {
            // A deserialized copy has no value and must fetch it: it is gone.
            let fresh: Broadcast<Vec<u64>> = serde_roundtrip(&b3);
            fresh.value()[i]
        }))
        .collect()
        .unwrap_err()
        .to_string();
    assert!(err.contains("Broadcast(0) after it was destroyed"), "{err}");
    // A task's clone of the handle is unusable too, and so is the driver's
    // (Spark's "Attempted to use Broadcast(N) after it was destroyed").
    let b4 = bc.clone();
    let err = sc
        .parallelize(vec![1usize], 1)
        .map(Fn!(move |i: usize| b4.value()[i]))
        .collect()
        .unwrap_err()
        .to_string();
    assert!(err.contains("destroyed"), "{err}");
    let on_driver = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bc.value().len()));
    assert!(on_driver.is_err(), "the driver read a destroyed broadcast");
}

/// Size in the engine's task encoding.
fn encoded_len<T: serde::Serialize>(v: &T) -> usize {
    flint::codec::encode("test", v).unwrap().len()
}

fn serde_roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    flint::codec::decode("test", &flint::codec::encode("test", v).unwrap()).unwrap()
}

static FAIL_ONCE: AtomicUsize = AtomicUsize::new(0);

#[test]
fn accumulators_count_once_per_result_partition() {
    let sc = FlintContext::new(FlintConf::new().master("local[2,4]")).unwrap();
    let seen = sc.long_accumulator("seen");
    let total = sc.double_accumulator("total");
    let odd = sc.collection_accumulator::<u32>("odd");
    let (s, t, o) = (seen.clone(), total.clone(), odd.clone());
    sc.parallelize((1..=100u32).collect::<Vec<_>>(), 4)
        .foreach(Fn!(move |x: u32| {
            s.add(1);
            t.add(x as f64 / 2.0);
            if x % 2 == 1 {
                o.add(x);
            }
            // The attempt that sees 50 first fails after adding: its updates must
            // not count.
            if x == 50 && FAIL_ONCE.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("fail once");
            }
        }))
        .unwrap();
    assert_eq!(seen.value(), 100);
    assert_eq!(total.value(), 2525.0);
    let mut odds = odd.value();
    odds.sort();
    assert_eq!(odds, (1..=100).filter(|x| x % 2 == 1).collect::<Vec<u32>>());
    // Adding on the driver works too.
    seen.add(5);
    assert_eq!(seen.value(), 105);
    // Inside a task the value cannot be read: a clear error, not a wrong number.
    let s = seen.clone();
    let err = sc
        .parallelize(vec![1], 1)
        .map(Fn!(move |x: i64| x + s.value()))
        .collect()
        .unwrap_err()
        .to_string();
    assert!(err.contains("only be read on the driver"), "{err}");
    assert_eq!(seen.try_value(), Some(105));
}
