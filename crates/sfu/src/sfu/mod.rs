//! The SFU state machine: the [`Sfu`] and how it is driven (joins and leaves, datagrams,
//! timers) and the removal of peers. The other concerns are in the submodules: [`rtc`]
//! (each peer's str0m `Rtc` under the fault guard), [`tick`], [`state`], [`negotiation`],
//! [`forwarding`], [`layers`], [`observe`].

mod forwarding;
mod layers;
mod negotiation;
mod observe;
mod rtc;
mod rtp;
mod state;
mod tick;

use layers::*;
use state::*;

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

/// The selective forwarding unit. See the crate docs for the driving contract.
pub struct Sfu {
    config: SfuConfig,
    candidates: Vec<Candidate>,
    /// Boxed: a `Peer` (its str0m `Rtc` inline) is kilobytes, and a hash table keeps up
    /// to twice as many slots as entries and moves them all when it grows.
    peers: Map<u64, Box<Peer>>,
    ids: Map<String, u64>,
    rooms: Map<String, Room>,
    tracks: Map<u64, TrackIn>,
    demux: Demux,
    timers: BTreeSet<(Instant, u64)>,
    next_key: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    work: VecDeque<(u64, Event)>,
    /// Peers written to (media forwarded, messages relayed) whose `Rtc` is not polled
    /// yet ([`Sfu::flush_drains`]).
    undrained: Vec<u64>,
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

fn check_id(what: &str, id: &str) -> Result<(), SfuError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(SfuError::BadId(format!(
            "{what} id must be 1 to {MAX_ID_LEN} bytes without control characters"
        )));
    }
    Ok(())
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
            undrained: Vec::new(),
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
        self.peers.insert(key, Box::new(p));
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
        self.flush_drains();
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.flush_drains();
        self.transmits.pop_front()
    }

    /// The next event to deliver or log.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.flush_drains();
        self.events.pop_front()
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.flush_drains();
        let peer = self.timers.first().map(|(t, _)| *t);
        let tick = (!self.peers.is_empty()).then_some(self.next_tick);
        match (peer, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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

/// The runtime moves the SFU into its own task or thread.
#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Sfu>();
}
