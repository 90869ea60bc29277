//! The SFU state machine: peers (one str0m `Rtc` each), rooms, tracks, forwarding.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use ahash::RandomState;
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelData, ChannelId};
use str0m::media::{
    Direction, KeyframeRequest, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid,
};
use str0m::net::{DatagramRecv, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};
use tracing::{debug, info, warn};

use crate::demux::{self, Demux, Tuple};
use crate::limits::*;
use crate::policy::{self, Demand, RateMeter};
use crate::sdp;
use crate::speaker::SpeakerDetector;
use crate::{Layer, Protocol, Role, SfuConfig, SfuError, SfuEvent, SfuStats, Tile, Transmit};

type Map<K, V> = HashMap<K, V, RandomState>;

/// The bandwidth estimate (bit/s) of a peer whose ICE consent stopped: str0m's padding
/// toward it stays under this.
const QUIET_BITRATE: u64 = 1_000;

/// Where a forwarded track stands in the subscriber's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
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
struct Selection {
    /// Index into the track's layers that should be forwarded; `None` = paused.
    target: Option<usize>,
    /// Index of the layer being forwarded now (switches at a keyframe of `target`).
    current: Option<usize>,
    /// The layer `target` stands for, as the policy sees it.
    target_layer: Layer,
    /// Last time the bandwidth estimate limited this subscription.
    limited_at: Option<Instant>,
    /// Added to incoming RTP time so that output time stays continuous across switches.
    offset: i128,
    /// Last written RTP time and the network time of that frame.
    last_out: Option<(i128, Instant)>,
    /// Since when this subscription waits for a keyframe (a first frame, a layer switch,
    /// a gap in the publisher's stream, or the subscriber's PLI/FIR): the SFU asks the
    /// publisher again until one is forwarded.
    kf_wait: Option<Instant>,
    /// The next frame re-bases the output RTP time (the publisher's track moved to a new
    /// PeerConnection: its time base changed).
    rebase_pending: bool,
}

#[derive(Debug)]
struct TrackOut {
    track: u64,
    publisher: String,
    kind: MediaKind,
    state: OutState,
    /// The publisher's track is gone: set the m-line inactive (free) at the next offer.
    gone: bool,
    sel: Selection,
    /// What the subscription has done, for the per-subscription state and repairs.
    watch: OutWatch,
    /// The free m-line this subscription took (reused from a publisher who left); given
    /// back if the offer that reuses it is dropped.
    slot: Option<Slot>,
}

/// An m-line of a subscriber's session whose publisher left: inactive, to be reused for
/// the next publisher of its kind, so a subscriber's SDP is bounded by the most people
/// present at once, not by everyone who ever came.
#[derive(Debug, Clone)]
struct Slot {
    mid: Mid,
    kind: MediaKind,
    /// The last RTP time written on it: the next publisher's time continues from there.
    last_out: Option<(i128, Instant)>,
}

/// Counters and times of one subscription ([`Sfu::room_state`]).
#[derive(Debug, Clone, Default)]
struct OutWatch {
    /// When the m-line was negotiated (answer accepted).
    opened: Option<Instant>,
    /// Packets written to the subscriber.
    packets: u64,
    /// Keyframes written to the subscriber.
    keyframes: u64,
    /// Last packet written.
    last_media: Option<Instant>,
    /// Since when the publisher sends the wanted layer and nothing reaches the subscriber.
    starved_since: Option<Instant>,
    /// Starvation episodes noticed (each logged once at info).
    starved: u32,
    /// Keyframe requests made for this subscription.
    keyframe_requests: u32,
    /// Packets that were due but could not be written (no writer for the mid, or no
    /// payload type of the subscriber's SDP fits the publisher's codec).
    refused: u64,
}

#[derive(Debug)]
struct LayerIn {
    rid: Option<Rid>,
    label: Layer,
    meter: RateMeter,
    last_keyframe_request: Option<Instant>,
    /// Frames of the other layers of the track since this layer's last frame: a layer
    /// the publisher stopped sending is noticed before [`policy::LAYER_STALE`].
    missed: u32,
}

impl LayerIn {
    fn new(rid: Option<Rid>, label: Layer) -> LayerIn {
        LayerIn {
            rid,
            label,
            meter: RateMeter::default(),
            last_keyframe_request: None,
            missed: 0,
        }
    }

    /// Whether the publisher sends this layer now.
    fn active(&self, now: Instant) -> bool {
        self.meter.active(now)
            && !(self.missed >= LAYER_GONE_FRAMES
                && self
                    .meter
                    .last()
                    .is_some_and(|t| now.saturating_duration_since(t) >= LAYER_GONE_AFTER))
    }
}

#[derive(Debug)]
struct TrackIn {
    owner: u64,
    owner_id: String,
    mid: Mid,
    kind: MediaKind,
    /// Low to high. One entry with `rid: None` for a track without simulcast.
    layers: Vec<LayerIn>,
}

impl TrackIn {
    fn simulcast(&self) -> bool {
        self.layers.first().is_some_and(|l| l.rid.is_some())
    }

    fn layer_of(&self, rid: Option<Rid>) -> Option<usize> {
        self.layers.iter().position(|l| l.rid == rid)
    }

    fn index_of(&self, label: Layer) -> Option<usize> {
        self.layers.iter().position(|l| l.label == label)
    }

    fn rate(&self, now: Instant) -> u64 {
        self.layers
            .iter()
            .filter(|l| l.active(now))
            .filter_map(|l| l.meter.rate())
            .sum()
    }
}

struct Peer {
    id: String,
    room: String,
    role: Role,
    rtc: Rtc,
    ufrag: String,
    pass: String,
    joined: Instant,
    connected: bool,
    /// At least one offer/answer completed: the SFU may offer from now on.
    negotiated: bool,
    /// The SFU's outstanding offer and when it was made. It stays until the peer answers
    /// or offers itself (see [`SLOW_ANSWER`]).
    pending: Option<(SdpPendingOffer, Instant)>,
    /// The outstanding offer was reported slow (once per offer).
    slow_noted: bool,
    /// Offers made, answers accepted, answers refused, offers left unanswered past
    /// [`SLOW_ANSWER`], offers the runtime could not deliver.
    negotiation: Negotiation,
    /// The room went back to mesh: the peer keeps forwarding until it is removed but is
    /// not renegotiated (its client closes this connection).
    lingering: bool,
    /// Free m-lines (their publishers left), reused before new ones are added.
    free: Vec<Slot>,
    /// The `a=msid` of reused m-lines: str0m keeps the stream id an m-line was made
    /// with, so the SDP the SFU sends is rewritten to name the current publisher.
    msids: Vec<(Mid, String, String)>,
    offer_not_before: Option<Instant>,
    outs: Vec<TrackOut>,
    published: Vec<u64>,
    /// WHEP: negotiated send m-lines not bound to a publisher track yet.
    unbound: Vec<(Mid, MediaKind)>,
    channels: Vec<(ChannelId, String)>,
    view: Option<Vec<Tile>>,
    bwe: Option<u64>,
    rtt_ms: Option<f64>,
    nacks: Vec<(Mid, Option<Rid>, u64)>,
    next_stats: Instant,
    timer: Option<Instant>,
    inject_fault: bool,
    /// The DTLS fingerprint of the remote PeerConnection (from its last SDP): an offer with
    /// another one comes from a new PeerConnection.
    fingerprint: Option<String>,
    /// Last authenticated STUN request (ICE consent, RFC 7675) from the peer.
    last_stun: Instant,
    /// Media and padding to the peer are held back: its consent stopped.
    quiet: bool,
    /// Key of this peer's previous PeerConnection, kept forwarding while the new one
    /// comes up ([`Sfu::accept_offer`] with a new fingerprint).
    retired: Option<u64>,
    /// For a previous PeerConnection: the key of the peer's live one.
    retired_of: Option<u64>,
    /// A previous PeerConnection is dropped at this time at the latest.
    retire_at: Option<Instant>,
    /// Tracks of the previous PeerConnection not yet taken over by this one.
    inherit: Vec<u64>,
    /// This PeerConnection's m-lines that take over an inherited track at their first
    /// media: (mid, track, simulcast rids).
    claims: Vec<(Mid, u64, Vec<Rid>)>,
}

impl Peer {
    /// Whether the peer's ICE consent (STUN requests) stopped: media to it is held back.
    fn consent_lost(&self, now: Instant) -> bool {
        self.connected && now.saturating_duration_since(self.last_stun) > CONSENT_TIMEOUT
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("room", &self.room)
            .field("role", &self.role)
            .field("connected", &self.connected)
            .field("outs", &self.outs.len())
            .field("published", &self.published.len())
            .finish_non_exhaustive()
    }
}

/// Counters of one peer's offer/answer exchanges.
#[derive(Debug, Clone, Copy, Default)]
struct Negotiation {
    offers: u32,
    answers: u32,
    refused: u32,
    slow: u32,
    undelivered: u32,
    peer_offers: u32,
}

#[derive(Debug, Default)]
struct Room {
    /// Join order.
    peers: Vec<u64>,
    tracks: Vec<u64>,
    speaker: SpeakerDetector,
}

/// The selective forwarding unit. See the crate docs for the driving contract.
pub struct Sfu {
    config: SfuConfig,
    candidates: Vec<Candidate>,
    peers: Map<u64, Peer>,
    ids: Map<String, u64>,
    rooms: Map<String, Room>,
    tracks: Map<u64, TrackIn>,
    demux: Demux,
    timers: BTreeSet<(Instant, u64)>,
    next_key: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    work: VecDeque<(u64, Event)>,
    counters: SfuStats,
    next_tick: Instant,
    last_now: Instant,
}

