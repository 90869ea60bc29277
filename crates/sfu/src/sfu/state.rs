//! The SFU's state: peers, rooms, incoming tracks with their layers, and each
//! subscription's forwarding state.

use super::*;

/// Where a forwarded track stands in the subscriber's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutState {
    /// Waiting for the next SFU offer.
    ToOpen,
    /// In the outstanding offer.
    Negotiating(Mid),
    /// Negotiated: media is written to this mid.
    Open(Mid),
    /// To be set inactive in the next offer (the publisher left); the m-line is then
    /// free for the next publisher of its kind.
    ToStop(Mid),
    /// Set inactive in the outstanding offer.
    NegotiatingStop(Mid),
}

/// The per (subscriber, track) forwarding state.
#[derive(Debug, Clone)]
pub(super) struct Selection {
    /// Index into the track's layers that should be forwarded; `None` = paused.
    pub(super) target: Option<usize>,
    /// Index of the layer being forwarded now (switches at a keyframe of `target`).
    pub(super) current: Option<usize>,
    /// The layer `target` stands for, as the policy sees it.
    pub(super) target_layer: Layer,
    /// Last time the bandwidth estimate limited this subscription.
    pub(super) limited_at: Option<Instant>,
    /// Added to incoming RTP time so that output time stays continuous across switches.
    pub(super) offset: i128,
    /// Last written RTP time and the network time of that frame.
    pub(super) last_out: Option<(i128, Instant)>,
    /// Since when this subscription waits for a keyframe (a first frame, a layer switch,
    /// a gap in the publisher's stream, or the subscriber's PLI/FIR): the SFU asks the
    /// publisher again until one is forwarded.
    pub(super) kf_wait: Option<Instant>,
    /// The next frame re-bases the output RTP time (the publisher's track moved to a new
    /// PeerConnection: its time base changed).
    pub(super) rebase_pending: bool,
    /// RTP mode: this subscription's sequence numbers and RTP times.
    pub(super) rewriter: crate::rewrite::Rewriter,
}

#[derive(Debug)]
pub(super) struct TrackOut {
    pub(super) track: u64,
    pub(super) publisher: String,
    pub(super) kind: MediaKind,
    pub(super) state: OutState,
    /// The publisher's track is gone: set the m-line inactive (free) at the next offer.
    pub(super) gone: bool,
    pub(super) sel: Selection,
    /// What the subscription has done, for the per-subscription state and repairs.
    pub(super) watch: OutWatch,
    /// The free m-line this subscription took (reused from a publisher who left); given
    /// back if the offer that reuses it is dropped.
    pub(super) slot: Option<Slot>,
    /// How long the m-line's send stream keeps sent packets for NACK/RTX ([`rtx_age`]);
    /// `None` until it is set up for forwarding (str0m makes the stream when the SDP is
    /// applied, with a 3 s cache).
    pub(super) rtx_age: Option<Duration>,
}

/// An m-line of a subscriber's session whose publisher left: inactive, to be reused for
/// the next publisher of its kind, so a subscriber's SDP is bounded by the most people
/// present at once, not by everyone who ever came.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) mid: Mid,
    pub(super) kind: MediaKind,
    /// The last RTP time written on it: the next publisher's time continues from there.
    pub(super) last_out: Option<(i128, Instant)>,
    /// RTP mode: the numbering written on it (same SSRC for the next publisher: its
    /// sequence numbers and times continue from there).
    pub(super) rewriter: crate::rewrite::Rewriter,
}

/// Counters and times of one subscription ([`Sfu::room_state`]).
#[derive(Debug, Clone, Default)]
pub(super) struct OutWatch {
    /// When the m-line was negotiated (answer accepted).
    pub(super) opened: Option<Instant>,
    /// Packets written to the subscriber.
    pub(super) packets: u64,
    /// Keyframes written to the subscriber.
    pub(super) keyframes: u64,
    /// Last packet written.
    pub(super) last_media: Option<Instant>,
    /// Since when the publisher sends the wanted layer and nothing reaches the subscriber.
    pub(super) starved_since: Option<Instant>,
    /// Starvation episodes noticed (each logged once at info).
    pub(super) starved: u32,
    /// Keyframe requests made for this subscription.
    pub(super) keyframe_requests: u32,
    /// Packets that were due but could not be written (no writer for the mid, or no
    /// payload type of the subscriber's SDP fits the publisher's codec).
    pub(super) refused: u64,
}

#[derive(Debug)]
pub(super) struct LayerIn {
    pub(super) rid: Option<Rid>,
    pub(super) label: Layer,
    pub(super) meter: RateMeter,
    pub(super) last_keyframe_request: Option<Instant>,
    /// Frames of the other layers of the track since this layer's last frame: a layer
    /// the publisher stopped sending is noticed before [`policy::LAYER_STALE`].
    pub(super) missed: u32,
    /// RTP mode: sequence numbers missing from this layer (video).
    pub(super) gaps: crate::gaps::Gaps,
}

impl LayerIn {
    pub(super) fn new(rid: Option<Rid>, label: Layer) -> LayerIn {
        LayerIn {
            rid,
            label,
            meter: RateMeter::default(),
            last_keyframe_request: None,
            missed: 0,
            gaps: crate::gaps::Gaps::new(),
        }
    }

