//! Small helpers with no better home.

/// A tiny deterministic generator (SplitMix64) for sampling: seeded per partition
/// so that recomputing a partition reproduces its sample.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A Poisson(mean) draw. Knuth's method needs e^-mean, which underflows
    /// past a mean of about 745, so a large mean is split into parts of at
    /// most 30 (a sum of independent Poisson draws is Poisson with the sum of
    /// the means): exact at any mean, linear in it.
    pub fn poisson(&mut self, mean: f64) -> usize {
        if mean.is_nan() || mean <= 0.0 || mean.is_infinite() {
            return 0;
        }
        let mut left = mean;
        let mut total = 0;
        while left > 30.0 {
            total += self.poisson_small(30.0);
            left -= 30.0;
        }
        total + self.poisson_small(left)
    }

    fn poisson_small(&mut self, mean: f64) -> usize {
        let limit = (-mean).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.next_f64();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
}

/// Cases per fuzz property in tests: `default` in the short run of the test
/// suite, `FLINT_FUZZ_CASES` in a long run (scripts/fuzz.sh). Public for the
/// other crates' fuzz properties.
#[doc(hidden)]
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("FLINT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_draws_have_the_right_mean_even_when_it_is_large() {
        let mut r = SplitMix64::new(7);
        for mean in [0.3, 5.0, 2000.0] {
            let n = 400;
            let avg = (0..n).map(|_| r.poisson(mean)).sum::<usize>() as f64 / n as f64;
            assert!(
                (avg - mean).abs() < 4.0 * (mean / n as f64).sqrt() + 0.05,
                "mean {mean}: {avg}"
            );
        }
        assert_eq!(r.poisson(0.0), 0);
        assert_eq!(r.poisson(f64::NAN), 0);
    }
}
