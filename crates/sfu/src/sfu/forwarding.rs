//! Forwarding: each publisher's RTP frames to the subscribers at the layer each one
//! follows (switching at keyframes, with continuous RTP time), and data channel messages.

use super::*;

impl Sfu {
    pub(super) fn on_media(&mut self, owner: u64, d: MediaData, now: Instant) {
        let Some(p) = self.peers.get(&owner) else {
            return;
        };
        if !p.role.can_publish() {
            return;
        }
        let room = p.room.clone();
        let Some(tid) = self.published_track(owner, d.mid, now) else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        let Some(li) = track.layer_of(d.rid) else {
            return;
        };
        track.layers[li].meter.add(now, d.data.len());
        track.layers[li].missed = 0;
        for (i, l) in track.layers.iter_mut().enumerate() {
            if i != li {
                l.missed = l.missed.saturating_add(1);
            }
        }
        let kind = track.kind;
        let keyframe = d.is_keyframe();
        let gap = kind == MediaKind::Video && !d.contiguous && !keyframe;
        if gap {
            // A frame is missing: what follows cannot be decoded until a keyframe.
            self.request_keyframe(tid, li, now);
        }
        if kind == MediaKind::Audio {
            if let Some(level) = d.ext_vals.audio_level {
                self.observe_speaker(&room, tid, level, now);
            }
        }
        let subscribers: Vec<u64> = self
            .rooms
            .get(&room)
            .map(|r| r.peers.iter().copied().filter(|k| *k != owner).collect())
            .unwrap_or_default();
        for sub in subscribers {
            let Some((mid, decision)) = self.admit(sub, tid, li, kind, keyframe, gap, now) else {
                continue;
            };
            let Some(o) = self.out_mut(sub, tid) else {
                continue;
            };
            if keyframe {
                o.sel.kf_wait = None;
            }
            let rebase = std::mem::take(&mut o.sel.rebase_pending)
                || (decision.rebase && kind == MediaKind::Video);
            let time = out_time(&mut o.sel, &d, rebase);
            let tune = o.rtx_age.is_none();
            let outcome = self.guard(sub, "writing media", |p| {
                // Once per subscription, not per frame: later RTT changes go through
                // `retune_rtx`.
                let tuned = if tune {
                    let age = rtx_age(p.rtt_ms);
                    tune_send_stream(&mut p.rtc, mid, kind, age)
                } else {
                    None
                };
                let Some(w) = p.rtc.writer(mid) else {
                    return (false, tuned);
                };
                let Some(pt) = w.match_params(d.params) else {
                    return (false, tuned);
                };
                let w = match (d.ext_vals.audio_level, d.ext_vals.voice_activity) {
                    (Some(l), Some(v)) => w.audio_level(l, v),
                    _ => w,
                };
                match w.write(pt, d.network_time, time, d.data.clone()) {
                    Ok(()) => (true, tuned),
                    Err(e) => {
                        debug!(error = %e, "SFU write refused");
                        (false, tuned)
                    }
                }
            });
            self.account_write(sub, tid, kind, keyframe, outcome, now);
        }
    }

