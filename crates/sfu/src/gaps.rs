//! Sequence numbers missing from one incoming video layer, in RTP mode.
//!
//! In frame mode str0m hands the SFU whole frames and says when one was lost (a frame
//! that does not continue the last), and the SFU holds the layer until a keyframe. In RTP
//! mode packets are forwarded as they come, gaps included: a subscriber's receiver sees
//! the gap, NACKs it (the SFU cannot resend what it never got) and drops what depends on
//! it. What the SFU adds is the publisher side: str0m NACKs the publisher for a missing
//! packet, and when it is still missing after a while (the publisher cannot resend it,
//! or its resends were lost too) every subscriber of the layer is stuck until the next
//! keyframe, so the SFU asks for one at once instead of waiting for each subscriber's
//! own request.
//!
//! [`Gaps`] remembers the missing numbers of one layer with when each was first missed.
//! A packet that arrives late (reordered, or resent) fills its place; a keyframe forgets
//! everything before it (nothing after a keyframe depends on what came before); a gap
//! still open after the wait needs a keyframe, until one arrives or is asked for.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Missing numbers kept per layer. A longer gap (a burst of loss, a publisher that
/// jumped its numbers) is reported at once: waiting for hundreds of resends is pointless.
pub const MAX_MISSING: usize = 128;

/// The missing sequence numbers of one incoming layer.
#[derive(Debug, Default)]
pub struct Gaps {
    /// The highest extended sequence number seen.
    highest: Option<u64>,
    /// Missing numbers in increasing order, each with when it was first missed.
    missing: VecDeque<(u64, Instant)>,
    /// A gap longer than [`MAX_MISSING`] since the last keyframe or [`Gaps::forget`].
    lost: bool,
}

impl Gaps {
    pub fn new() -> Gaps {
        Gaps::default()
    }

    /// A packet with extended sequence number `seq` arrived at `now`; `keyframe`: it
    /// starts a keyframe.
    pub fn on_packet(&mut self, seq: u64, keyframe: bool, now: Instant) {
        match self.highest {
            None => self.highest = Some(seq),
            Some(h) if seq > h => {
                let gap = seq - h - 1;
                if gap > (MAX_MISSING - self.missing.len().min(MAX_MISSING)) as u64 {
                    self.missing.clear();
                    self.lost = true;
                } else {
                    self.missing.extend((h + 1..seq).map(|s| (s, now)));
                }
                self.highest = Some(seq);
            }
            Some(_) => {
                if let Ok(i) = self.missing.binary_search_by_key(&seq, |m| m.0) {
                    self.missing.remove(i);
                }
            }
        }
        if keyframe {
            // What came before a keyframe no longer matters.
            let keep = self.missing.partition_point(|m| m.0 < seq);
            self.missing.drain(..keep);
            self.lost = false;
        }
    }

    /// Whether a keyframe is needed at `now`: a gap has been missing for `wait` or
    /// longer, or one was too long to wait for. It stays needed until a keyframe
    /// arrives or [`Gaps::forget`] (called when one was asked for).
    pub fn keyframe_needed(&self, now: Instant, wait: Duration) -> bool {
        self.lost
            || self
                .missing
                .front()
                .is_some_and(|&(_, since)| now.saturating_duration_since(since) >= wait)
    }

    /// Forgets every gap (a keyframe was asked for: it replaces them all).
    pub fn forget(&mut self) {
        self.missing.clear();
        self.lost = false;
    }

    /// How many numbers are missing now.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(300);

    #[test]
    fn packets_in_order_leave_nothing_missing() {
        let t = Instant::now();
        let mut g = Gaps::new();
        for s in 100..200 {
            g.on_packet(s, false, t);
        }
        assert_eq!(g.missing(), 0);
        assert!(!g.keyframe_needed(t + WAIT * 10, WAIT));
    }

    #[test]
    fn a_late_packet_fills_its_gap() {
        let t = Instant::now();
        let mut g = Gaps::new();
        g.on_packet(1, false, t);
        g.on_packet(4, false, t);
        assert_eq!(g.missing(), 2);
        g.on_packet(3, false, t + Duration::from_millis(10));
        g.on_packet(2, false, t + Duration::from_millis(20));
        assert_eq!(g.missing(), 0);
        assert!(!g.keyframe_needed(t + WAIT, WAIT));
    }

    #[test]
    fn a_gap_open_for_the_wait_needs_a_keyframe_until_one_is_asked_for() {
        let t = Instant::now();
        let mut g = Gaps::new();
        g.on_packet(1, false, t);
        g.on_packet(3, false, t);
        assert!(!g.keyframe_needed(t + WAIT - Duration::from_millis(1), WAIT));
        assert!(g.keyframe_needed(t + WAIT, WAIT));
        assert!(g.keyframe_needed(t + WAIT * 2, WAIT), "until asked for");
        g.forget();
        assert!(!g.keyframe_needed(t + WAIT * 2, WAIT));
        // The packet arriving after all is harmless.
        g.on_packet(2, false, t + WAIT * 2);
        assert_eq!(g.missing(), 0);
    }

    #[test]
    fn a_keyframe_forgets_the_gaps_before_it() {
        let t = Instant::now();
        let mut g = Gaps::new();
        g.on_packet(1, false, t);
        g.on_packet(5, false, t);
        g.on_packet(9, true, t);
        assert_eq!(g.missing(), 0, "2..=4 and 6..=8 came before the keyframe");
        g.on_packet(12, false, t);
        assert_eq!(g.missing(), 2, "10 and 11, after it");
        g.on_packet(20, true, t);
        assert_eq!(g.missing(), 0);
        assert!(!g.keyframe_needed(t + WAIT, WAIT));
    }

    #[test]
    fn a_long_gap_needs_a_keyframe_at_once_and_memory_stays_bounded() {
        let t = Instant::now();
        let mut g = Gaps::new();
        g.on_packet(1, false, t);
        g.on_packet(2 + MAX_MISSING as u64, false, t);
        assert_eq!(g.missing(), MAX_MISSING, "as many as are kept");
        assert!(!g.keyframe_needed(t, WAIT));
        g.on_packet(3 + MAX_MISSING as u64, false, t);
        g.on_packet(5 + MAX_MISSING as u64, false, t);
        assert_eq!(g.missing(), 0, "one more is too many");
        assert!(g.keyframe_needed(t, WAIT));
        g.forget();
        // Many short gaps never keep more than MAX_MISSING.
        let mut s = 1_000;
        for _ in 0..1_000 {
            s += 2;
            g.on_packet(s, false, t);
            assert!(g.missing() <= MAX_MISSING);
        }
        assert!(g.keyframe_needed(t, WAIT));
    }

    #[test]
    fn a_long_gap_ending_in_a_keyframe_needs_nothing() {
        let t = Instant::now();
        let mut g = Gaps::new();
        g.on_packet(1, false, t);
        g.on_packet(10_000, true, t);
        assert_eq!(g.missing(), 0);
        assert!(!g.keyframe_needed(t + WAIT, WAIT));
    }
}
