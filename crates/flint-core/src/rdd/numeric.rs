//! Actions on RDDs of numbers (Spark's DoubleRDDFunctions): `sum`, `mean`,
//! `stats` (count, mean, variance, min, max in one pass), `histogram`, and
//! `max`/`min` for any ordered element.

use serde::{Deserialize, Serialize};

use super::{BoxIter, PartitionFn, Rdd};
use crate::env::TaskContext;
use crate::error::{FlintError, Result};
use crate::func::Data;

/// Numbers the statistics actions accept (Spark works on `RDD[Double]`).
pub trait Numeric: Data + Copy {
    fn as_f64(self) -> f64;
}

macro_rules! numeric {
    ($($t:ty),*) => {
        $(impl Numeric for $t {
            #[inline]
            fn as_f64(self) -> f64 {
                self as f64
            }
        })*
    };
}
numeric!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize, f32, f64);

/// Count, mean, variance, min and max of a set of numbers, merged from
/// per-partition parts (Spark's StatCounter, Welford/Chan updates).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatCounter {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    m2: f64,
    pub max: f64,
    pub min: f64,
}

impl Default for StatCounter {
    fn default() -> Self {
        StatCounter {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            max: f64::NEG_INFINITY,
            min: f64::INFINITY,
        }
    }
}

impl StatCounter {
    pub fn add(&mut self, x: f64) {
        let delta = x - self.mean;
        self.count += 1;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        self.max = max_nan(self.max, x);
        self.min = min_nan(self.min, x);
    }

    pub fn merge(&mut self, o: &StatCounter) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let delta = o.mean - self.mean;
        let n = (self.count + o.count) as f64;
        self.mean += delta * o.count as f64 / n;
        self.m2 += o.m2 + delta * delta * self.count as f64 * o.count as f64 / n;
        self.count += o.count;
        self.max = max_nan(self.max, o.max);
        self.min = min_nan(self.min, o.min);
    }

    pub fn sum(&self) -> f64 {
        self.mean * self.count as f64
    }

    /// Population variance (Spark's `variance`/`popVariance`); NaN when empty.
    pub fn variance(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.m2 / self.count as f64
        }
    }

    /// Sample variance (divides by n - 1); NaN below two values.
    pub fn sample_variance(&self) -> f64 {
        if self.count <= 1 {
            f64::NAN
        } else {
            self.m2 / (self.count - 1) as f64
        }
    }

    pub fn stdev(&self) -> f64 {
        self.variance().sqrt()
    }

    pub fn sample_stdev(&self) -> f64 {
        self.sample_variance().sqrt()
    }
}