    /// The gate every forwarded frame (frame mode) or packet (RTP mode) of layer `li` of
    /// track `tid` passes for subscriber `sub`: connected, its m-line for the track open,
    /// consent not lost, and the layer the one its selection follows now ([`decide`],
    /// which may ask for a keyframe or switch layers). `gap`: a frame of `li` went
    /// missing, so a video subscription on it starts over at a keyframe (frame mode).
    /// `Some` when it goes out, with the m-line and the decision.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit(
        &mut self,
        sub: u64,
        tid: u64,
        li: usize,
        kind: MediaKind,
        keyframe: bool,
        gap: bool,
        now: Instant,
    ) -> Option<(Mid, Decision)> {
        let sp = self.peers.get_mut(&sub)?;
        if !sp.connected {
            return None;
        }
        let consent_lost = sp.consent_lost(now);
        let o = sp.outs.iter_mut().find(|o| o.track == tid && !o.gone)?;
        let OutState::Open(mid) = o.state else {
            return None;
        };
        if kind == MediaKind::Video && (consent_lost || (gap && o.sel.current == Some(li))) {
            // Nothing the subscriber's decoder could use until the next keyframe (or it
            // stopped answering: it gets nothing until it does, then a keyframe).
            o.sel.current = None;
        }
        if consent_lost {
            return None;
        }
        let decision = decide(&mut o.sel, li, keyframe || kind == MediaKind::Audio);
        if decision.want_keyframe {
            self.request_keyframe(tid, li, now);
        }
        if !decision.forward {
            return None;
        }
        if decision.switched {
            self.counters.layer_switches += 1;
        }
        Some((mid, decision))
    }

    /// Subscriber `sub`'s subscription to track `tid`.
    pub(super) fn out_mut(&mut self, sub: u64, tid: u64) -> Option<&mut TrackOut> {
        self.peers
            .get_mut(&sub)?
            .outs
            .iter_mut()
            .find(|o| o.track == tid)
    }

    /// Counts what a write to `sub`'s subscription to `tid` did and schedules its
    /// output. `outcome`: the guarded write's (written, resend-cache age set by it), `None`
    /// when the peer faulted.
    pub(super) fn account_write(
        &mut self,
        sub: u64,
        tid: u64,
        kind: MediaKind,
        keyframe: bool,
        outcome: Option<(bool, Option<Duration>)>,
        now: Instant,
    ) {
        let written = outcome.is_some_and(|(w, _)| w);
        if let Some(o) = self.out_mut(sub, tid) {
            if let Some((_, Some(age))) = outcome {
                o.rtx_age = Some(age);
            }
            if written {
                o.watch.packets += 1;
                o.watch.last_media = Some(now);
                if keyframe && kind == MediaKind::Video {
                    o.watch.keyframes += 1;
                }
            } else {
                o.watch.refused += 1;
            }
        }
        if written {
            self.counters.media_forwarded += 1;
        }
        self.drain_later(sub);
    }

    /// An audio level of track `tid`'s owner for its room's speaker detection.
    pub(super) fn observe_speaker(&mut self, room: &str, tid: u64, level: i8, now: Instant) {
        let Some(owner_id) = self.tracks.get(&tid).map(|t| &t.owner_id) else {
            return;
        };
        if let Some(r) = self.rooms.get_mut(room) {
            r.speaker.observe(owner_id, level, now);
        }
    }

    /// Resizes the NACK/RTX caches of `key`'s subscriptions when its RTT moved far from
    /// what they were sized for ([`rtx_age_changed`]).
    pub(super) fn retune_rtx(&mut self, key: u64) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let want = rtx_age(p.rtt_ms);
        if !p.outs.iter().any(|o| {
            o.kind == MediaKind::Video && o.rtx_age.is_some_and(|have| rtx_age_changed(have, want))
        }) {
            return;
        }
        self.guard(key, "resizing a NACK/RTX cache", |p| {
            for o in &mut p.outs {
                let OutState::Open(mid) = o.state else {
                    continue;
                };
                if o.kind == MediaKind::Video
                    && o.rtx_age.is_some_and(|have| rtx_age_changed(have, want))
                {
                    if let Some(age) = tune_send_stream(&mut p.rtc, mid, o.kind, want) {
                        o.rtx_age = Some(age);
                    }
                }
            }
        });
    }

    /// The track `owner` publishes on `mid`: the first media of a new PeerConnection's
    /// m-line takes its track over.
    pub(super) fn published_track(&mut self, owner: u64, mid: Mid, now: Instant) -> Option<u64> {
        let p = self.peers.get(&owner)?;
        let found = p
            .published
            .iter()
            .copied()
            .find(|t| self.tracks.get(t).is_some_and(|t| t.mid == mid));
        match found {
            Some(t) => Some(t),
            None => {
                let i = p.claims.iter().position(|(m, _, _)| *m == mid)?;
                self.take_over(owner, i, now)
            }
        }
    }

    pub(super) fn on_channel_data(&mut self, from: u64, d: ChannelData) {
        let Some(p) = self.peers.get(&from) else {
            return;
        };
        if d.binary || d.data.len() > MAX_RELAY_MESSAGE {
            // Binary messages are not relayed: the envelope is text JSON.
            return;
        }
        let Ok(text) = std::str::from_utf8(&d.data) else {
            return;
        };
        let Some(label) = p
            .channels
            .iter()
            .find(|(c, _)| *c == d.id)
            .map(|(_, l)| l.clone())
        else {
            return;
        };
        let msg = serde_json::json!({ "from": p.id, "data": text }).to_string();
        // The sender's other PeerConnection (during a replacement) is the sender too.
        let sibling = p.retired.or(p.retired_of);
        let others: Vec<u64> = self
            .rooms
            .get(&p.room)
            .map(|r| {
                r.peers
                    .iter()
                    .copied()
                    .filter(|k| *k != from && Some(*k) != sibling)
                    .collect()
            })
            .unwrap_or_default();
        let channel_of = |p: &Peer| {
            p.channels
                .iter()
                .find(|(_, l)| *l == label)
                .map(|(c, _)| *c)
        };
        for to in others {
            let Some(tp) = self.peers.get(&to) else {
                continue;
            };
            // A peer with two PeerConnections gets the message once: on the new one when
            // its channel is open, else on the old one.
            let live_has_it = tp
                .retired_of
                .and_then(|k| self.peers.get(&k))
                .is_some_and(|lp| channel_of(lp).is_some());
            if live_has_it {
                continue;
            }
            let Some(cid) = channel_of(tp) else {
                continue;
            };
            let sent = self.guard(to, "relaying a data channel message", |p| {
                p.rtc
                    .channel(cid)
                    .is_some_and(|mut c| matches!(c.write(false, msg.as_bytes()), Ok(true)))
            });
            if sent == Some(true) {
                self.counters.messages_relayed += 1;
            }
            self.drain_later(to);
        }
    }
}

