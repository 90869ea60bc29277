//! Rate limiting for the sans-IO state machines (signaling messages per connection,
//! TURN bytes per allocation): a token bucket in exact integer arithmetic, driven by the
//! caller's `now`.
#![forbid(unsafe_code)]

use std::time::Instant;

/// Nano-tokens per token: the bucket counts in units of 1e-9 token so that a refill of
/// `rate` tokens per second is exactly `rate` units per nanosecond (no rounding loss
/// however often it is refilled).
const UNIT: u64 = 1_000_000_000;

/// A token bucket of `burst` tokens refilled at `rate` tokens per second. `rate == 0`
/// means unlimited. A token is whatever the caller counts: a message (signaling), a
/// byte (TURN's bandwidth limit).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    capacity: u64,
    /// Nanoseconds that refill an empty bucket (beyond it the exact time does not
    /// matter); fixed at creation, not divided out on every take.
    fill_nanos: u64,
    level: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(now: Instant, rate: u64, burst: u64) -> Self {
        let capacity = burst.max(1).saturating_mul(UNIT);
        TokenBucket {
            rate,
            capacity,
            fill_nanos: capacity
                .checked_div(rate)
                .map_or(u64::MAX, |n| n.saturating_add(1)),
            level: capacity,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_n(now, 1)
    }

    /// Takes `n` tokens if there are that many (a bucket never holds more than `burst`).
    pub fn take_n(&mut self, now: Instant, n: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        // Beyond a refill of the whole bucket, the exact time does not matter; capping
        // it keeps the product far from overflow.
        let nanos = elapsed.as_nanos().min(u128::from(self.fill_nanos)) as u64;
        self.level = self
            .level
            .saturating_add(nanos.saturating_mul(self.rate))
            .min(self.capacity);
        let need = n.saturating_mul(UNIT);
        if self.level >= need {
            self.level -= need;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn tokens_are_taken_by_the_count() {
        let t0 = Instant::now();
        // 1000 bytes/s with one second of burst.
        let mut b = TokenBucket::new(t0, 1000, 1000);
        assert!(b.take_n(t0, 600));
        assert!(!b.take_n(t0, 600), "400 left");
        assert!(b.take_n(t0, 400));
        assert!(!b.take_n(t0 + Duration::from_millis(499), 500));
        assert!(b.take_n(t0 + Duration::from_millis(500), 500));
        // More than the burst never passes.
        assert!(!b.take_n(t0 + Duration::from_secs(60), 1001));
    }
}