/// `max` that propagates NaN, as Scala's `math.max` in Spark's StatCounter
/// (`f64::max` would drop it and hide the NaN from `histogram`).
fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Sums a partition in f64 (Spark's `sum` folds doubles; `mean * count`
/// would lose low digits of large integer sums).
#[derive(Serialize, Deserialize)]
pub struct SumFn;
impl<T: Numeric> PartitionFn<T> for SumFn {
    type Out = f64;
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<f64> {
        // Folded from +0.0: an empty sum of f64 is -0.0 in Rust, 0.0 in Spark.
        Ok(it.map(Numeric::as_f64).fold(0.0, |a, b| a + b))
    }
}

#[derive(Serialize, Deserialize)]
pub struct StatsFn;
impl<T: Numeric> PartitionFn<T> for StatsFn {
    type Out = StatCounter;
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<StatCounter> {
        let mut s = StatCounter::default();
        for x in it {
            s.add(x.as_f64());
        }
        Ok(s)
    }
}

/// Counts per bucket; `evenly` buckets are found by arithmetic, others by
/// binary search (Spark's histogram).
#[derive(Serialize, Deserialize)]
pub struct HistogramFn {
    buckets: Vec<f64>,
    evenly: bool,
}

impl HistogramFn {
    fn bucket(&self, x: f64) -> Option<usize> {
        let b = &self.buckets;
        let (lo, hi) = (b[0], b[b.len() - 1]);
        if x.is_nan() || x < lo || x > hi {
            return None;
        }
        let n = b.len() - 1;
        if x == hi {
            return Some(n - 1);
        }
        if self.evenly {
            let i = ((x - lo) / (hi - lo) * n as f64) as usize;
            return Some(i.min(n - 1));
        }
        // The last boundary <= x.
        Some(b.partition_point(|&e| e <= x) - 1)
    }
}

impl<T: Numeric> PartitionFn<T> for HistogramFn {
    type Out = Vec<u64>;
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<Vec<u64>> {
        let mut counts = vec![0u64; self.buckets.len() - 1];
        for x in it {
            if let Some(i) = self.bucket(x.as_f64()) {
                counts[i] += 1;
            }
        }
        Ok(counts)
    }
}

#[derive(Serialize, Deserialize)]
pub struct ExtremeFn {
    max: bool,
}
impl<T: Data + PartialOrd> PartitionFn<T> for ExtremeFn {
    type Out = Option<T>;
    fn apply(&self, it: BoxIter<T>, _: &TaskContext) -> Result<Option<T>> {
        Ok(extreme(it, self.max))
    }
}

/// The largest (`max`) or smallest element, ordered as Spark orders doubles
/// (`java.lang.Double.compare`): NaN above all numbers, -0.0 below 0.0, so
/// the answer does not depend on the order in which the elements arrive.
/// Other types: a value unordered even with itself ranks above the rest; of
/// equal elements, the first is kept.
fn extreme<T: PartialOrd + 'static>(it: impl Iterator<Item = T>, max: bool) -> Option<T> {
    use std::any::Any;
    use std::cmp::Ordering;
    fn java(a: f64, b: f64) -> Ordering {
        // One NaN for all of them: `total_cmp` would put negative ones first.
        let canon = |x: f64| if x.is_nan() { f64::NAN } else { x };
        canon(a).total_cmp(&canon(b))
    }
    let cmp = |a: &T, b: &T| {
        let (a_any, b_any) = (a as &dyn Any, b as &dyn Any);
        if let (Some(x), Some(y)) = (a_any.downcast_ref::<f64>(), b_any.downcast_ref::<f64>()) {
            return java(*x, *y);
        }
        if let (Some(x), Some(y)) = (a_any.downcast_ref::<f32>(), b_any.downcast_ref::<f32>()) {
            return java(f64::from(*x), f64::from(*y));
        }
        a.partial_cmp(b).unwrap_or_else(|| {
            let nan = |x: &T| x.partial_cmp(x).is_none();
            nan(a).cmp(&nan(b))
        })
    };
    let wanted = if max {
        Ordering::Greater
    } else {
        Ordering::Less
    };
    it.reduce(|a, b| if cmp(&b, &a) == wanted { b } else { a })
}

impl<T: Data + PartialOrd> Rdd<T> {
    /// The largest element; an error for an empty RDD.
    pub fn max(&self) -> Result<T> {
        let parts = self.run_job(ExtremeFn { max: true }, None)?;
        extreme(parts.into_iter().flatten(), true)
            .ok_or_else(|| FlintError::InvalidArgument("max() of an empty RDD".into()))
    }

    /// The smallest element; an error for an empty RDD.
    pub fn min(&self) -> Result<T> {
        let parts = self.run_job(ExtremeFn { max: false }, None)?;
        extreme(parts.into_iter().flatten(), false)
            .ok_or_else(|| FlintError::InvalidArgument("min() of an empty RDD".into()))
    }
}

impl<T: Numeric> Rdd<T> {
    /// Count, mean, variance, min and max in one pass.
    pub fn stats(&self) -> Result<StatCounter> {
        let mut s = StatCounter::default();
        for p in self.run_job(StatsFn, None)? {
            s.merge(&p);
        }
        Ok(s)
    }

    /// The sum (0 for an empty RDD), folded in f64 as Spark's `sum`.
    pub fn sum(&self) -> Result<f64> {
        Ok(self
            .run_job(SumFn, None)?
            .into_iter()
            .fold(0.0, |a, b| a + b))
    }

    /// The mean (NaN for an empty RDD, as Spark).
    pub fn mean(&self) -> Result<f64> {
        let s = self.stats()?;
        Ok(if s.count == 0 { f64::NAN } else { s.mean })
    }

    /// Population variance.
    pub fn variance(&self) -> Result<f64> {
        Ok(self.stats()?.variance())
    }