/// How long a subscriber's send streams keep sent packets for NACK/RTX: [`RTX_AGE_RTTS`]
/// of its RTT, within [`RTX_MIN_AGE`]..=[`RTX_MAX_AGE`]; [`RTX_UNKNOWN_RTT_AGE`] while its
/// RTT is not known. Most of the SFU's memory per subscription is this cache (one
/// packetized copy of each sent packet), so a subscriber on a short path keeps only what
/// it could still ask for.
pub(super) fn rtx_age(rtt_ms: Option<f64>) -> Duration {
    rtts(rtt_ms).unwrap_or(RTX_UNKNOWN_RTT_AGE)
}

/// How long a gap in a publisher's video waits for its resends before the SFU asks for a
/// keyframe ([`crate::gaps`]): as long as a subscriber's cache keeps packets for that
/// RTT, and [`GAP_UNKNOWN_RTT_WAIT`] while the publisher's RTT is not known.
pub(super) fn gap_wait(rtt_ms: Option<f64>) -> Duration {
    rtts(rtt_ms).unwrap_or(GAP_UNKNOWN_RTT_WAIT)
}

/// [`RTX_AGE_RTTS`] of a known RTT, within [`RTX_MIN_AGE`]..=[`RTX_MAX_AGE`].
fn rtts(rtt_ms: Option<f64>) -> Option<Duration> {
    match rtt_ms {
        Some(ms) if ms.is_finite() && ms >= 0.0 => {
            let age = Duration::from_secs_f64(ms / 1000.0) * RTX_AGE_RTTS;
            Some(age.clamp(RTX_MIN_AGE, RTX_MAX_AGE))
        }
        _ => None,
    }
}

/// Whether a cache kept for `have` should be set to `want`: only when they differ by
/// more than half (setting the cache empties it, and RTT samples wobble).
fn rtx_age_changed(have: Duration, want: Duration) -> bool {
    want * 2 > have * 3 || want * 3 < have * 2
}

