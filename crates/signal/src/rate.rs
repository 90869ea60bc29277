//! Per-connection rate limiting: a token bucket, and the flood detector that closes a
//! connection which keeps exceeding it.

use std::time::{Duration, Instant};

/// Nano-tokens per token: the bucket counts in units of 1e-9 token so that a refill of
/// `rate` tokens per second is exactly `rate` units per nanosecond (no rounding loss
/// however often it is refilled).
const UNIT: u64 = 1_000_000_000;

/// A token bucket of `burst` tokens refilled at `rate` tokens per second. `rate == 0`
/// means unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    capacity: u64,
    level: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(now: Instant, rate: u32, burst: u32) -> Self {
        let capacity = u64::from(burst.max(1)).saturating_mul(UNIT);
        TokenBucket {
            rate: u64::from(rate),
            capacity,
            level: capacity,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        // Beyond a refill of the whole bucket, the exact time does not matter; capping
        // it keeps the product far from overflow.
        let full = Duration::from_nanos(self.capacity / self.rate + 1);
        let nanos = elapsed.min(full).as_nanos() as u64;
        self.level = self
            .level
            .saturating_add(nanos.saturating_mul(self.rate))
            .min(self.capacity);
        if self.level >= UNIT {
            self.level -= UNIT;
            true
        } else {
            false
        }
    }
}

/// Tracks continuous flooding: refusals with no gap longer than [`FloodDetector::GAP`].
#[derive(Debug, Clone, Default)]
pub struct FloodDetector {
    since: Option<Instant>,
    last: Option<Instant>,
}

impl FloodDetector {
    /// A second without a refused message ends a flood.
    pub const GAP: Duration = Duration::from_secs(1);

    /// Records a refused message; returns for how long the flood has lasted.
    pub fn refused(&mut self, now: Instant) -> Duration {
        let continuing = self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) <= Self::GAP);
        if !continuing {
            self.since = Some(now);
        }
        self.last = Some(now);
        self.since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 50, 100);
        for _ in 0..100 {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0));
        // 20 ms give exactly one token at 50/s.
        assert!(!b.take(t0 + Duration::from_millis(19)));
        assert!(b.take(t0 + Duration::from_millis(20)));
        assert!(!b.take(t0 + Duration::from_millis(20)));
        // Many tiny steps add up exactly.
        let mut t = t0 + Duration::from_millis(20);
        let mut got = 0;
        for _ in 0..20_000 {
            t += Duration::from_micros(50);
            if b.take(t) {
                got += 1;
            }
        }
        // 1 s at 50/s.
        assert_eq!(got, 50);
        // A long pause refills to the burst, no more.
        let later = t + Duration::from_secs(3600);
        let n = (0..1000).filter(|_| b.take(later)).count();
        assert_eq!(n, 100);
    }

    #[test]
    fn zero_rate_is_unlimited_and_time_going_back_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(t0, 0, 0);
        assert!((0..10_000).all(|_| b.take(t0)));
        let mut b = TokenBucket::new(t0, 1, 1);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(5)));
        assert!(b.take(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn flood_duration() {
        let t0 = Instant::now();
        let mut f = FloodDetector::default();
        assert_eq!(f.refused(t0), Duration::ZERO);
        assert_eq!(
            f.refused(t0 + Duration::from_millis(900)),
            Duration::from_millis(900)
        );
        assert_eq!(
            f.refused(t0 + Duration::from_millis(1900)),
            Duration::from_millis(1900)
        );
        // A gap of more than a second starts over.
        assert_eq!(f.refused(t0 + Duration::from_millis(3000)), Duration::ZERO);
    }
}
