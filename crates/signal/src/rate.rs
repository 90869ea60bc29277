//! Per-connection flood detection: the detector that closes a connection which keeps
//! exceeding its token bucket ([`tsunagi_rate::TokenBucket`]).

use std::time::{Duration, Instant};

pub use tsunagi_rate::TokenBucket;

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