/// Sets up the send stream of `mid` for forwarding and returns how long it keeps sent
/// packets: a video stream's NACK/RTX cache is set to `age` (the packet count bound stays
/// as configured); an audio stream keeps none (`Duration::ZERO`), since the SFU writes
/// audio as not NACKable (browsers do not NACK Opus), and with a cache str0m also keeps a
/// history of every packet sent for the resend ratio, per audio subscription. Both are made unpaced. `None` while str0m has no such stream yet.
///
/// Unpaced: a forwarded packet leaves when it arrives, as the publisher paced it. str0m
/// paces video at 1.1 x its bandwidth estimate, and a subscriber of many streams waited
/// in that queue while the estimate climbed (a room of 16: frame latency p99 1.3 s ->
/// 10 ms, 10 % less CPU per packet, docs/benchmarks.md); the estimate still chooses the
/// simulcast layers, and str0m's probes and padding are still paced.
pub(super) fn tune_send_stream(
    rtc: &mut Rtc,
    mid: Mid,
    kind: MediaKind,
    age: Duration,
) -> Option<Duration> {
    let mut api = rtc.direct_api();
    let tx = api.stream_tx_by_mid(mid, None)?;
    let age = match kind {
        MediaKind::Audio => {
            tx.set_rtx_cache(0, Duration::ZERO, None);
            Duration::ZERO
        }
        MediaKind::Video => {
            tx.set_rtx_cache(SEND_BUFFER_VIDEO, age, Some(RTX_RATIO_CAP));
            age
        }
    };
    tx.set_unpaced(true);
    Some(age)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Decision {
    pub(super) forward: bool,
    /// First frame of a new layer (or after a pause): re-base the RTP time.
    pub(super) rebase: bool,
    pub(super) switched: bool,
    pub(super) want_keyframe: bool,
}

/// Whether one frame of layer `li` goes to a subscriber: frames of the current layer do;
/// the target layer takes over at its first keyframe.
pub(super) fn decide(sel: &mut Selection, li: usize, keyframe: bool) -> Decision {
    let Some(target) = sel.target else {
        sel.current = None;
        return Decision::default();
    };
    if li == target && sel.current != Some(target) {
        if keyframe {
            let switched = sel.current.is_some();
            sel.current = Some(target);
            return Decision {
                forward: true,
                rebase: true,
                switched,
                want_keyframe: false,
            };
        }
        return Decision {
            want_keyframe: true,
            ..Decision::default()
        };
    }
    Decision {
        forward: sel.current == Some(li),
        ..Decision::default()
    }
}

/// The RTP time written for a frame: the incoming time plus the subscription's offset;
/// on a re-base the offset is chosen so that time continues from the last written frame
/// by the network time elapsed since (layers have unrelated RTP time bases).
pub(super) fn out_time(sel: &mut Selection, d: &MediaData, rebase: bool) -> MediaTime {
    let freq = d.time.frequency();
    let input = i128::from(d.time.numer());
    if rebase {
        sel.offset = match sel.last_out {
            Some((last, at)) => {
                let dt = d.network_time.saturating_duration_since(at);
                let step = ((dt.as_secs_f64() * f64::from(freq.get())) as i128).max(1);
                last + step - input
            }
            None => 0,
        };
    }
    let out = (input + sel.offset).max(0);
    sel.last_out = Some((out, d.network_time));
    MediaTime::new(out.min(i128::from(u64::MAX)) as u64, freq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(target: Option<usize>, current: Option<usize>) -> Selection {
        Selection {
            target,
            current,
            target_layer: Layer::Medium,
            limited_at: None,
            offset: 0,
            last_out: None,
            kf_wait: None,
            rebase_pending: false,
            rewriter: crate::rewrite::Rewriter::new(),
        }
    }

    #[test]
    fn rtx_age_is_three_rtts_within_its_bounds() {
        assert_eq!(rtx_age(None), RTX_UNKNOWN_RTT_AGE);
        assert_eq!(rtx_age(Some(f64::NAN)), RTX_UNKNOWN_RTT_AGE);
        assert_eq!(rtx_age(Some(-1.0)), RTX_UNKNOWN_RTT_AGE);
        assert_eq!(rtx_age(Some(0.0)), RTX_MIN_AGE);
        assert_eq!(rtx_age(Some(10.0)), RTX_MIN_AGE);
        assert_eq!(rtx_age(Some(100.0)), Duration::from_millis(300));
        assert_eq!(rtx_age(Some(5_000.0)), RTX_MAX_AGE);
        assert_eq!(rtx_age(Some(f64::INFINITY)), RTX_UNKNOWN_RTT_AGE);
        assert_eq!(RTX_UNKNOWN_RTT_AGE, RTX_MIN_AGE);
        // A gap waits longer while the publisher's RTT is not known, as long once it is.
        assert_eq!(gap_wait(None), GAP_UNKNOWN_RTT_WAIT);
        assert_eq!(gap_wait(Some(100.0)), Duration::from_millis(300));
        assert_eq!(gap_wait(Some(1.0)), RTX_MIN_AGE);
        // Resized only on a change of more than half either way.
        let ms = Duration::from_millis;
        assert!(!rtx_age_changed(ms(200), ms(200)));
        assert!(!rtx_age_changed(ms(200), ms(290)));
        assert!(rtx_age_changed(ms(200), ms(310)));
        assert!(!rtx_age_changed(ms(300), ms(210)));
        assert!(rtx_age_changed(ms(1000), ms(200)));
    }

    #[test]
    fn switch_happens_only_at_a_keyframe_of_the_target() {
        let mut s = sel(Some(2), Some(0));
        // Current layer keeps flowing while waiting.
        assert!(decide(&mut s, 0, false).forward);
        // Delta frame of the target: not forwarded, a keyframe is wanted.
        let d = decide(&mut s, 2, false);
        assert!(!d.forward && d.want_keyframe);
        // Other layers are never forwarded.
        assert!(!decide(&mut s, 1, true).forward);
        // Keyframe of the target: switch.
        let d = decide(&mut s, 2, true);
        assert!(d.forward && d.rebase && d.switched);
        assert_eq!(s.current, Some(2));
        assert!(!decide(&mut s, 0, false).forward);
        assert!(decide(&mut s, 2, false).forward);
        // Paused: nothing, and the current layer is dropped.
        s.target = None;
        assert!(!decide(&mut s, 2, true).forward);
        assert_eq!(s.current, None);
    }
}
