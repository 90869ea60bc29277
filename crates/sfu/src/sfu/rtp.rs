//! RTP mode ([`SfuConfig::rtp_mode`]): each publisher's RTP packets forwarded as they
//! come, without depacketizing a frame and packetizing it again per subscriber. The
//! payload is one shared buffer for every subscriber (and every subscriber's NACK/RTX
//! cache); each subscription rewrites sequence numbers and RTP times across layer
//! switches ([`crate::rewrite`]); keyframes are read from the payload
//! ([`crate::keyframe`]). The layer choice is the same as in frame mode ([`Sfu::admit`]),
//! packet by packet: a switch happens at the first packet of a keyframe of the target.

use str0m::format::{Codec, PayloadParams};
use str0m::rtp::{RtpPacket, RtpWrite, Vp8Descriptor};

use super::forwarding::{gap_wait, rtx_age, tune_send_stream};
use super::*;

impl Sfu {
    pub(super) fn on_rtp(&mut self, owner: u64, pkt: RtpPacket, now: Instant) {
        let Some(p) = self.peers.get_mut(&owner) else {
            return;
        };
        if !p.role.can_publish() {
            return;
        }
        let room = p.room.clone();
        let gap_wait = gap_wait(p.rtt_ms);
        // Which m-line and layer, and which codec: str0m knows the SSRC's stream (the
        // MID/RID header extensions stop once the sender's SSRCs are acknowledged).
        let pt = pkt.header.payload_type;
        let found = self.guard(owner, "reading an RTP stream", |p| {
            let mut api = p.rtc.direct_api();
            let rx = api.stream_rx(&pkt.header.ssrc)?;
            let (mid, rid) = (rx.mid(), rx.rid());
            let params = *p.rtc.codec_config().find(|c| c.pt() == pt)?;
            Some((mid, rid, params))
        });
        let Some(Some((mid, rid, params))) = found else {
            return;
        };
        let Some(tid) = self.published_track(owner, mid, now) else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        let Some(li) = track.layer_of(rid) else {
            return;
        };
        track.layers[li].meter.add(now, pkt.payload.len());
        track.layers[li].missed = 0;
        let kind = track.kind;
        // A frame of this layer ended (the marker bit of video; every audio packet): the
        // others missed one (a layer the publisher stopped falls back, as in frame mode).
        if kind == MediaKind::Audio || pkt.header.marker {
            for (i, l) in track.layers.iter_mut().enumerate() {
                if i != li {
                    l.missed = l.missed.saturating_add(1);
                }
            }
        }
        let codec = params.spec().codec;
        let vp8 = (codec == Codec::Vp8)
            .then(|| Vp8Descriptor::parse(&pkt.payload).ok())
            .flatten();
        let keyframe = kind == MediaKind::Video
            && match vp8 {
                Some(d) => d.starts_keyframe(&pkt.payload),
                None => crate::keyframe::starts_keyframe(codec, &pkt.payload),
            };
        if kind == MediaKind::Video {
            // A packet the publisher did not resend in time: every subscriber of the layer
            // waits for a keyframe (see crate::gaps).
            let gaps = &mut track.layers[li].gaps;
            gaps.on_packet(*pkt.seq_no, keyframe, now);
            if gaps.keyframe_needed(now, gap_wait) && self.request_keyframe(tid, li, now) {
                self.counters.upstream_gaps += 1;
                if let Some(t) = self.tracks.get_mut(&tid) {
                    t.layers[li].gaps.forget();
                }
            }
        }
        if kind == MediaKind::Audio {
            if let Some(level) = pkt.header.ext_vals.audio_level {
                self.observe_speaker(&room, tid, level, now);
            }
        }
        let subscribers: Vec<u64> = self
            .rooms
            .get(&room)
            .map(|r| r.peers.iter().copied().filter(|k| *k != owner).collect())
            .unwrap_or_default();
        for sub in subscribers {
            let media = Media {
                kind,
                keyframe,
                params,
                vp8,
            };
            self.forward_rtp(sub, tid, li, media, &pkt, now);
        }
    }