    /// Whether the publisher sends this layer now.
    pub(super) fn active(&self, now: Instant) -> bool {
        self.meter.active(now)
            && !(self.missed >= LAYER_GONE_FRAMES
                && self
                    .meter
                    .last()
                    .is_some_and(|t| now.saturating_duration_since(t) >= LAYER_GONE_AFTER))
    }
}

#[derive(Debug)]
pub(super) struct TrackIn {
    pub(super) owner: u64,
    pub(super) owner_id: String,
    pub(super) mid: Mid,
    pub(super) kind: MediaKind,
    /// Low to high. One entry with `rid: None` for a track without simulcast.
    pub(super) layers: Vec<LayerIn>,
}

impl TrackIn {
    pub(super) fn simulcast(&self) -> bool {
        self.layers.first().is_some_and(|l| l.rid.is_some())
    }

    pub(super) fn layer_of(&self, rid: Option<Rid>) -> Option<usize> {
        self.layers.iter().position(|l| l.rid == rid)
    }

    pub(super) fn index_of(&self, label: Layer) -> Option<usize> {
        self.layers.iter().position(|l| l.label == label)
    }

    pub(super) fn rate(&self, now: Instant) -> u64 {
        self.layers
            .iter()
            .filter(|l| l.active(now))
            .filter_map(|l| l.meter.rate())
            .sum()
    }
}

pub(super) struct Peer {
    pub(super) id: String,
    pub(super) room: String,
    pub(super) role: Role,
    pub(super) rtc: Rtc,
    pub(super) ufrag: String,
    pub(super) pass: String,
    pub(super) joined: Instant,
    pub(super) connected: bool,
    /// At least one offer/answer completed: the SFU may offer from now on.
    pub(super) negotiated: bool,
    /// The SFU's outstanding offer and when it was made. It stays until the peer answers
    /// or offers itself (see [`SLOW_ANSWER`]).
    pub(super) pending: Option<(SdpPendingOffer, Instant)>,
    /// The outstanding offer was reported slow (once per offer).
    pub(super) slow_noted: bool,
    /// Offers made, answers accepted, answers refused, offers left unanswered past
    /// [`SLOW_ANSWER`], offers the runtime could not deliver.
    pub(super) negotiation: Negotiation,
    /// The room went back to mesh: the peer keeps forwarding until it is removed but is
    /// not renegotiated (its client closes this connection).
    pub(super) lingering: bool,
    /// Free m-lines (their publishers left), reused before new ones are added.
    pub(super) free: Vec<Slot>,
    /// The `a=msid` of reused m-lines: str0m keeps the stream id an m-line was made
    /// with, so the SDP the SFU sends is rewritten to name the current publisher.
    pub(super) msids: Vec<(Mid, String, String)>,
    pub(super) offer_not_before: Option<Instant>,
    pub(super) outs: Vec<TrackOut>,
    pub(super) published: Vec<u64>,
    /// WHEP: negotiated send m-lines not bound to a publisher track yet.
    pub(super) unbound: Vec<(Mid, MediaKind)>,
    pub(super) channels: Vec<(ChannelId, String)>,
    pub(super) view: Option<Vec<Tile>>,
    pub(super) bwe: Option<u64>,
    /// The desired bitrate last given to str0m's BWE (what the subscriber's preferred
    /// layers add up to).
    pub(super) desired_bitrate: u64,
    pub(super) rtt_ms: Option<f64>,
    pub(super) nacks: Vec<(Mid, Option<Rid>, u64)>,
    pub(super) next_stats: Instant,
    pub(super) timer: Option<Instant>,
    /// Written to and waiting in the `Sfu`'s list of peers to poll.
    pub(super) undrained: bool,
    /// Writes since the peer was last drained ([`WRITES_PER_DRAIN`]).
    pub(super) writes: u32,
    pub(super) inject_fault: bool,
    /// The DTLS fingerprint of the remote PeerConnection (from its last SDP): an offer with
    /// another one comes from a new PeerConnection.
    pub(super) fingerprint: Option<String>,
    /// Last authenticated STUN request (ICE consent, RFC 7675) from the peer.
    pub(super) last_stun: Instant,
    /// Media and padding to the peer are held back: its consent stopped.
    pub(super) quiet: bool,
    /// Key of this peer's previous PeerConnection, kept forwarding while the new one
    /// comes up ([`Sfu::accept_offer`] with a new fingerprint).
    pub(super) retired: Option<u64>,
    /// For a previous PeerConnection: the key of the peer's live one.
    pub(super) retired_of: Option<u64>,
    /// A previous PeerConnection is dropped at this time at the latest.
    pub(super) retire_at: Option<Instant>,
    /// Tracks of the previous PeerConnection not yet taken over by this one.
    pub(super) inherit: Vec<u64>,
    /// This PeerConnection's m-lines that take over an inherited track at their first
    /// media: (mid, track, simulcast rids).
    pub(super) claims: Vec<(Mid, u64, Vec<Rid>)>,
}

