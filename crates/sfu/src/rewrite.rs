//! One subscription's outgoing sequence numbers and RTP times when packets are
//! forwarded as they come (str0m's RTP mode).
//!
//! A subscriber sees one stream per m-line, whatever simulcast layer feeds it: each layer
//! has its own SSRC, sequence numbers and RTP time base, so a switch from one layer to
//! another (at a keyframe of the new one) must continue the sequence numbers where the
//! old layer left them (a gap would read as loss and be NACKed; a jump back as duplicates)
//! and the RTP time by the wall-clock time between the two packets (the receiver's
//! jitter buffer and A/V sync run on it).
//!
//! Within one layer, numbers keep their distance: a reordered packet or a late
//! retransmission keeps its place. A packet of a layer older than the first one
//! forwarded from it (since the last switch to it) is dropped: its number would fall
//! among the previous layer's, and its frame began before what the subscriber got.

use std::time::Instant;

/// The outgoing numbering of one subscription.
#[derive(Debug, Default, Clone)]
pub struct Rewriter {
    current: Option<Source>,
    /// The highest sequence number sent, with its RTP time and the arrival of its packet.
    last: Option<Sent>,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    /// The layer (or any id of the incoming stream).
    id: usize,
    /// Added to an incoming extended sequence number.
    seq_offset: i64,
    /// Added (wrapping) to an incoming RTP time.
    time_offset: u32,
    /// The first incoming sequence number forwarded from this source.
    first_seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    time: u32,
    at: Instant,
}

/// A packet's number and time on the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended sequence number (never below 1).
    pub seq: u64,
    /// RTP time.
    pub time: u32,
}

impl Rewriter {
    pub fn new() -> Rewriter {
        Rewriter::default()
    }

    /// The outgoing number and time of a packet from `source` with the extended sequence
    /// number `seq` and RTP time `time`, which arrived at `at`; `clock_rate` is the
    /// codec's (90,000 for video). A packet from another source than the last one
    /// switches to it: the caller forwards a new source's first packet only at a
    /// keyframe. `None`: drop it (older than the switch to its source).
    pub fn rewrite(
        &mut self,
        source: usize,
        seq: u64,
        time: u32,
        at: Instant,
        clock_rate: u32,
    ) -> Option<Rewritten> {
        let src = match self.current {
            Some(s) if s.id == source => s,
            _ => self.switch(source, seq, time, at, clock_rate),
        };
        if seq < src.first_seq {
            return None;
        }
        let out = (seq as i64).saturating_add(src.seq_offset).max(1) as u64;
        let rewritten = Rewritten {
            seq: out,
            time: time.wrapping_add(src.time_offset),
        };
        if self.last.is_none_or(|l| out > l.seq) {
            self.last = Some(Sent {
                seq: out,
                time: rewritten.time,
                at,
            });
        }
        Some(rewritten)
    }

    /// The current source starts over (a new SSRC, sequence and time base: its
    /// publisher moved to a new PeerConnection): its next packet continues the numbering
    /// as after a switch.
    pub fn restart_source(&mut self) {
        self.current = None;
    }

    fn switch(&mut self, id: usize, seq: u64, time: u32, at: Instant, clock_rate: u32) -> Source {
        let src = match self.last {
            // The first source keeps its own numbers.
            None => Source {
                id,
                seq_offset: 0,
                time_offset: 0,
                first_seq: seq,
            },
            Some(last) => {
                let elapsed = at.saturating_duration_since(last.at);
                let ticks = (elapsed.as_secs_f64() * f64::from(clock_rate)).round();
                let ticks = (ticks as u64).clamp(1, u64::from(u32::MAX / 2)) as u32;
                let next_time = last.time.wrapping_add(ticks);
                Source {
                    id,
                    seq_offset: (last.seq as i64 + 1).saturating_sub(seq as i64),
                    time_offset: next_time.wrapping_sub(time),
                    first_seq: seq,
                }
            }
        };
        self.current = Some(src);
        src
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    const VIDEO: u32 = 90_000;

    #[test]
    fn the_first_source_keeps_its_numbers() {
        let t = Instant::now();
        let mut r = Rewriter::new();
        assert_eq!(
            r.rewrite(0, 100, 5000, t, VIDEO),
            Some(Rewritten {
                seq: 100,
                time: 5000
            })
        );
        assert_eq!(
            r.rewrite(0, 102, 8000, t, VIDEO),
            Some(Rewritten {
                seq: 102,
                time: 8000
            })
        );
        // Reordered and late packets keep their places.
        assert_eq!(
            r.rewrite(0, 101, 5000, t, VIDEO),
            Some(Rewritten {
                seq: 101,
                time: 5000
            })
        );
        // One from before the first forwarded packet (a frame the subscriber never got
        // the start of) is dropped.
        assert_eq!(r.rewrite(0, 99, 2000, t, VIDEO), None);
    }

    #[test]
    fn a_switch_continues_numbers_and_time() {
        let t = Instant::now();
        let mut r = Rewriter::new();
        r.rewrite(0, 100, 5000, t, VIDEO);
        r.rewrite(0, 101, 5000, t, VIDEO);
        // Layer 2 starts 100 ms later with numbers of its own.
        let at = t + Duration::from_millis(100);
        assert_eq!(
            r.rewrite(2, 7000, 1_000_000, at, VIDEO),
            Some(Rewritten {
                seq: 102,
                time: 14_000
            })
        );
        assert_eq!(
            r.rewrite(2, 7001, 1_003_000, at, VIDEO),
            Some(Rewritten {
                seq: 103,
                time: 17_000
            })
        );
        // A packet of layer 2 from before the switch would collide: dropped.
        assert_eq!(r.rewrite(2, 6999, 997_000, at, VIDEO), None);
        // And back to layer 0.
        let at = at + Duration::from_millis(50);
        assert_eq!(
            r.rewrite(0, 150, 9000, at, VIDEO),
            Some(Rewritten {
                seq: 104,
                time: 21_500
            })
        );
    }

    #[test]
    fn rtp_time_wraps() {
        let t = Instant::now();
        let mut r = Rewriter::new();
        r.rewrite(0, 1, u32::MAX - 10, t, VIDEO);
        let got = r.rewrite(0, 2, 20, t, VIDEO);
        assert_eq!(got, Some(Rewritten { seq: 2, time: 20 }));
        let got = r.rewrite(1, 50, 7, t + Duration::from_millis(10), VIDEO);
        assert_eq!(got, Some(Rewritten { seq: 3, time: 920 }));
    }

    proptest! {
        /// Whatever the switches, the numbers the subscriber sees in arrival order of
        /// each source's packets in order never repeat and never go back.
        #[test]
        fn in_order_packets_get_increasing_unique_numbers(
            steps in proptest::collection::vec((0usize..3, 1u64..5, 0u64..40), 1..200),
        ) {
            let t0 = Instant::now();
            let mut r = Rewriter::new();
            let mut next = [1_000u64, 50_000, 900_000];
            let mut last_out = 0u64;
            let mut ms = 0u64;
            for (source, count, gap_ms) in steps {
                ms += gap_ms;
                for _ in 0..count {
                    let seq = next[source];
                    next[source] += 1;
                    let got = r.rewrite(source, seq, (seq * 3000) as u32, t0 + Duration::from_millis(ms), VIDEO);
                    let got = got.expect("in-order packets are forwarded");
                    prop_assert!(got.seq > last_out, "{} after {}", got.seq, last_out);
                    last_out = got.seq;
                }
            }
        }
    }
}