    /// One packet of layer `li` of track `tid` to subscriber `sub`, if its subscription
    /// follows that layer.
    fn forward_rtp(
        &mut self,
        sub: u64,
        tid: u64,
        li: usize,
        media: Media,
        pkt: &RtpPacket,
        now: Instant,
    ) {
        let Media {
            kind,
            keyframe,
            params,
            vp8,
        } = media;
        // Gaps pass through in RTP mode: the subscriber's receiver handles them.
        let Some((mid, _)) = self.admit(sub, tid, li, kind, keyframe, false, now) else {
            return;
        };
        let Some(o) = self.out_mut(sub, tid) else {
            return;
        };
        if keyframe {
            o.sel.kf_wait = None;
        }
        if std::mem::take(&mut o.sel.rebase_pending) {
            o.sel.rewriter.restart_source();
        }
        let clock_rate = params.spec().clock_rate.get();
        let Some(out) = o.sel.rewriter.rewrite(
            li,
            *pkt.seq_no,
            pkt.header.timestamp,
            pkt.timestamp,
            clock_rate,
        ) else {
            return;
        };
        // VP8's picture id and TL0PICIDX continued across switches (crate::rewrite),
        // patched in as str0m serializes the packet: the payload stays shared.
        let vp8_patch = vp8.and_then(|d| {
            let ids = o.sel.rewriter.vp8(d.picture_id(), d.tl0_pic_idx());
            if ids.picture_id == d.picture_id() && ids.tl0 == d.tl0_pic_idx() {
                return None;
            }
            let patch = |pid: Option<u16>| {
                let mut b = d.patch();
                if let Some(p) = pid {
                    b = b.picture_id(p);
                }
                if let Some(t) = ids.tl0 {
                    b = b.tl0_pic_idx(t);
                }
                b.build()
            };
            // A 7-bit picture id (Chromium sends 15) counts modulo 128.
            patch(ids.picture_id)
                .or_else(|_| patch(ids.picture_id.map(|p| p & 0x7f)))
                .ok()
        });
        let tune = o.rtx_age.is_none();
        let outcome = self.guard(sub, "writing RTP", |p| {
            // Once per subscription: later RTT changes go through `retune_rtx`.
            let tuned = if tune {
                let age = rtx_age(p.rtt_ms);
                tune_send_stream(&mut p.rtc, mid, kind, age)
            } else {
                None
            };
            let Some(out_pt) = p.rtc.codec_config().match_params(params).map(|c| c.pt()) else {
                return (false, tuned);
            };
            let mut api = p.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                return (false, tuned);
            };
            let ext = str0m::rtp::ExtensionValues {
                audio_level: pkt.header.ext_vals.audio_level,
                voice_activity: pkt.header.ext_vals.voice_activity,
                ..Default::default()
            };
            let write = RtpWrite::new(
                out_pt,
                out.seq.into(),
                out.time,
                pkt.timestamp,
                pkt.payload.clone(),
            )
            .marker(pkt.header.marker)
            .ext_vals(ext)
            .nackable(kind == MediaKind::Video);
            let write = match vp8_patch {
                Some(patch) => write.vp8_patch(patch),
                None => write,
            };
            tx.write_rtp(write);
            (true, tuned)
        });
        self.account_write(sub, tid, kind, keyframe, outcome, now);
    }
}

/// What [`Sfu::forward_rtp`] needs to know of a packet besides its bytes, found once per
/// packet for all its subscribers.
#[derive(Clone, Copy)]
struct Media {
    kind: MediaKind,
    keyframe: bool,
    params: PayloadParams,
    /// VP8's payload descriptor (VP8 only).
    vp8: Option<Vp8Descriptor>,
}
