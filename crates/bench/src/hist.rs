//! An HDR-style histogram of latencies in nanoseconds: 64 linear sub-buckets per power
//! of two, so any recorded value is reported within 1/64 (1.6 %) of itself, in a fixed
//! 30 KiB table whatever the range (1 ns to 2^63 ns).

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets: values below 2·SUB map to themselves; above, (shift, mantissa) pairs.
const BUCKETS: usize = ((64 - SUB_BITS as usize) * SUB as usize) + SUB as usize;

/// Counts of values in logarithmic buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    // mantissa is in SUB..2·SUB
    let mantissa = v >> shift;
    (shift as usize) * SUB as usize + mantissa as usize
}

/// The middle of the range of values that map to bucket `i`.
fn value_of(i: usize) -> u64 {
    if i < 2 * SUB as usize {
        return i as u64;
    }
    let shift = (i / SUB as usize - 1) as u32;
    let mantissa = (i - shift as usize * SUB as usize) as u64;
    (mantissa << shift) + ((1u64 << shift) - 1) / 2
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            sum: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        // `index` is below BUCKETS for every u64; `get_mut` keeps that a non-panic.
        if let Some(c) = self.counts.get_mut(index(v)) {
            *c += 1;
        }
        self.total += 1;
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return value_of(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_within_two_percent() {
        for v in [
            0u64,
            1,
            63,
            64,
            127,
            128,
            1000,
            12_345,
            999_999,
            1 << 40,
            u64::MAX,
        ] {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            let back = value_of(i);
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 1.0 / 64.0, "{v} -> {back}");
        }
        // Monotonic.
        let mut last = 0;
        for v in (0..100_000u64).step_by(7) {
            let i = index(v);
            assert!(i >= last);
            last = i;
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.02, "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        let mut g = Histogram::new();
        g.record(5);
        g.merge(&h);
        assert_eq!(g.count(), 1001);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
