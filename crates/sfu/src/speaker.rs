//! Active-speaker detection from RFC 6464 audio levels.

use std::time::{Duration, Instant};

/// Time constant of the loudness smoothing.
pub const SMOOTHING: Duration = Duration::from_secs(1);
/// How long a different peer must stay loudest before it becomes the speaker.
pub const HOLD: Duration = Duration::from_secs(1);
/// Minimum gap between two speaker changes of one room (at most 2 per second).
pub const MIN_GAP: Duration = Duration::from_millis(500);
/// Smoothed loudness (0 = silence, 127 = 0 dBov) below which nobody is speaking.
pub const MIN_LOUDNESS: f64 = 30.0;
/// Peers tracked per detector at most (the room limit bounds it; this is a safety net).
pub const MAX_TRACKED: usize = 256;

#[derive(Debug, Clone)]
struct Level {
    peer: String,
    value: f64,
    last: Instant,
}

/// Per-room detector: feed [`observe`](Self::observe) with every audio level and call
/// [`evaluate`](Self::evaluate) periodically; it returns the new speaker when it changes.
#[derive(Debug, Clone, Default)]
pub struct SpeakerDetector {
    levels: Vec<Level>,
    current: Option<String>,
    candidate: Option<(String, Instant)>,
    last_change: Option<Instant>,
}

fn decay(value: f64, dt: Duration) -> f64 {
    value * (-dt.as_secs_f64() / SMOOTHING.as_secs_f64()).exp()
}

impl SpeakerDetector {
    /// One audio level: `level` is str0m's value, -127 (silence) ..= 0 (loudest) dBov.
    pub fn observe(&mut self, peer: &str, level: i8, now: Instant) {
        let loudness = f64::from(127 - i16::from(level).unsigned_abs().min(127) as i32);
        if let Some(l) = self.levels.iter_mut().find(|l| l.peer == peer) {
            let dt = now.saturating_duration_since(l.last);
            let alpha = 1.0 - (-dt.as_secs_f64() / SMOOTHING.as_secs_f64()).exp();
            l.value += (loudness - l.value) * alpha;
            l.last = now;
        } else if self.levels.len() < MAX_TRACKED {
            // Start from silence so one loud packet does not win at once.
            self.levels.push(Level {
                peer: peer.to_string(),
                value: loudness * 0.1,
                last: now,
            });
        }
    }

    /// Forget a peer that left.
    pub fn remove(&mut self, peer: &str) {
        self.levels.retain(|l| l.peer != peer);
        if self.candidate.as_ref().is_some_and(|(p, _)| p == peer) {
            self.candidate = None;
        }
        if self.current.as_deref() == Some(peer) {
            self.current = None;
        }
    }

    /// The current speaker.
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// The smoothed loudness of `peer` at `now` (decaying while no packets arrive).
    pub fn loudness(&self, peer: &str, now: Instant) -> Option<f64> {
        self.levels
            .iter()
            .find(|l| l.peer == peer)
            .map(|l| decay(l.value, now.saturating_duration_since(l.last)))
    }

    /// Returns the new speaker when a different peer has been loudest for [`HOLD`] and the
    /// last change is at least [`MIN_GAP`] ago.
    pub fn evaluate(&mut self, now: Instant) -> Option<String> {
        let loudest = self
            .levels
            .iter()
            .map(|l| (l, decay(l.value, now.saturating_duration_since(l.last))))
            .filter(|(_, v)| *v >= MIN_LOUDNESS)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(l, _)| l.peer.clone());
        let Some(loudest) = loudest else {
            self.candidate = None;
            return None;
        };
        if self.current.as_deref() == Some(loudest.as_str()) {
            self.candidate = None;
            return None;
        }
        let since = match &self.candidate {
            Some((p, t)) if *p == loudest => *t,
            _ => {
                self.candidate = Some((loudest.clone(), now));
                now
            }
        };
        let held = now.saturating_duration_since(since) >= HOLD;
        let gap_ok = self
            .last_change
            .is_none_or(|t| now.saturating_duration_since(t) >= MIN_GAP);
        if held && gap_ok {
            self.current = Some(loudest.clone());
            self.candidate = None;
            self.last_change = Some(now);
            return Some(loudest);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds 50 packets per second for `secs` with the given levels, evaluating every 100 ms.
    fn run(
        d: &mut SpeakerDetector,
        t: &mut Instant,
        secs: u64,
        levels: &[(&str, i8)],
    ) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..secs * 50 {
            *t += Duration::from_millis(20);
            for (p, l) in levels {
                d.observe(p, *l, *t);
            }
            if i % 5 == 4 {
                out.extend(d.evaluate(*t));
            }
        }
        out
    }

    #[test]
    fn loudest_for_a_second_becomes_speaker() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        let got = run(&mut d, &mut t, 3, &[("a", -20), ("b", -60)]);
        assert_eq!(got, ["a"]);
        let got = run(&mut d, &mut t, 4, &[("a", -70), ("b", -15)]);
        assert_eq!(got, ["b"]);
    }

    #[test]
    fn short_bursts_do_not_switch() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        assert_eq!(run(&mut d, &mut t, 3, &[("a", -20), ("b", -60)]), ["a"]);
        // b shouts for 300 ms: smoothed over a second it does not stay loudest long enough.
        for _ in 0..3 {
            assert!(run(&mut d, &mut t, 1, &[("a", -25), ("b", -60)]).is_empty());
            let burst: Vec<String> = (0..15)
                .filter_map(|_| {
                    t += Duration::from_millis(20);
                    d.observe("a", -25, t);
                    d.observe("b", -5, t);
                    d.evaluate(t)
                })
                .collect();
            assert!(burst.is_empty());
        }
    }

    #[test]
    fn silence_is_nobody_and_changes_are_rate_limited() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        assert!(run(&mut d, &mut t, 3, &[("a", -127), ("b", -120)]).is_empty());
        // Alternating loud peers: never more than 2 changes per second.
        let mut changes = Vec::new();
        for round in 0..10 {
            let (x, y) = if round % 2 == 0 {
                ("a", "b")
            } else {
                ("b", "a")
            };
            for _ in 0..25 {
                t += Duration::from_millis(20);
                d.observe(x, -10, t);
                d.observe(y, -100, t);
                if let Some(p) = d.evaluate(t) {
                    changes.push((t, p));
                }
            }
        }
        for w in changes.windows(2) {
            assert!(w[1].0 - w[0].0 >= MIN_GAP);
        }
    }

    #[test]
    fn leaving_peer_is_forgotten() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        assert_eq!(run(&mut d, &mut t, 3, &[("a", -20)]), ["a"]);
        d.remove("a");
        assert_eq!(d.current(), None);
        assert_eq!(d.loudness("a", t), None);
    }
}
