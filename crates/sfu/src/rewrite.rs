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
//! VP8's payload descriptor carries numbers of its own that a receiver orders frames by:
//! the picture id (Chromium drops a frame, a keyframe included, whose id is older than
//! one it decoded) and TL0PICIDX (which base-layer frame a delta frame follows). Each
//! simulcast layer counts them from its own random start, so they are continued across
//! switches like the sequence numbers ([`Rewriter::vp8`]); the caller patches them into
//! the outgoing packet (str0m's `Vp8Patch`, applied as the packet is serialized, so the
//! payload stays shared).
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
    /// The newest VP8 picture id (15 bits) and TL0PICIDX sent.
    last_picture_id: Option<u16>,
    last_tl0: Option<u8>,
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
    /// Added (wrapping, 15 bits) to a VP8 picture id and (8 bits) to a TL0PICIDX; set
    /// at the source's first VP8 packet.
    vp8_offsets: Option<(u16, u8)>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    time: u32,
    at: Instant,
}

/// A VP8 packet's picture id and TL0PICIDX on the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Ids {
    pub picture_id: Option<u16>,
    pub tl0: Option<u8>,
}

const PICTURE_ID_MASK: u16 = 0x7fff;

/// Whether 15-bit picture id `a` comes after `b` (within half the range).
fn picture_id_newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b) & PICTURE_ID_MASK;
    d != 0 && d < 0x4000
}

/// Whether TL0PICIDX `a` comes after `b` (within half the range).
fn tl0_newer(a: u8, b: u8) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x80
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

    /// The VP8 picture id and TL0PICIDX of a packet of the source of the last
    /// [`Rewriter::rewrite`]: a new source's first ids follow the last ones sent (the
    /// first source keeps its own). Ids the descriptor lacks stay `None`.
    pub fn vp8(&mut self, picture_id: Option<u16>, tl0: Option<u8>) -> Vp8Ids {
        let Some(src) = self.current.as_mut() else {
            return Vp8Ids { picture_id, tl0 };
        };
        let (pid_offset, tl0_offset) = *src.vp8_offsets.get_or_insert_with(|| {
            let pid = match (self.last_picture_id, picture_id) {
                (Some(last), Some(p)) => last.wrapping_add(1).wrapping_sub(p) & PICTURE_ID_MASK,
                _ => 0,
            };
            let tl0 = match (self.last_tl0, tl0) {
                (Some(last), Some(t)) => last.wrapping_add(1).wrapping_sub(t),
                _ => 0,
            };
            (pid, tl0)
        });
        let out = Vp8Ids {
            picture_id: picture_id.map(|p| p.wrapping_add(pid_offset) & PICTURE_ID_MASK),
            tl0: tl0.map(|t| t.wrapping_add(tl0_offset)),
        };
        if let Some(p) = out.picture_id {
            if self.last_picture_id.is_none_or(|l| picture_id_newer(p, l)) {
                self.last_picture_id = Some(p);
            }
        }
        if let Some(t) = out.tl0 {
            if self.last_tl0.is_none_or(|l| tl0_newer(t, l)) {
                self.last_tl0 = Some(t);
            }
        }
        out
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
                vp8_offsets: None,
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
                    vp8_offsets: None,
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
    fn vp8_ids_continue_across_a_switch() {
        let t = Instant::now();
        let mut r = Rewriter::new();
        r.rewrite(0, 10, 0, t, VIDEO);
        assert_eq!(
            r.vp8(Some(20_000), Some(7)),
            Vp8Ids {
                picture_id: Some(20_000),
                tl0: Some(7)
            },
            "the first source keeps its ids"
        );
        r.rewrite(0, 11, 3000, t, VIDEO);
        r.vp8(Some(20_001), Some(8));
        // A switch to a layer whose ids lag far behind (and whose TL0PICIDX wraps).
        r.rewrite(1, 500, 9000, t, VIDEO);
        assert_eq!(
            r.vp8(Some(3), Some(250)),
            Vp8Ids {
                picture_id: Some(20_002),
                tl0: Some(9)
            }
        );
        r.rewrite(1, 501, 12000, t, VIDEO);
        assert_eq!(
            r.vp8(Some(4), Some(251)),
            Vp8Ids {
                picture_id: Some(20_003),
                tl0: Some(10)
            }
        );
        // A late packet of an earlier frame keeps its place and does not move "last".
        r.rewrite(1, 499, 6000, t, VIDEO);
        assert_eq!(r.vp8(Some(2), Some(249)).picture_id, Some(20_001));
        // A source's ids wrap at 15 bits; the outgoing ones keep counting.
        r.rewrite(2, 600, 15000, t, VIDEO);
        assert_eq!(r.vp8(Some(0x7ffe), None).picture_id, Some(20_004));
        assert_eq!(r.vp8(Some(0x7fff), None).picture_id, Some(20_005));
        assert_eq!(r.vp8(Some(0), None).picture_id, Some(20_006));
        // Back to the first layer: a new switch, after the newest sent.
        r.rewrite(0, 700, 18000, t, VIDEO);
        assert_eq!(
            r.vp8(Some(100), Some(0)),
            Vp8Ids {
                picture_id: Some(20_007),
                tl0: Some(11)
            }
        );
        // Outgoing ids wrap too.
        let mut r = Rewriter::new();
        r.rewrite(0, 1, 0, t, VIDEO);
        r.vp8(Some(0x7fff), Some(255));
        r.rewrite(1, 90, 0, t, VIDEO);
        assert_eq!(
            r.vp8(Some(42), Some(3)),
            Vp8Ids {
                picture_id: Some(0),
                tl0: Some(0)
            }
        );
    }

    #[test]
    fn descriptors_without_ids_pass_through() {
        let t = Instant::now();
        let mut r = Rewriter::new();
        assert_eq!(r.vp8(Some(5), None).picture_id, Some(5), "no source yet");
        r.rewrite(0, 1, 0, t, VIDEO);
        assert_eq!(
            r.vp8(None, None),
            Vp8Ids {
                picture_id: None,
                tl0: None
            }
        );
        r.rewrite(1, 50, 0, t, VIDEO);
        assert_eq!(
            r.vp8(Some(9), None).picture_id,
            Some(9),
            "nothing to follow"
        );
    }

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