impl fmt::Debug for Sfu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sfu")
            .field("rooms", &self.rooms.len())
            .field("peers", &self.peers.len())
            .field("tracks", &self.tracks.len())
            .field("transmits", &self.transmits.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn check_id(what: &str, id: &str) -> Result<(), SfuError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(SfuError::BadId(format!(
            "{what} id must be 1 to {MAX_ID_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// Orders simulcast rids low to high: `l`, `m`, `h` by name (the web client's rids; also
/// `q`/`f` as used by some clients), others in the order the SDP declares them.
fn order_rids(rids: &[Rid]) -> Vec<(Rid, Layer)> {
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

impl Sfu {
    /// A new SFU. Candidate addresses that cannot be advertised (unspecified, multicast)
    /// are skipped with a warning; [`join`](Self::join) fails while none is usable.
    pub fn new(config: SfuConfig, now: Instant) -> Sfu {
        let mut candidates = Vec::new();
        for addr in &config.udp_candidates {
            match Candidate::host(*addr, "udp") {
                Ok(c) => candidates.push(c),
                Err(e) => warn!(%addr, error = %e, "SFU: unusable UDP candidate skipped"),
            }
        }
        for addr in &config.tcp_candidates {
            match Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
            {
                Ok(c) => candidates.push(c),
                Err(e) => warn!(%addr, error = %e, "SFU: unusable TCP candidate skipped"),
            }
        }
        Sfu {
            config,
            candidates,
            peers: Map::default(),
            ids: Map::default(),
            rooms: Map::default(),
            tracks: Map::default(),
            demux: Demux::default(),
            timers: BTreeSet::new(),
            next_key: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            work: VecDeque::new(),
            counters: SfuStats::default(),
            next_tick: now + TICK,
            last_now: now,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    fn advance(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    fn key(&self, peer: &str) -> Result<u64, SfuError> {
        self.ids.get(peer).copied().ok_or(SfuError::UnknownPeer)
    }

    fn rtc_config(&self) -> RtcConfig {
        Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_vp9(true)
            .enable_h264(true)
            .enable_bwe(Some(Bitrate::bps(self.config.initial_bitrate)))
            .set_stats_interval(Some(self.config.stats_interval))
            .set_send_buffer_video(SEND_BUFFER_VIDEO)
            .set_send_buffer_audio(SEND_BUFFER_AUDIO)
    }

    fn build_rtc(&mut self, peer: &str, now: Instant) -> Result<(Rtc, IceCreds), SfuError> {
        let creds = IceCreds::new();
        let config = self.rtc_config().set_local_ice_credentials(creds.clone());
        let candidates = self.candidates.clone();
        let built = catch_unwind(AssertUnwindSafe(move || {
            let mut rtc = config.build(now);
            for c in candidates {
                rtc.add_local_candidate(c);
            }
            rtc
        }));
        match built {
            Ok(rtc) => Ok((rtc, creds)),
            Err(p) => {
                self.counters.faults += 1;
                let reason = format!("str0m panicked creating the peer: {}", panic_message(&*p));
                warn!(%peer, %reason, "SFU fault");
                Err(SfuError::Fault(reason))
            }
        }
    }

    /// Add a peer (id chosen by the caller: a signaling peer id, or `whip-…`/`whep-…`).
    /// Fails if the id exists or a room/peer limit is reached. The peer then sends its
    /// offer ([`accept_offer`](Self::accept_offer)); the SFU offers only after that first
    /// exchange.
    pub fn join(
        &mut self,
        room: &str,
        peer: &str,
        role: Role,
        now: Instant,
    ) -> Result<(), SfuError> {
        self.advance(now);
        check_id("peer", peer)?;
        check_id("room", room)?;
        if self.ids.contains_key(peer) {
            return Err(SfuError::Exists);
        }
        if self.peers.len() >= self.config.max_peers {
            return Err(SfuError::Full(format!(
                "the SFU already has {} peers (max_peers)",
                self.config.max_peers
            )));
        }
        match self.rooms.get(room) {
            Some(r) if r.peers.len() >= self.config.max_peers_per_room => {
                return Err(SfuError::Full(format!(
                    "room {room} already has {} peers (max_peers_per_room)",
                    self.config.max_peers_per_room
                )));
            }
            None if self.rooms.len() >= self.config.max_rooms => {
                return Err(SfuError::Full(format!(
                    "the SFU already has {} rooms (max_rooms)",
                    self.config.max_rooms
                )));
            }
            _ => {}
        }
        if self.candidates.is_empty() {
            return Err(SfuError::Config(
                "no usable host candidate: set udp_candidates or tcp_candidates to addresses \
                 browsers can reach (not 0.0.0.0)"
                    .into(),
            ));
        }
        let (rtc, creds) = self.build_rtc(peer, now)?;
        let key = self.next_key;
        self.next_key += 1;
        let r = self.rooms.entry(room.to_string()).or_default();
        let mut outs = Vec::new();
        if matches!(role, Role::Participant { .. }) {
            for tid in &r.tracks {
                if let Some(t) = self.tracks.get(tid) {
                    outs.push(new_out(*tid, t));
                }
            }
        }
        r.peers.push(key);
        self.demux.insert_ufrag(&creds.ufrag, key);
        let p = new_peer(peer, room, role, rtc, creds, outs, now, &self.config);
        self.peers.insert(key, p);
        self.ids.insert(peer.to_string(), key);
        debug!(%peer, %room, ?role, "SFU peer joined");
        self.drain(key);
        self.update_layers(key, now);
        self.run_work(now);
        Ok(())
    }

    /// Remove a peer now (no-op if unknown). Its tracks disappear from every subscriber
    /// (renegotiation offers follow). No [`SfuEvent::Closed`] is produced for it.
    pub fn leave(&mut self, peer: &str, now: Instant) {
        self.advance(now);
        if let Some(key) = self.ids.get(peer).copied() {
            self.remove_peer(key);
            self.run_work(now);
        }
    }

    /// Whether the peer is in the SFU.
    pub fn contains(&self, peer: &str) -> bool {
        self.ids.contains_key(peer)
    }

    /// The last [`SfuEvent::Offer`] for `peer` never left this process (the runtime's
    /// queue to signaling was full): it is forgotten and made again after a short wait.
    /// Only for an offer nobody can have seen; an offer that was sent stays outstanding
    /// until it is answered (see [`SLOW_ANSWER`]).
    pub fn offer_undelivered(&mut self, peer: &str, now: Instant) {
        self.advance(now);
        let Ok(key) = self.key(peer) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&key) {
            if p.pending.take().is_some() {
                revert_outs(p);
                p.negotiation.undelivered += 1;
                p.offer_not_before = Some(now + OFFER_RETRY_BACKOFF);
                info!(%peer, room = %p.room, "SFU offer could not be sent; offering again shortly");
            }
        }
    }

    /// The peer's room went back to mesh: the SFU keeps forwarding to and from it until
    /// it is removed ([`leave`](Self::leave)), but makes no more offers to it, since its
    /// client is moving its media to the mesh and closes this connection.
    pub fn linger(&mut self, peer: &str) {
        let Ok(key) = self.key(peer) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&key) {
            p.lingering = true;
        }
    }

    /// The peer's SDP offer; returns the SDP answer. On glare (the SFU has an offer
    /// outstanding to this peer) the SFU is polite: it drops its offer, answers, and offers
    /// again ([`SfuEvent::Offer`], to be delivered after the answer).
    pub fn accept_offer(
        &mut self,
        peer: &str,
        sdp: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        self.advance(now);
        let key = self.key(peer)?;
        if sdp.len() > MAX_SDP_LEN {
            return Err(SfuError::BadSdp(format!(
                "offer larger than {MAX_SDP_LEN} bytes"
            )));
        }
        let role = self
            .peers
            .get(&key)
            .map(|p| p.role)
            .ok_or(SfuError::UnknownPeer)?;
        let text = if role.can_publish() {
            sdp.to_string()
        } else {
            sdp::receive_only(sdp)
        };
        let offer =
            SdpOffer::from_sdp_string(&text).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let fingerprint = sdp_fingerprint(sdp);
        let known = self.peers.get(&key).and_then(|p| p.fingerprint.clone());
        if let (Some(old), Some(new)) = (&known, &fingerprint) {
            if old != new {
                // Another DTLS certificate: a new PeerConnection from the same peer (e.g.
                // the browser switched to relay-only), not a renegotiation.
                self.replace_rtc(key, now)?;
            }
        }
        if let Some(p) = self.peers.get_mut(&key) {
            p.negotiation.peer_offers += 1;
            if p.pending.take().is_some() {
                debug!(%peer, "SFU glare: dropping our offer to answer the peer's");
                revert_outs(p);
            }
        }
        let res = self.guard(key, "accepting an offer", |p| {
            p.rtc.sdp_api().accept_offer(offer)
        });
        let answer = match res {
            None => return Err(self.fault_error(peer)),
            Some(Err(e)) => {
                self.drain(key);
                let alive = self.peers.get(&key).is_some_and(|p| p.rtc.is_alive());
                if !alive {
                    self.close(key, format!("offer refused: {e}"));
                }
                self.run_work(now);
                return Err(SfuError::BadSdp(e.to_string()));
            }
            Some(Ok(a)) => a,
        };
        if let Some(p) = self.peers.get_mut(&key) {
            p.negotiated = true;
            if fingerprint.is_some() {
                p.fingerprint = fingerprint;
            }
        }
        let msids = self
            .peers
            .get(&key)
            .map(|p| p.msids.clone())
            .unwrap_or_default();
        let answer = sdp::rewrite_msids(&answer.to_sdp_string(), &msids);
        self.update_credentials(key, &answer);
        self.drain(key);
        self.register_negotiated(key, &answer, now);
        self.run_work(now);
        self.maybe_negotiate(key, now);
        self.run_work(now);
        Ok(answer)
    }

    /// The peer's offer comes from a new PeerConnection: the peer gets a new `Rtc` under
    /// its key (same id, room, role, view). The old one stays as a *retired leg* under a
    /// new key: it keeps forwarding both ways, so nothing stops while the new connection
    /// comes up, and goes when its ICE consent ends, it closes, or after [`RETIRE_AFTER`].
    /// Its published tracks are taken over by the new connection's m-lines of the same
    /// kind at their first media ([`Sfu::take_over`]): subscribers keep their m-lines and
    /// switch at the new connection's keyframe. The new connection is offered every
    /// track of the room as after a join.
    fn replace_rtc(&mut self, key: u64, now: Instant) -> Result<(), SfuError> {
        let Some(id) = self.peers.get(&key).map(|p| p.id.clone()) else {
            return Err(SfuError::UnknownPeer);
        };
        if let Some(prev) = self.peers.get(&key).and_then(|p| p.retired) {
            // A second replacement before the first retired leg went.
            self.remove_peer(prev);
        }
        let (rtc, creds) = self.build_rtc(&id, now)?;
        let Some(mut old) = self.peers.remove(&key) else {
            return Err(SfuError::UnknownPeer);
        };
        let leg = self.next_key;
        self.next_key += 1;
        debug!(peer = %id, "SFU: offer from a new PeerConnection; the old one retires");
        // The old connection keeps its ICE credentials, 5-tuples, timer and queued work.
        self.demux.rekey(&old.ufrag, key, leg);
        self.demux.insert_ufrag(&creds.ufrag, key);
        if let Some(t) = old.timer {
            self.timers.remove(&(t, key));
            self.timers.insert((t, leg));
        }
        for (k, _) in self.work.iter_mut() {
            if *k == key {
                *k = leg;
            }
        }
        for tid in &old.published {
            if let Some(t) = self.tracks.get_mut(tid) {
                t.owner = leg;
            }
        }
        let mut outs = Vec::new();
        if matches!(old.role, Role::Participant { .. }) {
            if let Some(r) = self.rooms.get(&old.room) {
                for tid in &r.tracks {
                    if let Some(t) = self.tracks.get(tid).filter(|t| t.owner != leg) {
                        outs.push(new_out(*tid, t));
                    }
                }
            }
        }
        let mut p = new_peer(
            &id,
            &old.room,
            old.role,
            rtc,
            creds,
            outs,
            now,
            &self.config,
        );
        p.view = old.view.clone();
        p.bwe = old.bwe;
        p.retired = Some(leg);
        p.inherit = old.published.clone();
        if let Some(pending) = old.pending.take() {
            drop(pending);
            revert_outs(&mut old);
        }
        old.retired_of = Some(key);
        old.retire_at = Some(now + RETIRE_AFTER);
        old.retired = None;
        old.claims.clear();
        old.inherit.clear();
        if let Some(r) = self.rooms.get_mut(&old.room) {
            r.peers.push(leg);
        }
        self.peers.insert(leg, old);
        self.peers.insert(key, p);
        self.drain(key);
        Ok(())
    }

    /// The first media on a new PeerConnection's m-line that claimed an inherited track:
    /// the track now comes from here. Subscribers wait for a keyframe of it and re-base
    /// the RTP time (the new connection's time base differs).
    fn take_over(&mut self, owner: u64, claim: usize, now: Instant) -> Option<u64> {
        let p = self.peers.get_mut(&owner)?;
        let (mid, tid, rids) = p.claims.remove(claim);
        p.inherit.retain(|t| *t != tid);
        let leg = p.retired;
        if !self.tracks.contains_key(&tid) {
            // The old track went meanwhile: this m-line publishes a track of its own.
            let kind = p.rtc.media(mid).map(|m| m.kind())?;
            self.add_track(owner, mid, kind, &rids, now);
            let p = self.peers.get(&owner)?;
            return p
                .published
                .iter()
                .copied()
                .find(|t| self.tracks.get(t).is_some_and(|t| t.mid == mid));
        }
        let track = self.tracks.get_mut(&tid)?;
        let from = track.owner;
        track.owner = owner;
        track.mid = mid;
        track.layers = build_layers(track.kind, &rids);
        let kind = track.kind;
        let room = track_room(&self.peers, owner)?;
        if let Some(p) = self.peers.get_mut(&from) {
            p.published.retain(|t| *t != tid);
        }
        if let Some(p) = self.peers.get_mut(&owner) {
            p.published.push(tid);
        }
        debug!(%mid, ?kind, ?leg, "SFU: a new PeerConnection took a track over");
        let subs: Vec<u64> = self
            .rooms
            .get(&room)
            .map(|r| r.peers.clone())
            .unwrap_or_default();
        for sub in subs {
            let Some(sp) = self.peers.get_mut(&sub) else {
                continue;
            };
            for o in sp.outs.iter_mut().filter(|o| o.track == tid) {
                o.sel.rebase_pending = true;
                if kind == MediaKind::Video {
                    o.sel.current = None;
                    o.sel.kf_wait = None;
                }
            }
            self.update_layers(sub, now);
        }
        Some(tid)
    }

    /// An ICE restart in the peer's offer gives us new local credentials: keep the demux
    /// table on the ufrag the answer advertises.
    fn update_credentials(&mut self, key: u64, answer: &str) {
        let attr = |name: &str| {
            answer
                .lines()
                .find_map(|l| l.trim_end().strip_prefix(name))
                .map(str::to_string)
        };
        let (Some(ufrag), Some(pass)) = (attr("a=ice-ufrag:"), attr("a=ice-pwd:")) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.ufrag != ufrag {
            debug!(peer = %p.id, "SFU: new local ICE credentials (ICE restart)");
            let old = std::mem::replace(&mut p.ufrag, ufrag.clone());
            p.pass = pass;
            self.demux.replace_ufrag(&old, &ufrag, key);
        }
    }

    /// str0m announces negotiated media (`MediaAdded`) only once the peer is connected;
    /// the SFU registers it as soon as the answer exists, so that a WHIP publisher counts
    /// as publishing and a WHEP viewer is bound when their HTTP requests return. The later
    /// `MediaAdded` events find the tracks already there.
    fn register_negotiated(&mut self, key: u64, answer: &str, now: Instant) {
        let mids: Vec<Mid> = answer
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
            .map(Mid::from)
            .take(MAX_TRACKS_PER_PEER * 4)
            .collect();
        for mid in mids {
            let info = self.peers.get(&key).and_then(|p| {
                let m = p.rtc.media(mid)?;
                let rids = match m.rids_rx() {
                    str0m::media::Rids::Specific(v) => v.clone(),
                    _ => Vec::new(),
                };
                Some((m.kind(), m.direction(), rids))
            });
            if let Some((kind, direction, rids)) = info {
                self.on_media_added(key, mid, kind, direction, &rids, now);
            }
        }
    }

    /// The peer's answer to the last [`SfuEvent::Offer`]. An answer with nothing pending is
    /// [`SfuError::NoPendingOffer`] (the caller may ignore it).
    pub fn accept_answer(&mut self, peer: &str, sdp: &str, now: Instant) -> Result<(), SfuError> {
        self.advance(now);
        let key = self.key(peer)?;
        if sdp.len() > MAX_SDP_LEN {
            return Err(SfuError::BadSdp(format!(
                "answer larger than {MAX_SDP_LEN} bytes"
            )));
        }
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let (pending, offered) = match self.peers.get_mut(&key).and_then(|p| p.pending.take()) {
            Some(pending) => pending,
            None => return Err(SfuError::NoPendingOffer),
        };
        let res = self.guard(key, "accepting an answer", |p| {
            p.rtc.sdp_api().accept_answer(pending, answer)
        });
        match res {
            None => return Err(self.fault_error(peer)),
            Some(Err(e)) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    revert_outs(p);
                    p.offer_not_before = Some(now + OFFER_RETRY_BACKOFF);
                    p.negotiation.refused += 1;
                    info!(peer = %p.id, room = %p.room, error = %e, "SFU refused the answer to its offer");
                }
                self.drain(key);
                self.run_work(now);
                return Err(SfuError::BadSdp(e.to_string()));
            }
            Some(Ok(())) => {}
        }
        if let Some(p) = self.peers.get_mut(&key) {
            if let Some(f) = sdp_fingerprint(sdp) {
                p.fingerprint = Some(f);
            }
            p.negotiation.answers += 1;
            let waited = now.saturating_duration_since(offered);
            if p.slow_noted {
                info!(peer = %p.id, room = %p.room, waited_ms = waited.as_millis() as u64, "SFU offer answered late");
            }
            settle_outs(p, now);
        }
        self.drain(key);
        self.update_layers(key, now);
        self.run_work(now);
        self.maybe_negotiate(key, now);
        self.run_work(now);
        Ok(())
    }

    /// A trickled remote candidate: the `candidate` string of an RTCIceCandidate
    /// (`candidate:...`, with or without `a=`). Empty = end of candidates.
    pub fn add_remote_candidate(&mut self, peer: &str, candidate: &str) -> Result<(), SfuError> {
        let key = self.key(peer)?;
        if candidate.len() > MAX_CANDIDATE_LEN {
            return Err(SfuError::BadCandidate(format!(
                "longer than {MAX_CANDIDATE_LEN} bytes"
            )));
        }
        let Some(c) = sdp::normalize_candidate(candidate) else {
            return Ok(());
        };
        let c = Candidate::from_sdp_string(c).map_err(|e| SfuError::BadCandidate(e.to_string()))?;
        if self
            .guard(key, "adding a remote candidate", |p| {
                p.rtc.add_remote_candidate(c)
            })
            .is_none()
        {
            return Err(self.fault_error(peer));
        }
        self.drain(key);
        let now = self.last_now;
        self.run_work(now);
        Ok(())
    }

    /// The tiles this subscriber shows. Publishers not listed (or with a zero size) are
    /// paused for it. Before the first call every video track is sent at `m`.
    pub fn set_view(&mut self, peer: &str, tiles: &[Tile], now: Instant) {
        self.advance(now);
        let Ok(key) = self.key(peer) else {
            return;
        };
        let limit = self.config.max_peers_per_room.max(1) * MAX_TRACKS_PER_PEER;
        if let Some(p) = self.peers.get_mut(&key) {
            p.view = Some(tiles.iter().take(limit).cloned().collect());
        }
        self.update_layers(key, now);
        self.run_work(now);
    }

    fn room_publisher_key(&self, room: &str) -> Option<u64> {
        let r = self.rooms.get(room)?;
        let publishes = |k: &u64| {
            self.peers
                .get(k)
                .is_some_and(|p| !p.published.is_empty() && p.retired_of.is_none())
        };
        let role = |k: &u64| self.peers.get(k).map(|p| p.role);
        r.peers
            .iter()
            .find(|k| role(k) == Some(Role::WhipPublisher) && publishes(k))
            .or_else(|| r.peers.iter().find(|k| publishes(k)))
            .copied()
    }

    /// WHEP: which publisher a WhepViewer plays: the room's WHIP publisher, else its first
    /// publisher with media tracks; `None` when nobody publishes.
    pub fn room_publisher(&self, room: &str) -> Option<String> {
        let k = self.room_publisher_key(room)?;
        self.peers.get(&k).map(|p| p.id.clone())
    }

    /// Whether anybody in the room publishes a track.
    pub fn room_has_publisher(&self, room: &str) -> bool {
        self.room_publisher_key(room).is_some()
    }

    /// One received datagram (or one RFC 4571 frame for TCP). Returns false when no peer
    /// accepted it (counted in [`SfuStats::demux_misses`]).
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        self.advance(now);
        let tuple = Tuple {
            proto,
            remote: source,
            local: destination,
        };
        let mut learn = false;
        let key = match demux::stun_request(data) {
            Some(req) => self.demux.by_ufrag(req.local_ufrag).filter(|k| {
                let ok = self
                    .peers
                    .get(k)
                    .is_some_and(|p| demux::authenticated(&req, &p.pass));
                learn = ok;
                ok
            }),
            None => self.demux.by_tuple(&tuple),
        };
        let Some(key) = key else {
            self.counters.demux_misses += 1;
            return false;
        };
        let Ok(contents) = DatagramRecv::try_from(data) else {
            self.counters.demux_misses += 1;
            return false;
        };
        let net_proto = match proto {
            Protocol::Udp => str0m::net::Protocol::Udp,
            Protocol::Tcp => str0m::net::Protocol::Tcp,
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: net_proto,
                source,
                destination,
                contents,
            },
        );
        self.counters.packets_in += 1;
        self.counters.bytes_in += data.len() as u64;
        match self.guard(key, "handling a datagram", |p| p.rtc.handle_input(input)) {
            None => {}
            Some(Err(e)) => self.fault(key, format!("handling a datagram: {e}")),
            Some(Ok(())) => {
                if learn {
                    self.demux.learn(tuple, key);
                    if let Some(p) = self.peers.get_mut(&key) {
                        p.last_stun = now;
                    }
                }
                self.drain(key);
            }
        }
        self.run_work(now);
        true
    }

    /// Advance time: every peer whose timer is due, the stats, layer and speaker tick.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let due: Vec<u64> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, k)| *k)
            .collect();
        for key in due {
            match self.guard(key, "handling a timeout", |p| {
                p.rtc.handle_input(Input::Timeout(now))
            }) {
                None => {}
                Some(Err(e)) => self.fault(key, format!("handling a timeout: {e}")),
                Some(Ok(())) => self.drain(key),
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.tick(now);
        }
        self.run_work(now);
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event to deliver or log.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let peer = self.timers.first().map(|(t, _)| *t);
        let tick = (!self.peers.is_empty()).then_some(self.next_tick);
        match (peer, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The state of every subscription in `room` (publisher → subscriber, per kind) and
    /// of every peer's negotiation, as JSON (the format is in docs/sfu.md, "Subscription
    /// state"). `None` when the SFU has no such room.
    pub fn room_state(&self, room: &str, now: Instant) -> Option<serde_json::Value> {
        use serde_json::json;
        let r = self.rooms.get(room)?;
        let ms =
            |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_millis() as u64);
        let mut peers = Vec::new();
        for key in &r.peers {
            let Some(p) = self.peers.get(key) else {
                continue;
            };
            let consent_lost = p.consent_lost(now);
            let mut subs = Vec::new();
            for o in &p.outs {
                let t = self.tracks.get(&o.track);
                let (state, mid) = match o.state {
                    OutState::ToOpen => ("waiting-for-offer", None),
                    OutState::Negotiating(m) => ("offered", Some(m)),
                    OutState::Open(m) => ("negotiated", Some(m)),
                    OutState::ToStop(m) | OutState::NegotiatingStop(m) => ("stopping", Some(m)),
                };
                let label = |i: Option<usize>| match (t, i) {
                    (_, None) => Layer::Paused,
                    (Some(t), Some(_)) if !t.simulcast() => Layer::Single,
                    (Some(t), Some(i)) => t.layers.get(i).map_or(Layer::Paused, |l| l.label),
                    (None, Some(_)) => Layer::Paused,
                };
                let in_view = match &p.view {
                    None => true,
                    Some(tiles) => tiles
                        .iter()
                        .any(|tile| tile.peer == o.publisher && tile.width > 0 && tile.height > 0),
                };
                let paused = if o.gone {
                    Some("publisher-left")
                } else if !p.connected {
                    Some("not-connected")
                } else if consent_lost {
                    Some("consent-lost")
                } else if o.sel.target.is_none() && o.kind == MediaKind::Video {
                    Some(if in_view { "bandwidth" } else { "not-in-view" })
                } else if o.kind == MediaKind::Video
                    && o.sel.current != o.sel.target
                    && o.sel.current.is_none()
                {
                    Some("waiting-for-keyframe")
                } else {
                    None
                };
                let sending = target_sending(t, &o.sel, now);
                subs.push(json!({
                    "publisher": o.publisher,
                    "kind": if o.kind == MediaKind::Audio { "audio" } else { "video" },
                    "state": state,
                    "negotiated": matches!(o.state, OutState::Open(_)),
                    "mid": mid.map(|m| m.to_string()),
                    "layer": label(o.sel.current).as_str(),
                    "target": if o.kind == MediaKind::Audio { "single" } else { o.sel.target_layer.as_str() },
                    "paused": paused,
                    "publisherSending": sending,
                    "packets": o.watch.packets,
                    "keyframes": o.watch.keyframes,
                    "lastMediaMsAgo": ms(o.watch.last_media),
                    "negotiatedMsAgo": ms(o.watch.opened),
                    "keyframeRequests": o.watch.keyframe_requests,
                    "refused": o.watch.refused,
                    "starved": o.watch.starved_since.is_some(),
                    "starvedMs": ms(o.watch.starved_since),
                    "starvedEpisodes": o.watch.starved,
                }));
            }
            let n = p.negotiation;
            peers.push(json!({
                "peer": p.id,
                "role": match p.role {
                    Role::Participant { .. } => "participant",
                    Role::WhipPublisher => "whip",
                    Role::WhepViewer => "whep",
                },
                "connection": if p.retired_of.is_some() { "retiring" } else { "live" },
                "connected": p.connected,
                "consentLost": consent_lost,
                "lingering": p.lingering,
                "freeMlines": p.free.len(),
                "bitrate": p.bwe,
                "rttMs": p.rtt_ms,
                "negotiation": {
                    "offers": n.offers,
                    "answers": n.answers,
                    "refusedAnswers": n.refused,
                    "slowAnswers": n.slow,
                    "undeliveredOffers": n.undelivered,
                    "peerOffers": n.peer_offers,
                    "pendingOfferMs": ms(p.pending.as_ref().map(|(_, t)| *t)),
                },
                "publishes": p.published.iter().filter_map(|t| self.tracks.get(t)).map(|t| json!({
                    "kind": if t.kind == MediaKind::Audio { "audio" } else { "video" },
                    "mid": t.mid.to_string(),
                    "layers": t.layers.iter().map(|l| json!({
                        "layer": l.label.as_str(),
                        "active": l.active(now),
                        "bitrate": l.meter.rate(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "subscriptions": subs,
            }));
        }
        Some(json!({ "room": room, "peers": peers }))
    }

    /// Counters since start and current gauges.
    pub fn stats(&self) -> SfuStats {
        let mut s = self.counters.clone();
        s.rooms = self.rooms.len() as u64;
        s.peers = self.peers.len() as u64;
        s.publishers = self
            .peers
            .values()
            .filter(|p| !p.published.is_empty())
            .count() as u64;
        s.subscriptions = self
            .peers
            .values()
            .flat_map(|p| &p.outs)
            .filter(|o| matches!(o.state, OutState::Open(_)) && !o.gone)
            .count() as u64;
        s
    }

    /// Test hook: the peer's next poll panics inside the fault guard, as a str0m bug would.
    #[doc(hidden)]
    pub fn inject_fault(&mut self, peer: &str) {
        if let Some(key) = self.ids.get(peer).copied() {
            if let Some(p) = self.peers.get_mut(&key) {
                p.inject_fault = true;
            }
            let now = self.last_now;
            self.set_timer(key, now);
        }
    }

    // ----- internals -----

    fn fault_error(&self, peer: &str) -> SfuError {
        SfuError::Fault(format!("peer {peer} was dropped; see the Closed event"))
    }

    /// Runs `f` on the peer inside `catch_unwind`. A panic drops the peer (fault) and
    /// returns `None`; errors inside `R` are the caller's to judge.
    fn guard<R>(&mut self, key: u64, what: &str, f: impl FnOnce(&mut Peer) -> R) -> Option<R> {
        let peer = self.peers.get_mut(&key)?;
        match catch_unwind(AssertUnwindSafe(|| f(peer))) {
            Ok(r) => Some(r),
            Err(p) => {
                let reason = format!("str0m panicked while {what}: {}", panic_message(&*p));
                self.fault(key, reason);
                None
            }
        }
    }

    fn fault(&mut self, key: u64, reason: String) {
        if let Some(p) = self.peers.get(&key) {
            self.counters.faults += 1;
            warn!(peer = %p.id, room = %p.room, %reason, "SFU peer dropped after a fault");
        }
        self.close(key, reason);
    }

    fn close(&mut self, key: u64, reason: String) {
        if let Some(peer) = self.remove_peer(key) {
            self.push_event(SfuEvent::Closed { peer, reason });
        }
    }

    fn push_event(&mut self, e: SfuEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.counters.queue_drops += 1;
            return;
        }
        self.events.push_back(e);
    }

    fn set_timer(&mut self, key: u64, at: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if let Some(old) = p.timer.replace(at) {
            self.timers.remove(&(old, key));
        }
        self.timers.insert((at, key));
    }

    /// Polls the peer's `Rtc` until it returns a timeout (str0m's single-mutation
    /// invariant): transmits go to the output queue, events to the work queue.
    ///
    /// str0m's pacer releases one paced packet per timeout and then asks for a timeout
    /// that is already due: such a timeout is handled here at once, up to
    /// [`DUE_TIMEOUTS_PER_DRAIN`] times, rather than on the next turn of the runtime's
    /// loop (one packet per subscriber per turn capped a subscriber near 1,000 packets/s
    /// and built a backlog in 16-person rooms: docs/benchmarks.md, churn).
    fn drain(&mut self, key: u64) {
        let now = self.last_now;
        let Sfu {
            peers,
            transmits,
            work,
            counters,
            ..
        } = self;
        let Some(peer) = peers.get_mut(&key) else {
            return;
        };
        let res = catch_unwind(AssertUnwindSafe(|| -> Result<Instant, str0m::RtcError> {
            if peer.inject_fault {
                peer.inject_fault = false;
                panic!("fault injected by Sfu::inject_fault");
            }
            let mut due = 0;
            loop {
                match peer.rtc.poll_output()? {
                    Output::Timeout(t) if t <= now && due < DUE_TIMEOUTS_PER_DRAIN => {
                        due += 1;
                        peer.rtc.handle_input(Input::Timeout(now))?;
                    }
                    Output::Timeout(t) => return Ok(t),
                    Output::Transmit(t) => {
                        if transmits.len() >= MAX_TRANSMITS {
                            counters.queue_drops += 1;
                            continue;
                        }
                        let proto = match t.proto {
                            str0m::net::Protocol::Udp => Protocol::Udp,
                            _ => Protocol::Tcp,
                        };
                        counters.packets_out += 1;
                        counters.bytes_out += t.contents.len() as u64;
                        transmits.push_back(Transmit {
                            proto,
                            source: t.source,
                            destination: t.destination,
                            contents: t.contents.to_vec(),
                        });
                    }
                    Output::Event(e) => {
                        let droppable = matches!(e, Event::MediaData(_) | Event::ChannelData(_));
                        if droppable && work.len() >= MAX_WORK {
                            counters.queue_drops += 1;
                            continue;
                        }
                        work.push_back((key, e));
                    }
                }
            }
        }));
        match res {
            Ok(Ok(t)) => self.set_timer(key, t),
            Ok(Err(e)) => self.fault(key, format!("str0m error: {e}")),
            Err(p) => self.fault(key, format!("str0m panicked: {}", panic_message(&*p))),
        }
    }

    fn run_work(&mut self, now: Instant) {
        while let Some((key, e)) = self.work.pop_front() {
            if !self.peers.contains_key(&key) {
                continue;
            }
            self.handle_event(key, e, now);
        }
    }

    fn handle_event(&mut self, key: u64, e: Event, now: Instant) {
        match e {
            Event::Connected => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if !p.connected {
                        p.connected = true;
                        let peer = p.id.clone();
                        if p.retired_of.is_none() {
                            self.push_event(SfuEvent::Connected { peer });
                        }
                        // Subscriptions start now: ask for keyframes.
                        self.update_layers(key, now);
                    }
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.close(
                    key,
                    "ICE disconnected: no consent checks from the peer".into(),
                );
            }
            Event::Closed => self.close(key, "the peer closed the connection".into()),
            Event::MediaAdded(m) => {
                let rids: Vec<Rid> = m
                    .simulcast
                    .map(|s| s.recv.iter().map(|l| l.rid).collect())
                    .unwrap_or_default();
                self.on_media_added(key, m.mid, m.kind, m.direction, &rids, now);
            }
            Event::MediaChanged(m) => self.on_media_changed(key, m.mid, m.direction, now),
            Event::MediaData(d) => self.on_media(key, d, now),
            Event::KeyframeRequest(r) => self.on_keyframe_request(key, r, now),
            Event::ChannelOpen(id, label) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.channels.len() < MAX_CHANNELS_PER_PEER {
                        p.channels.push((id, label));
                    }
                }
            }
            Event::ChannelClose(id) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.channels.retain(|(c, _)| *c != id);
                }
            }
            Event::ChannelData(d) => self.on_channel_data(key, d),
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
            | Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.bwe = Some(estimate.as_u64());
                }
            }
            Event::PeerStats(s) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if let Some(rtt) = s.rtt {
                        p.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    }
                }
            }
            Event::MediaEgressStats(s) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    if let Some(rtt) = s.rtt {
                        p.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    }
                    let entry = p
                        .nacks
                        .iter_mut()
                        .find(|(m, r, _)| *m == s.mid && *r == s.rid);
                    let before = match entry {
                        Some(e) => std::mem::replace(&mut e.2, s.nacks),
                        None => {
                            if p.nacks.len() < MAX_TRACKS_PER_PEER * 64 {
                                p.nacks.push((s.mid, s.rid, s.nacks));
                            }
                            0
                        }
                    };
                    self.counters.nacks_received += s.nacks.saturating_sub(before);
                }
            }
            _ => {}
        }
    }

    fn on_media_added(
        &mut self,
        key: u64,
        mid: Mid,
        kind: MediaKind,
        direction: Direction,
        rids: &[Rid],
        now: Instant,
    ) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        match p.role {
            Role::WhepViewer => {
                let known = p.unbound.iter().any(|(m, _)| *m == mid)
                    || p.outs.iter().any(|o| o.state == OutState::Open(mid));
                if direction.is_sending() && !known && p.unbound.len() < MAX_TRACKS_PER_PEER {
                    p.unbound.push((mid, kind));
                    self.bind_whep(key, now);
                }
            }
            role => {
                let receiving = matches!(direction, Direction::RecvOnly | Direction::SendRecv);
                if receiving && role.can_publish() {
                    self.add_track(key, mid, kind, rids, now);
                }
            }
        }
    }

    fn on_media_changed(&mut self, key: u64, mid: Mid, direction: Direction, now: Instant) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let existing = p
            .published
            .iter()
            .copied()
            .find(|t| self.tracks.get(t).is_some_and(|t| t.mid == mid));
        let receiving = matches!(direction, Direction::RecvOnly | Direction::SendRecv);
        match existing {
            Some(t) if !receiving => self.remove_track(t, now),
            None if receiving && p.role.can_publish() => {
                let info = p.rtc.media(mid).map(|m| m.kind());
                if let Some(kind) = info {
                    self.add_track(key, mid, kind, &[], now);
                }
            }
            _ => {}
        }
    }

    fn add_track(&mut self, owner: u64, mid: Mid, kind: MediaKind, rids: &[Rid], now: Instant) {
        let Some(p) = self.peers.get(&owner) else {
            return;
        };
        if p.published.len() >= MAX_TRACKS_PER_PEER
            || p.published
                .iter()
                .any(|t| self.tracks.get(t).is_some_and(|t| t.mid == mid))
            || p.claims.iter().any(|(m, _, _)| *m == mid)
        {
            return;
        }
        // A new PeerConnection's m-line continues a track of the old one of the same kind.
        let inherited = p.inherit.iter().copied().find(|t| {
            self.tracks.get(t).is_some_and(|t| t.kind == kind)
                && !p.claims.iter().any(|(_, c, _)| c == t)
        });
        if let Some(tid) = inherited {
            if let Some(p) = self.peers.get_mut(&owner) {
                p.claims.push((mid, tid, rids.to_vec()));
            }
            return;
        }
        let layers = build_layers(kind, rids);
        let tid = self.next_key;
        self.next_key += 1;
        let track = TrackIn {
            owner,
            owner_id: p.id.clone(),
            mid,
            kind,
            layers,
        };
        debug!(peer = %p.id, %mid, ?kind, simulcast = track.simulcast(), "SFU track added");
        let room = p.room.clone();
        let out = new_out(tid, &track);
        self.tracks.insert(tid, track);
        if let Some(p) = self.peers.get_mut(&owner) {
            p.published.push(tid);
        }
        let subscribers: Vec<u64> = match self.rooms.get_mut(&room) {
            Some(r) => {
                r.tracks.push(tid);
                r.peers.iter().copied().filter(|k| *k != owner).collect()
            }
            None => Vec::new(),
        };
        for sub in subscribers {
            // A retired PeerConnection is not renegotiated: it gets no new tracks.
            let role = self
                .peers
                .get(&sub)
                .filter(|p| p.retired_of.is_none())
                .map(|p| p.role);
            match role {
                Some(Role::Participant { .. }) => {
                    if let Some(p) = self.peers.get_mut(&sub) {
                        p.outs.push(TrackOut {
                            sel: out.sel.clone(),
                            publisher: out.publisher.clone(),
                            watch: OutWatch::default(),
                            slot: None,
                            ..out
                        });
                    }
                    self.update_layers(sub, now);
                    self.maybe_negotiate(sub, now);
                }
                Some(Role::WhepViewer) => self.bind_whep(sub, now),
                _ => {}
            }
        }
    }

    fn remove_track(&mut self, tid: u64, now: Instant) {
        let Some(owner) = self.tracks.get(&tid).map(|t| t.owner) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&owner) else {
            return;
        };
        p.published.retain(|t| *t != tid);
        let room = p.room.clone();
        let subscribers: Vec<u64> = match self.rooms.get_mut(&room) {
            Some(r) => {
                r.tracks.retain(|t| *t != tid);
                r.peers.iter().copied().filter(|k| *k != owner).collect()
            }
            None => Vec::new(),
        };
        self.detach_tracks(&[tid], &subscribers, now);
    }

    /// Binds a WHEP viewer's unbound m-lines to the room publisher's tracks of the same kind.
    fn bind_whep(&mut self, viewer: u64, now: Instant) {
        let Some(room) = self.peers.get(&viewer).map(|p| p.room.clone()) else {
            return;
        };
        let Some(publisher) = self.room_publisher_key(&room) else {
            return;
        };
        let Some(tracks) = self.peers.get(&publisher).map(|p| p.published.clone()) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&viewer) else {
            return;
        };
        let mut bound = false;
        for tid in tracks {
            let Some(t) = self.tracks.get(&tid) else {
                continue;
            };
            if p.outs.iter().any(|o| o.track == tid) {
                continue;
            }
            if let Some(i) = p.unbound.iter().position(|(_, k)| *k == t.kind) {
                let (mid, _) = p.unbound.remove(i);
                let mut out = new_out(tid, t);
                out.state = OutState::Open(mid);
                p.outs.push(out);
                bound = true;
            }
        }
        if bound {
            self.update_layers(viewer, now);
        }
    }

    /// Creates the next SFU offer for a participant when its forwarded tracks changed and
    /// no offer is outstanding.
    fn maybe_negotiate(&mut self, key: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !matches!(p.role, Role::Participant { .. })
            || !p.negotiated
            || p.pending.is_some()
            || p.retired_of.is_some()
            || p.lingering
        {
            return;
        }
        if p.offer_not_before.is_some_and(|t| now < t) {
            return;
        }
        p.outs.retain(|o| !(o.gone && o.state == OutState::ToOpen));
        let needed = p.outs.iter().any(|o| {
            matches!(o.state, OutState::ToOpen | OutState::ToStop(_))
                || (o.gone && matches!(o.state, OutState::Open(_)))
        });
        if !needed {
            return;
        }
        let res = self.guard(key, "creating an offer", |p| {
            let mut api = p.rtc.sdp_api();
            for o in &mut p.outs {
                match o.state {
                    OutState::ToOpen => {
                        let label = format!("{}-{}", o.kind, o.track);
                        let mid = match p.free.iter().position(|s| s.kind == o.kind) {
                            Some(i) => {
                                // A free m-line of this kind: back to sendonly, with this
                                // publisher's msid; its RTP time continues.
                                let slot = p.free.remove(i);
                                api.set_direction(slot.mid, Direction::SendOnly);
                                o.sel.last_out = slot.last_out;
                                o.sel.rebase_pending = true;
                                let mid = slot.mid;
                                p.msids.retain(|(m, _, _)| *m != mid);
                                p.msids.push((mid, o.publisher.clone(), label));
                                o.slot = Some(slot);
                                mid
                            }
                            None => api.add_media(
                                o.kind,
                                Direction::SendOnly,
                                Some(o.publisher.clone()),
                                Some(label),
                                None,
                            ),
                        };
                        o.state = OutState::Negotiating(mid);
                    }
                    OutState::Open(m) | OutState::ToStop(m) if o.gone => {
                        api.set_direction(m, Direction::Inactive);
                        o.state = OutState::NegotiatingStop(m);
                    }
                    _ => {}
                }
            }
            let applied = api.apply();
            match applied {
                Some((offer, pending)) => {
                    p.pending = Some((pending, now));
                    p.slow_noted = false;
                    p.negotiation.offers += 1;
                    let sdp = sdp::rewrite_msids(&offer.to_sdp_string(), &p.msids);
                    Some((p.id.clone(), sdp))
                }
                None => {
                    // Nothing needed a negotiation after all.
                    settle_outs(p, now);
                    None
                }
            }
        });
        if let Some(Some((peer, sdp))) = res {
            debug!(%peer, "SFU renegotiates");
            self.push_event(SfuEvent::Offer { peer, sdp });
        }
        self.drain(key);
    }

    fn on_media(&mut self, owner: u64, d: MediaData, now: Instant) {
        let Some(p) = self.peers.get(&owner) else {
            return;
        };
        if !p.role.can_publish() {
            return;
        }
        let room = p.room.clone();
        let found = p
            .published
            .iter()
            .copied()
            .find(|t| self.tracks.get(t).is_some_and(|t| t.mid == d.mid));
        let tid = match found {
            Some(t) => t,
            None => match p.claims.iter().position(|(m, _, _)| *m == d.mid) {
                // First media of a new PeerConnection's m-line: it takes the track over.
                Some(i) => match self.take_over(owner, i, now) {
                    Some(t) => t,
                    None => return,
                },
                None => return,
            },
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
        let owner_id = track.owner_id.clone();
        let keyframe = d.is_keyframe();
        let gap = kind == MediaKind::Video && !d.contiguous && !keyframe;
        if gap {
            // A frame is missing: what follows cannot be decoded until a keyframe.
            self.request_keyframe(tid, li, now);
        }
        if kind == MediaKind::Audio {
            if let Some(level) = d.ext_vals.audio_level {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.speaker.observe(&owner_id, level, now);
                }
            }
        }
        let subscribers: Vec<u64> = self
            .rooms
            .get(&room)
            .map(|r| r.peers.iter().copied().filter(|k| *k != owner).collect())
            .unwrap_or_default();
        for sub in subscribers {
            let Some(sp) = self.peers.get_mut(&sub) else {
                continue;
            };
            if !sp.connected {
                continue;
            }
            let consent_lost = sp.consent_lost(now);
            let Some(o) = sp.outs.iter_mut().find(|o| o.track == tid && !o.gone) else {
                continue;
            };
            let OutState::Open(mid) = o.state else {
                continue;
            };
            if kind == MediaKind::Video && (consent_lost || (gap && o.sel.current == Some(li))) {
                // Nothing the subscriber's decoder could use until the next keyframe (or it
                // stopped answering: it gets nothing until it does, then a keyframe).
                o.sel.current = None;
            }
            if consent_lost {
                continue;
            }
            let decision = decide(&mut o.sel, li, keyframe || kind == MediaKind::Audio);
            if decision.want_keyframe {
                self.request_keyframe(tid, li, now);
            }
            if !decision.forward {
                continue;
            }
            if decision.switched {
                self.counters.layer_switches += 1;
            }
            let Some(sp) = self.peers.get_mut(&sub) else {
                continue;
            };
            let Some(o) = sp.outs.iter_mut().find(|o| o.track == tid) else {
                continue;
            };
            if keyframe {
                o.sel.kf_wait = None;
            }
            let rebase = std::mem::take(&mut o.sel.rebase_pending)
                || (decision.rebase && kind == MediaKind::Video);
            let time = out_time(&mut o.sel, &d, rebase);
            let written = self.guard(sub, "writing media", |p| {
                let Some(w) = p.rtc.writer(mid) else {
                    return false;
                };
                let Some(pt) = w.match_params(d.params) else {
                    return false;
                };
                let w = match (d.ext_vals.audio_level, d.ext_vals.voice_activity) {
                    (Some(l), Some(v)) => w.audio_level(l, v),
                    _ => w,
                };
                match w.write(pt, d.network_time, time, d.data.clone()) {
                    Ok(()) => true,
                    Err(e) => {
                        debug!(error = %e, "SFU write refused");
                        false
                    }
                }
            });
            if let Some(o) = self
                .peers
                .get_mut(&sub)
                .and_then(|sp| sp.outs.iter_mut().find(|o| o.track == tid))
            {
                if written == Some(true) {
                    o.watch.packets += 1;
                    o.watch.last_media = Some(now);
                    if keyframe && kind == MediaKind::Video {
                        o.watch.keyframes += 1;
                    }
                } else {
                    o.watch.refused += 1;
                }
            }
            if written == Some(true) {
                self.counters.media_forwarded += 1;
            }
            self.drain(sub);
        }
    }

    /// A subscriber's PLI/FIR: asked of the publisher on the layer being forwarded, or on
    /// the target layer while a switch is pending (the current one may be gone), and asked
    /// again until a keyframe reaches the subscriber.
    fn on_keyframe_request(&mut self, sub: u64, r: KeyframeRequest, now: Instant) {
        let Some(p) = self.peers.get_mut(&sub) else {
            return;
        };
        let Some(o) = p
            .outs
            .iter_mut()
            .find(|o| o.state == OutState::Open(r.mid) && !o.gone)
        else {
            return;
        };
        if o.kind != MediaKind::Video {
            return;
        }
        let Some(li) = o.sel.target else {
            return;
        };
        o.sel.kf_wait.get_or_insert(now);
        let tid = o.track;
        if self.request_keyframe(tid, li, now) {
            if let Some(o) = self
                .peers
                .get_mut(&sub)
                .and_then(|p| p.outs.iter_mut().find(|o| o.track == tid))
            {
                o.watch.keyframe_requests += 1;
            }
        }
    }

    /// Asks the publisher for a keyframe on one layer, at most once per
    /// `keyframe_request_interval`.
    fn request_keyframe(&mut self, tid: u64, li: usize, now: Instant) -> bool {
        let interval = self.config.keyframe_request_interval;
        self.request_keyframe_every(tid, li, now, interval)
    }

    /// Asks the publisher for a keyframe on one layer unless one was asked for within
    /// `interval`.
    /// Returns whether a request was made now.
    fn request_keyframe_every(
        &mut self,
        tid: u64,
        li: usize,
        now: Instant,
        interval: Duration,
    ) -> bool {
        let Some(track) = self.tracks.get_mut(&tid) else {
            return false;
        };
        if track.kind != MediaKind::Video {
            return false;
        }
        let Some(layer) = track.layers.get_mut(li) else {
            return false;
        };
        if layer
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return false;
        }
        layer.last_keyframe_request = Some(now);
        let (owner, mid, rid) = (track.owner, track.mid, layer.rid);
        let sent = self.guard(owner, "requesting a keyframe", |p| {
            let Some(mut w) = p.rtc.writer(mid) else {
                return false;
            };
            let kind = if w.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
                KeyframeRequestKind::Pli
            } else if w.is_request_keyframe_possible(KeyframeRequestKind::Fir) {
                KeyframeRequestKind::Fir
            } else {
                return false;
            };
            w.request_keyframe(rid, kind).is_ok()
        });
        if sent == Some(true) {
            self.counters.keyframe_requests += 1;
        }
        self.drain(owner);
        true
    }

    fn on_channel_data(&mut self, from: u64, d: ChannelData) {
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
            self.drain(to);
        }
    }

    /// Recomputes the layer targets of every video track a subscriber receives, and asks
    /// for keyframes where a switch is due.
    fn update_layers(&mut self, sub: u64, now: Instant) {
        let Some(p) = self.peers.get(&sub) else {
            return;
        };
        if p.role == Role::WhipPublisher || p.outs.is_empty() {
            return;
        }
        let estimate = p.bwe.unwrap_or(self.config.initial_bitrate);
        let mut fixed = 0u64;
        let mut demands: Vec<(usize, Demand)> = Vec::new();
        let mut singles: Vec<(usize, bool)> = Vec::new();
        for (i, o) in p.outs.iter().enumerate() {
            if o.gone || matches!(o.state, OutState::ToStop(_) | OutState::NegotiatingStop(_)) {
                continue;
            }
            let Some(t) = self.tracks.get(&o.track) else {
                continue;
            };
            if t.kind == MediaKind::Audio {
                fixed += match t.rate(now) {
                    0 => policy::NOMINAL_AUDIO_BITRATE,
                    r => r,
                };
                continue;
            }
            let (wanted, area) = match &p.view {
                None => (Layer::Medium, 640 * 360),
                Some(tiles) => match tiles.iter().find(|tile| tile.peer == t.owner_id) {
                    Some(tile) => (
                        policy::layer_for_tile(tile.width, tile.height),
                        u64::from(tile.width) * u64::from(tile.height),
                    ),
                    None => (Layer::Paused, 0),
                },
            };
            if !t.simulcast() {
                let visible = wanted != Layer::Paused;
                if visible {
                    fixed += match t.rate(now) {
                        0 => policy::NOMINAL_BITRATE[1],
                        r => r,
                    };
                }
                singles.push((i, visible));
                continue;
            }
            let any_active = t.layers.iter().any(|l| l.active(now));
            let mut available = [None; 3];
            for l in &t.layers {
                let Some(idx) = policy::layer_index(l.label) else {
                    continue;
                };
                if !any_active || l.active(now) {
                    available[idx] = Some(l.meter.rate().unwrap_or(policy::NOMINAL_BITRATE[idx]));
                }
            }
            demands.push((
                i,
                Demand {
                    area,
                    wanted,
                    available,
                },
            ));
        }
        let list: Vec<Demand> = demands.iter().map(|(_, d)| d.clone()).collect();
        let choices = policy::allocate(estimate, fixed, &list);
        let Some(p) = self.peers.get_mut(&sub) else {
            return;
        };
        for ((i, _), choice) in demands.iter().zip(choices) {
            let o = &mut p.outs[*i];
            let Some(t) = self.tracks.get(&o.track) else {
                continue;
            };
            let layer = policy::next_target(o.sel.target_layer, choice, &mut o.sel.limited_at, now);
            o.sel.target_layer = layer;
            o.sel.target = t.index_of(layer);
            if o.sel.target.is_none() {
                o.sel.current = None;
            }
        }
        for (i, visible) in singles {
            let o = &mut p.outs[i];
            o.sel.target = visible.then_some(0);
            o.sel.target_layer = if visible {
                Layer::Single
            } else {
                Layer::Paused
            };
            if !visible {
                o.sel.current = None;
            }
        }
        // Every video subscription that waits for a keyframe (nothing forwarded yet, a
        // layer switch pending, a gap, a PLI) asks the publisher's target layer again, at
        // most every `keyframe_request_interval` for KEYFRAME_RETRY_FAST, then every
        // KEYFRAME_RETRY_SLOW: a lost PLI or a request dropped by the throttle is retried.
        let ready = p.connected && !p.consent_lost(now);
        let mut requests: Vec<(usize, u64, usize, Duration)> = Vec::new();
        for (i, o) in p.outs.iter_mut().enumerate() {
            if o.kind != MediaKind::Video || o.gone || !matches!(o.state, OutState::Open(_)) {
                continue;
            }
            let Some(target) = o.sel.target else {
                o.sel.kf_wait = None;
                continue;
            };
            if !ready {
                continue;
            }
            if o.sel.current != Some(target) {
                o.sel.kf_wait.get_or_insert(now);
            }
            let Some(since) = o.sel.kf_wait else {
                continue;
            };
            // The fast window counts from the start of the wait or from the last packet
            // forwarded, whichever is later: a wait that begins (a gap, a layer switch)
            // while frames were flowing is a new wait, not the tail of an old one.
            let since = o.watch.last_media.map_or(since, |t| t.max(since));
            let every = if now.saturating_duration_since(since) < KEYFRAME_RETRY_FAST {
                self.config.keyframe_request_interval
            } else {
                KEYFRAME_RETRY_SLOW
            };
            requests.push((i, o.track, target, every));
        }
        for (i, tid, li, every) in requests {
            if self.request_keyframe_every(tid, li, now, every) {
                if let Some(o) = self.peers.get_mut(&sub).and_then(|p| p.outs.get_mut(i)) {
                    o.watch.keyframe_requests += 1;
                }
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let speaker = self
                .rooms
                .get_mut(&room)
                .and_then(|r| r.speaker.evaluate(now));
            if let Some(peer) = speaker {
                self.push_event(SfuEvent::Speaker { room, peer });
            }
        }
        let keys: Vec<u64> = self.peers.keys().copied().collect();
        for key in keys {
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            let quiet = p.consent_lost(now);
            if quiet != p.quiet {
                p.quiet = quiet;
                // str0m pads every outgoing connection up to 50 kbit/s when media is
                // short; a peer that stopped answering gets neither (its BWE shrinks to
                // nothing), and starts again from the initial estimate when it answers.
                let rate = if quiet {
                    Bitrate::bps(QUIET_BITRATE)
                } else {
                    Bitrate::bps(self.config.initial_bitrate)
                };
                debug!(peer = %p.id, quiet, "SFU: ICE consent {}", if quiet { "lost: media held back" } else { "back" });
                self.guard(key, "resetting the bandwidth estimate", |p| {
                    p.rtc.bwe().reset(rate)
                });
                self.drain(key);
            }
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            if p.retired_of.is_some() {
                if p.retire_at.is_some_and(|t| now >= t) {
                    self.remove_peer(key);
                    continue;
                }
                self.update_layers(key, now);
                continue;
            }
            if !p.connected && now.saturating_duration_since(p.joined) >= CONNECT_TIMEOUT {
                self.close(
                    key,
                    format!(
                        "ICE/DTLS did not connect within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                );
                continue;
            }
            if let Some((_, since)) = &p.pending {
                let waited = now.saturating_duration_since(*since);
                if waited >= SLOW_ANSWER && !p.slow_noted {
                    p.slow_noted = true;
                    p.negotiation.slow += 1;
                    info!(
                        peer = %p.id,
                        room = %p.room,
                        waited_ms = waited.as_millis() as u64,
                        "SFU offer not answered yet; still waiting for the answer (a slow \
                         client), no new offer until then"
                    );
                }
            }
            if p.connected && now >= p.next_stats {
                p.next_stats = now + self.config.stats_interval;
                let layers = p
                    .outs
                    .iter()
                    .filter(|o| o.kind == MediaKind::Video && !o.gone)
                    .filter(|o| matches!(o.state, OutState::Open(_)))
                    .filter_map(|o| {
                        let t = self.tracks.get(&o.track)?;
                        let layer = match o.sel.target {
                            None => Layer::Paused,
                            Some(_) if !t.simulcast() => Layer::Single,
                            Some(target) => t.layers.get(o.sel.current.unwrap_or(target))?.label,
                        };
                        Some((o.publisher.clone(), layer))
                    })
                    .collect();
                let ev = SfuEvent::Stats {
                    peer: p.id.clone(),
                    bitrate: p.bwe,
                    layers,
                    rtt_ms: p.rtt_ms,
                };
                self.push_event(ev);
            }
            self.update_layers(key, now);
            self.watch_subscriptions(key, now);
            self.maybe_negotiate(key, now);
        }
    }

    /// Notices subscriptions that should carry media and do not ([`STARVED_AFTER`]):
    /// logs each episode once at info with what the SFU knows of the cause, and puts a
    /// starved video subscription back on the keyframe path. Logs the recovery too.
    fn watch_subscriptions(&mut self, sub: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(&sub) else {
            return;
        };
        if !p.connected || p.lingering {
            return;
        }
        let consent_lost = p.consent_lost(now);
        for o in &mut p.outs {
            let OutState::Open(mid) = o.state else {
                continue;
            };
            if o.gone {
                continue;
            }
            let sending = target_sending(self.tracks.get(&o.track), &o.sel, now);
            let since = match (o.watch.last_media, o.watch.opened) {
                (Some(a), Some(b)) => a.max(b),
                (a, b) => a.or(b).unwrap_or(now),
            };
            let starved =
                sending && !consent_lost && now.saturating_duration_since(since) >= STARVED_AFTER;
            match (starved, o.watch.starved_since) {
                (true, None) => {
                    o.watch.starved_since = Some(now);
                    o.watch.starved += 1;
                    let cause = if o.watch.refused > 0 {
                        "packets were due but the subscriber's m-line could not take them (no writer or no matching payload type)"
                    } else if o.sel.kf_wait.is_some() {
                        "waiting for a keyframe from the publisher"
                    } else {
                        "nothing forwarded"
                    };
                    info!(
                        subscriber = %p.id,
                        publisher = %o.publisher,
                        room = %p.room,
                        kind = ?o.kind,
                        %mid,
                        idle_ms = now.saturating_duration_since(since).as_millis() as u64,
                        keyframe_requests = o.watch.keyframe_requests,
                        refused = o.watch.refused,
                        cause,
                        "SFU subscription starved; asking for a keyframe"
                    );
                    if o.kind == MediaKind::Video {
                        o.sel.current = None;
                        o.sel.kf_wait = Some(now);
                    }
                }
                (false, Some(at)) if !sending || o.watch.last_media.is_some_and(|t| t > at) => {
                    o.watch.starved_since = None;
                    if o.watch.last_media.is_some_and(|t| t > at) {
                        info!(
                            subscriber = %p.id,
                            publisher = %o.publisher,
                            kind = ?o.kind,
                            after_ms = now.saturating_duration_since(at).as_millis() as u64,
                            "SFU subscription carries media again"
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// Removes a peer and everything it owns; returns its id (`None` for a retired
    /// PeerConnection, which goes silently).
    fn remove_peer(&mut self, key: u64) -> Option<String> {
        let peer = self.peers.remove(&key)?;
        let now = self.last_now;
        let live = peer.retired_of;
        if live.is_none() {
            self.ids.remove(&peer.id);
        }
        self.demux.remove_peer(&peer.ufrag, key);
        if let Some(t) = peer.timer {
            self.timers.remove(&(t, key));
        }
        if let Some(r) = self.rooms.get_mut(&peer.room) {
            r.peers.retain(|k| *k != key);
            if live.is_none() {
                r.speaker.remove(&peer.id);
            }
        }
        let subscribers: Vec<u64> = match self.rooms.get_mut(&peer.room) {
            Some(r) => {
                r.tracks.retain(|t| !peer.published.contains(t));
                r.peers.clone()
            }
            None => Vec::new(),
        };
        self.detach_tracks(&peer.published, &subscribers, now);
        if let Some(leg) = peer.retired {
            self.remove_peer(leg);
        }
        if let Some(live) = live {
            // Claims on tracks that went with the old connection become tracks of their own.
            let orphaned: Vec<(Mid, Vec<Rid>)> = match self.peers.get_mut(&live) {
                Some(p) => {
                    p.retired = None;
                    p.inherit.clear();
                    std::mem::take(&mut p.claims)
                        .into_iter()
                        .map(|(m, _, r)| (m, r))
                        .collect()
                }
                None => Vec::new(),
            };
            for (mid, rids) in orphaned {
                let kind = self
                    .peers
                    .get(&live)
                    .and_then(|p| p.rtc.media(mid).map(|m| m.kind()));
                if let Some(kind) = kind {
                    self.add_track(live, mid, kind, &rids, now);
                }
            }
            debug!(peer = %peer.id, "SFU: the old PeerConnection of the peer is gone");
        }
        if self
            .rooms
            .get(&peer.room)
            .is_some_and(|r| r.peers.is_empty())
        {
            self.rooms.remove(&peer.room);
        }
        if live.is_some() {
            return None;
        }
        debug!(peer = %peer.id, room = %peer.room, "SFU peer removed");
        Some(peer.id)
    }

    /// Drops a publisher track and takes it away from its subscribers: participants get a
    /// renegotiation that sets the m-line inactive (free for reuse), WHEP viewers get the m-line back unbound.
    fn detach_tracks(&mut self, tids: &[u64], subscribers: &[u64], now: Instant) {
        for tid in tids {
            self.tracks.remove(tid);
        }
        for &sub in subscribers {
            let Some(p) = self.peers.get_mut(&sub) else {
                continue;
            };
            if p.role == Role::WhepViewer {
                let freed: Vec<(Mid, MediaKind)> = p
                    .outs
                    .iter()
                    .filter(|o| tids.contains(&o.track))
                    .filter_map(|o| match o.state {
                        OutState::Open(m) => Some((m, o.kind)),
                        _ => None,
                    })
                    .collect();
                p.outs.retain(|o| !tids.contains(&o.track));
                p.unbound.extend(freed);
                self.bind_whep(sub, now);
                continue;
            }
            for o in p.outs.iter_mut().filter(|o| tids.contains(&o.track)) {
                o.gone = true;
            }
            self.maybe_negotiate(sub, now);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn new_peer(
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
        rtt_ms: None,
        nacks: Vec::new(),
        next_stats: now + config.stats_interval,
        timer: None,
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

/// The `a=fingerprint` of an SDP (the first one; browsers use one certificate per
/// PeerConnection), normalized.
fn sdp_fingerprint(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .map(|f| f.trim().to_ascii_lowercase())
}

fn track_room(peers: &Map<u64, Peer>, owner: u64) -> Option<String> {
    peers.get(&owner).map(|p| p.room.clone())
}

fn build_layers(kind: MediaKind, rids: &[Rid]) -> Vec<LayerIn> {
    if kind == MediaKind::Video && !rids.is_empty() {
        order_rids(rids)
            .into_iter()
            .map(|(rid, label)| LayerIn::new(Some(rid), label))
            .collect()
    } else {
        vec![LayerIn::new(None, Layer::Single)]
    }
}

fn new_out(tid: u64, t: &TrackIn) -> TrackOut {
    let audio = t.kind == MediaKind::Audio;
    TrackOut {
        track: tid,
        publisher: t.owner_id.clone(),
        kind: t.kind,
        state: OutState::ToOpen,
        gone: false,
        watch: OutWatch::default(),
        slot: None,
        sel: Selection {
            target: audio.then_some(0),
            current: audio.then_some(0),
            target_layer: if audio { Layer::Single } else { Layer::Paused },
            limited_at: None,
            offset: 0,
            last_out: None,
            kf_wait: None,
            rebase_pending: false,
        },
    }
}

/// Whether the publisher sends the layer this subscription should get now.
fn target_sending(track: Option<&TrackIn>, sel: &Selection, now: Instant) -> bool {
    match (track, sel.target) {
        (Some(t), Some(li)) => t.layers.get(li).is_some_and(|l| l.active(now)),
        _ => false,
    }
}

/// Puts the tracks of a dropped (rolled back or refused) offer back to their previous
/// state. str0m applies a direction change to the session at once (an added m-line only
/// with the answer), so a reused m-line is set inactive again and a freed one sendonly
/// again: the session then says what was last negotiated, also in an answer to the
/// peer's own offer.
fn revert_outs(p: &mut Peer) {
    let mut directions: Vec<(Mid, Direction)> = Vec::new();
    for o in &mut p.outs {
        match o.state {
            OutState::Negotiating(m) => {
                o.state = OutState::ToOpen;
                if let Some(slot) = o.slot.take() {
                    directions.push((m, Direction::Inactive));
                    p.free.push(slot);
                }
            }
            OutState::NegotiatingStop(m) => {
                o.state = OutState::ToStop(m);
                directions.push((m, Direction::SendOnly));
            }
            _ => {}
        }
    }
    if !directions.is_empty() {
        let mut api = p.rtc.sdp_api();
        for (m, d) in directions {
            api.set_direction(m, d);
        }
        // Dropped without apply(): only the session's directions change.
    }
}

/// The outstanding offer was answered (or needed no negotiation): its new m-lines carry
/// media from now on, and the m-lines it set inactive are free for the next publisher.
fn settle_outs(p: &mut Peer, now: Instant) {
    for o in &mut p.outs {
        match o.state {
            OutState::Negotiating(m) => {
                o.state = OutState::Open(m);
                o.slot = None;
                o.watch.opened = Some(now);
            }
            OutState::NegotiatingStop(mid) => p.free.push(Slot {
                mid,
                kind: o.kind,
                last_out: o.sel.last_out,
            }),
            _ => {}
        }
    }
    p.outs
        .retain(|o| !matches!(o.state, OutState::NegotiatingStop(_)));
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Decision {
    forward: bool,
    /// First frame of a new layer (or after a pause): re-base the RTP time.
    rebase: bool,
    switched: bool,
    want_keyframe: bool,
}

/// Whether one frame of layer `li` goes to a subscriber: frames of the current layer do;
/// the target layer takes over at its first keyframe.
fn decide(sel: &mut Selection, li: usize, keyframe: bool) -> Decision {
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
fn out_time(sel: &mut Selection, d: &MediaData, rebase: bool) -> MediaTime {
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

/// The runtime moves the SFU into its own task or thread.
#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Sfu>();
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
        }
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