impl Peer {
    /// Whether the peer's ICE consent (STUN requests) stopped: media to it is held back.
    pub(super) fn consent_lost(&self, now: Instant) -> bool {
        self.connected && now.saturating_duration_since(self.last_stun) > CONSENT_TIMEOUT
    }
}

/// Counters of one peer's offer/answer exchanges.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Negotiation {
    pub(super) offers: u32,
    pub(super) answers: u32,
    pub(super) refused: u32,
    pub(super) slow: u32,
    pub(super) undelivered: u32,
    pub(super) peer_offers: u32,
}

#[derive(Debug, Default)]
pub(super) struct Room {
    /// Join order.
    pub(super) peers: Vec<u64>,
    pub(super) tracks: Vec<u64>,
    pub(super) speaker: SpeakerDetector,
}

/// Orders simulcast rids low to high: `l`, `m`, `h` by name (the web client's rids; also
/// `q`/`f` as used by some clients), others in the order the SDP declares them.
pub(super) fn order_rids(rids: &[Rid]) -> Vec<(Rid, Layer)> {
    fn known(r: &str) -> Option<Layer> {
        match r {
            "l" | "q" | "low" => Some(Layer::Low),
            "m" | "mid" | "medium" => Some(Layer::Medium),
            "h" | "f" | "high" | "hi" | "full" => Some(Layer::High),
            _ => None,
        }
    }
    let rids = &rids[..rids.len().min(3)];
    if rids.iter().all(|r| known(r).is_some()) {
        let mut v: Vec<(Rid, Layer)> = rids.iter().filter_map(|r| Some((*r, known(r)?))).collect();
        v.sort_by_key(|(_, l)| l.rank());
        v.dedup_by_key(|(_, l)| *l);
        return v;
    }
    let labels: &[Layer] = match rids.len() {
        1 => &[Layer::High],
        2 => &[Layer::Low, Layer::High],
        _ => &[Layer::Low, Layer::Medium, Layer::High],
    };
    rids.iter().copied().zip(labels.iter().copied()).collect()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn new_peer(
    id: &str,
    room: &str,
    role: Role,
    rtc: Rtc,
    creds: IceCreds,
    outs: Vec<TrackOut>,
    now: Instant,
    config: &SfuConfig,
) -> Peer {
    Peer {
        id: id.to_string(),
        room: room.to_string(),
        role,
        rtc,
        ufrag: creds.ufrag,
        pass: creds.pass,
        joined: now,
        connected: false,
        negotiated: false,
        pending: None,
        slow_noted: false,
        negotiation: Negotiation::default(),
        lingering: false,
        free: Vec::new(),
        msids: Vec::new(),
        offer_not_before: None,
        outs,
        published: Vec::new(),
        unbound: Vec::new(),
        channels: Vec::new(),
        view: None,
        bwe: None,
        desired_bitrate: 0,
        rtt_ms: None,
        nacks: Vec::new(),
        next_stats: now + config.stats_interval,
        timer: None,
        undrained: false,
        writes: 0,
        inject_fault: false,
        fingerprint: None,
        last_stun: now,
        quiet: false,
        retired: None,
        retired_of: None,
        retire_at: None,
        inherit: Vec::new(),
        claims: Vec::new(),
    }
}

pub(super) fn track_room(peers: &Map<u64, Box<Peer>>, owner: u64) -> Option<String> {
    peers.get(&owner).map(|p| p.room.clone())
}

pub(super) fn build_layers(kind: MediaKind, rids: &[Rid]) -> Vec<LayerIn> {
    if kind == MediaKind::Video && !rids.is_empty() {
        order_rids(rids)
            .into_iter()
            .map(|(rid, label)| LayerIn::new(Some(rid), label))
            .collect()
    } else {
        vec![LayerIn::new(None, Layer::Single)]
    }
}

pub(super) fn new_out(tid: u64, t: &TrackIn) -> TrackOut {
    let audio = t.kind == MediaKind::Audio;
    TrackOut {
        track: tid,
        publisher: t.owner_id.clone(),
        kind: t.kind,
        state: OutState::ToOpen,
        gone: false,
        watch: OutWatch::default(),
        slot: None,
        rtx_age: None,
        sel: Selection {
            target: audio.then_some(0),
            current: audio.then_some(0),
            target_layer: if audio { Layer::Single } else { Layer::Paused },
            limited_at: None,
            offset: 0,
            last_out: None,
            kf_wait: None,
            rebase_pending: false,
            rewriter: crate::rewrite::Rewriter::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rids_order_low_to_high() {
        let r = |s: &str| Rid::from(s);
        let got = order_rids(&[r("h"), r("m"), r("l")]);
        assert_eq!(
            got,
            vec![
                (r("l"), Layer::Low),
                (r("m"), Layer::Medium),
                (r("h"), Layer::High)
            ]
        );
        let got = order_rids(&[r("a"), r("b")]);
        assert_eq!(got, vec![(r("a"), Layer::Low), (r("b"), Layer::High)]);
        let got = order_rids(&[r("1"), r("2"), r("3"), r("4")]);
        assert_eq!(got.len(), 3);
    }
}