    /// Population standard deviation.
    pub fn stdev(&self) -> Result<f64> {
        Ok(self.stats()?.stdev())
    }

    /// `bucket_count` evenly spaced buckets between the minimum and the maximum:
    /// returns the boundaries (`bucket_count + 1` of them) and the count in each
    /// bucket; every bucket is half-open except the last, which includes the
    /// maximum (Spark's `histogram(bucketCount)`).
    pub fn histogram(&self, bucket_count: usize) -> Result<(Vec<f64>, Vec<u64>)> {
        if bucket_count == 0 {
            return Err(FlintError::InvalidArgument(
                "histogram needs at least one bucket".into(),
            ));
        }
        let s = self.stats()?;
        if s.count == 0 {
            return Err(FlintError::InvalidArgument(
                "histogram of an empty RDD: there is no range to divide".into(),
            ));
        }
        if !s.min.is_finite() || !s.max.is_finite() {
            return Err(FlintError::InvalidArgument(
                "histogram of an RDD with infinite or NaN values: no finite range".into(),
            ));
        }
        let buckets: Vec<f64> = if s.min == s.max {
            vec![s.min, s.max]
        } else {
            let step = (s.max - s.min) / bucket_count as f64;
            (0..=bucket_count)
                .map(|i| {
                    if i == bucket_count {
                        s.max
                    } else {
                        s.min + step * i as f64
                    }
                })
                .collect()
        };
        let counts = self.histogram_counts(buckets.clone(), true)?;
        Ok((buckets, counts))
    }

    /// Counts per bucket for the given boundaries (sorted, at least two, no
    /// NaN): `[1, 10, 20, 50]` means `[1, 10) [10, 20) [20, 50]`; values
    /// outside are ignored.
    pub fn histogram_with(&self, buckets: Vec<f64>) -> Result<Vec<u64>> {
        if buckets.len() < 2
            || buckets.iter().any(|b| b.is_nan())
            || buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(FlintError::InvalidArgument(format!(
                "histogram buckets {buckets:?} must be at least two increasing numbers"
            )));
        }
        self.histogram_counts(buckets, false)
    }

    fn histogram_counts(&self, buckets: Vec<f64>, evenly: bool) -> Result<Vec<u64>> {
        let n = buckets.len() - 1;
        let parts = self.run_job(HistogramFn { buckets, evenly }, None)?;
        let mut counts = vec![0u64; n];
        for p in parts {
            for (c, x) in counts.iter_mut().zip(p) {
                *c += x;
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_counter_merges_like_one_pass() {
        let xs: Vec<f64> = (0..1000).map(|i| ((i * 37) % 101) as f64 - 20.5).collect();
        let mut all = StatCounter::default();
        xs.iter().for_each(|&x| all.add(x));
        let mut parts = StatCounter::default();
        for chunk in xs.chunks(77) {
            let mut p = StatCounter::default();
            chunk.iter().for_each(|&x| p.add(x));
            parts.merge(&p);
        }
        parts.merge(&StatCounter::default());
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        for s in [all, parts] {
            assert_eq!(s.count, 1000);
            assert!((s.mean - mean).abs() < 1e-9);
            assert!((s.variance() - var).abs() < 1e-6);
            assert_eq!((s.min, s.max), (-20.5, 79.5));
        }
    }

    #[test]
    fn histogram_buckets_are_half_open_but_the_last() {
        let h = HistogramFn {
            buckets: vec![1.0, 10.0, 20.0, 50.0],
            evenly: false,
        };
        let got: Vec<_> = [0.5, 1.0, 9.99, 10.0, 20.0, 50.0, 50.1, f64::NAN]
            .iter()
            .map(|&x| h.bucket(x))
            .collect();
        assert_eq!(
            got,
            vec![
                None,
                Some(0),
                Some(0),
                Some(1),
                Some(2),
                Some(2),
                None,
                None
            ]
        );
        let e = HistogramFn {
            buckets: vec![0.0, 2.5, 5.0, 7.5, 10.0],
            evenly: true,
        };
        assert_eq!(e.bucket(2.5), Some(1));
        assert_eq!(e.bucket(10.0), Some(3));
        assert_eq!(e.bucket(7.4999), Some(2));
    }
}
