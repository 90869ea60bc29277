//! The room state machine: connections, rooms, peers, resume tokens, grace timers and
//! limits. See the crate documentation for how to drive it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::{
    parse_client_message, CandidateFrom, CandidateTo, ChatFrom, ClientMessage, ErrorCode,
    IceServer, Join, LeaveReason, Limits, MediaFrom, MediaState, Mode, ModeChange, PeerInfo,
    PeerJoined, PeerLeft, Pong, RoomMode, SdpFrom, SdpTo, ServerMessage, Session, SfuStats,
    Speaker, SFU_PEER,
};
use crate::rate::{FloodDetector, TokenBucket};
use crate::sfu::{SfuReply, SfuRequest};
use crate::{sdp, token};

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

fn map<K, V>() -> Map<K, V> {
    HashMap::with_hasher(ahash::RandomState::new())
}

/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 64;
/// Longest display name, in characters after trimming.
pub const MAX_NAME_CHARS: usize = 64;
/// Session events kept for [`Hub::poll_event`].
const MAX_EVENTS: usize = 4096;

/// A connection, named by the runtime. Ids are never reused while the hub runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// The access-token secret (`Debug` does not show it).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(pub Vec<u8>);

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// Limits and policy of a [`Hub`]. [`HubConfig::default`] has the documented defaults,
/// except `sfu`, which is off until the runtime has an SFU to hand requests to.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Peers per room that may run as SFU (`auto` and `sfu` rooms); at least 1.
    pub max_peers: u32,
    /// Peers per mesh room: `mesh` rooms are full at this many, `auto` rooms switch to
    /// SFU past it and back at one fewer. Also the limit of every room without an SFU.
    pub mesh_max_peers: u32,
    /// Whether an SFU runs. Without one every room is mesh (limit `mesh_max_peers`),
    /// `to: "sfu"` is `unknown-peer` and [`SfuReply::External`] is ignored.
    pub sfu: bool,
    /// The policy of a room whose first `join` has no `mode`.
    pub default_mode: RoomMode,
    /// Rooms at once.
    pub max_rooms: usize,
    /// Connections at once (joined or not); more are refused with `server-busy`.
    pub max_connections: usize,
    /// Longest text frame; longer ones get `too-large` and are discarded.
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection; the burst is twice this.
    /// 0 turns rate limiting off.
    pub messages_per_second: u32,
    /// A connection refused for rate in every second for this long is closed (1008).
    pub flood_close_after: Duration,
    /// How long a dropped peer can be resumed. Zero: a drop is a `timeout` leave at once.
    pub resume_grace: Duration,
    /// Messages queued for a peer within its grace period.
    pub queue_messages: usize,
    /// Bytes queued for a peer within its grace period.
    pub queue_bytes: usize,
    /// With a secret, `join` needs an HS256 access token signed with it.
    pub token_secret: Option<TokenSecret>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_peers: 50,
            mesh_max_peers: 4,
            sfu: false,
            default_mode: RoomMode::Auto,
            max_rooms: 10_000,
            max_connections: 10_000,
            max_message_bytes: 64 * 1024,
            messages_per_second: 50,
            flood_close_after: Duration::from_secs(10),
            resume_grace: Duration::from_secs(15),
            queue_messages: 256,
            queue_bytes: 1024 * 1024,
            token_secret: None,
        }
    }
}

/// What an [`IceServerSource`] is asked for: the servers to put in the `welcome` or
/// `resumed` of one peer.
#[derive(Debug, Clone, Copy)]
pub struct IceRequest<'a> {
    pub conn: ConnId,
    pub peer_id: &'a str,
    /// The hub's idea of the current Unix time, in seconds.
    pub unix_secs: u64,
}

/// Produces the ICE server list (and fresh TURN credentials) for a peer. The runtime
/// implements it: it knows the TURN secret and the public host name.
pub trait IceServerSource {
    fn ice_servers(&mut self, req: &IceRequest<'_>) -> Vec<IceServer>;
}

impl<F: FnMut(&IceRequest<'_>) -> Vec<IceServer>> IceServerSource for F {
    fn ice_servers(&mut self, req: &IceRequest<'_>) -> Vec<IceServer> {
        self(req)
    }
}

/// No ICE servers (host candidates only).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIceServers;

impl IceServerSource for NoIceServers {
    fn ice_servers(&mut self, _: &IceRequest<'_>) -> Vec<IceServer> {
        Vec::new()
    }
}

/// How a connection ended, as the runtime saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// A close frame with code 1000: the peer leaves at once (`left`).
    Clean,
    /// Anything else (another close code, a reset, the idle timeout): the peer is kept
    /// for the resume grace period.
    Lost,
    /// The runtime closed it because its outbound queue was full (after sending
    /// `server-busy`): the peer leaves at once (`kicked`).
    Overflow,
}

/// Why the hub wants a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// After `leave`.
    Left,
    /// Refused for rate for [`HubConfig::flood_close_after`].
    Flood,
    /// Its session was resumed on another connection.
    Replaced,
    /// The server is shutting down.
    Shutdown,
    /// [`HubConfig::max_connections`] reached.
    Full,
}

impl CloseReason {
    /// The WebSocket close code (RFC 6455 §7.4; 4000 is private use).
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Left => 1000,
            CloseReason::Flood => 1008,
            CloseReason::Replaced => 4000,
            CloseReason::Shutdown => 1001,
            CloseReason::Full => 1013,
        }
    }

    /// The close reason text (at most 123 bytes).
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Left => "left",
            CloseReason::Flood => "rate limit exceeded for too long",
            CloseReason::Replaced => "session resumed on another connection",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::Full => "too many connections",
        }
    }
}

/// An action for the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `text` as one text frame on `conn`.
    Send { conn: ConnId, text: Arc<str> },
    /// Close `conn` (after sending what was output before for it). The hub has
    /// forgotten it: later input from it is ignored.
    Close { conn: ConnId, reason: CloseReason },
    /// Hand this to the SFU runtime (only with [`HubConfig::sfu`]). When it cannot be
    /// queued, tell the hub with [`Hub::handle_sfu_dropped`].
    Sfu(SfuRequest),
}

/// What happened to a session, for logs (ids and room only: names stay out of logs).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    Joined {
        conn: ConnId,
        peer: Arc<str>,
        room: Arc<str>,
    },
    Resumed {
        conn: ConnId,
        peer: Arc<str>,
        room: Arc<str>,
    },
    /// The WebSocket dropped; the grace period started.
    Dropped { peer: Arc<str>, room: Arc<str> },
    Left {
        peer: Arc<str>,
        room: Arc<str>,
        reason: LeaveReason,
    },
    /// The room switched to `mode`.
    ModeChanged { room: Arc<str>, mode: Mode },
}

/// Live counters. Gauges are the current value; the rest count since the start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open connections (joined or not).
    pub connections: u64,
    /// Rooms with at least one peer (or, with an SFU, a WHIP publisher).
    pub rooms: u64,
    /// Rooms in mesh mode now.
    pub rooms_mesh: u64,
    /// Rooms in SFU mode now.
    pub rooms_sfu: u64,
    /// Rooms that switched from mesh to SFU.
    pub switches_to_sfu: u64,
    /// Rooms that switched from SFU to mesh.
    pub switches_to_mesh: u64,
    /// Peers in rooms, including those in their grace period.
    pub peers: u64,
    /// Peers in their grace period.
    pub peers_in_grace: u64,
    pub joins: u64,
    pub resumes: u64,
    /// Peers that left, by reason: left, timeout, kicked.
    pub leaves: [u64; 3],
    /// Frames received (accepted or not).
    pub messages_received: u64,
    /// Peer messages (offer, answer, candidate, chat, media) delivered or queued for a
    /// recipient; a chat to three peers counts three. Offers, answers and candidates to
    /// the SFU and the SFU's offers and answers count too.
    pub messages_relayed: u64,
    /// Requests for the SFU that the runtime could not queue ([`Hub::handle_sfu_dropped`]).
    pub sfu_dropped: u64,
    /// SFU offers, answers, errors and stats that arrived for a peer no longer in the SFU
    /// (after its room went back to mesh) and were not delivered.
    pub sfu_replies_after_leave: u64,
    /// `error` messages sent, indexed by [`ErrorCode::index`].
    pub errors: [u64; ErrorCode::ALL.len()],
}

impl Stats {
    /// `error` messages sent with `code`.
    pub fn errors_for(&self, code: ErrorCode) -> u64 {
        self.errors[code.index()]
    }

    /// `(code, count)` for every code.
    pub fn errors_by_code(&self) -> impl Iterator<Item = (ErrorCode, u64)> + '_ {
        ErrorCode::ALL.iter().map(|c| (*c, self.errors[c.index()]))
    }
}

/// A pseudo-random function keyed by the runtime's seed: HMAC-SHA256(seed, counter).
/// Peer ids and resume tokens come from it, so they are unpredictable without the seed
/// and the hub needs no OS randomness.
struct Prf {
    key: [u8; 32],
    counter: u64,
}

impl Prf {
    fn next(&mut self) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length (RFC 2104 §2)");
        m.update(&self.counter.to_be_bytes());
        self.counter = self.counter.wrapping_add(1);
        m.finalize().into_bytes().into()
    }
}

type PeerKey = u64;

#[derive(Debug)]
struct Conn {
    bucket: TokenBucket,
    flood: FloodDetector,
    peer: Option<PeerKey>,
    last_rate_error: Option<Instant>,
}

#[derive(Debug)]
struct Peer {
    id: Arc<str>,
    name: Arc<str>,
    room: Arc<str>,
    /// `None` within the grace period.
    conn: Option<ConnId>,
    resume_token: Arc<str>,
    grace_until: Option<Instant>,
    queue: VecDeque<Arc<str>>,
    queued_bytes: usize,
    media: MediaState,
    can_publish: bool,
    /// Has an SFU peer (a `Join` was emitted and no `Leave` since). Always equal to
    /// whether its room is in SFU mode.
    sfu: bool,
}

#[derive(Debug)]
struct Room {
    /// In join order; at most the room's limit ([`Hub::limit`]).
    peers: Vec<PeerKey>,
    /// Fixed when the room is created.
    policy: RoomMode,
    mode: Mode,
    /// WHIP publishers ([`SfuReply::External`]); while > 0 the room is SFU, and it is
    /// kept without browser peers.
    whip: u32,
}

/// The signaling state machine. Sans-IO: no sockets, no clock, no randomness of its own.
pub struct Hub<I = NoIceServers> {
    config: HubConfig,
    ice: I,
    prf: Prf,
    /// The `now` and Unix time (ms) given to [`Hub::new`]; `ts` and token expiry are
    /// computed from them.
    epoch: (Instant, u64),
    conns: Map<ConnId, Conn>,
    peers: Map<PeerKey, Peer>,
    /// Public peer id → key; looked up with client-chosen strings.
    peer_ids: Map<Arc<str>, PeerKey>,
    rooms: Map<Arc<str>, Room>,
    /// Resume token → key; looked up with client-chosen strings.
    resume_tokens: Map<Arc<str>, PeerKey>,
    /// Grace deadlines.
    timers: BTreeSet<(Instant, PeerKey)>,
    next_key: PeerKey,
    /// Rooms in SFU mode (the rest are mesh).
    sfu_rooms: u64,
    /// Peers in grace whose queue overflowed: removed after the current input.
    overflowed: Vec<PeerKey>,
    out: VecDeque<Output>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl<I> fmt::Debug for Hub<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .field("connections", &self.conns.len())
            .field("rooms", &self.rooms.len())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl<I: IceServerSource> Hub<I> {
    /// A hub with no connections. `seed` keys the generator of peer ids and resume
    /// tokens: give it 32 bytes from the OS. `unix_ms` is the Unix time at `now`.
    pub fn new(config: HubConfig, ice: I, seed: [u8; 32], now: Instant, unix_ms: u64) -> Self {
        Hub {
            config,
            ice,
            prf: Prf {
                key: seed,
                counter: 0,
            },
            epoch: (now, unix_ms),
            conns: map(),
            peers: map(),
            peer_ids: map(),
            rooms: map(),
            resume_tokens: map(),
            timers: BTreeSet::new(),
            next_key: 0,
            sfu_rooms: 0,
            overflowed: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The ICE server source given to [`Hub::new`].
    pub fn ice_source_mut(&mut self) -> &mut I {
        &mut self.ice
    }

    /// Peers in `room` now (those in their grace period included); 0 for no room.
    pub fn room_size(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.peers.len())
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.connections = self.conns.len() as u64;
        s.rooms = self.rooms.len() as u64;
        s.rooms_sfu = self.sfu_rooms;
        s.rooms_mesh = s.rooms.saturating_sub(self.sfu_rooms);
        s.peers = self.peers.len() as u64;
        s.peers_in_grace = self.timers.len() as u64;
        s
    }

    /// Whether the hub knows `conn` (opened and not closed by either side).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The next action for the runtime. Drain it after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next session event (joins, resumes, drops, leaves), for logging. Drain it
    /// with the output; it holds only what the last inputs produced.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Hub::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// A WebSocket was accepted.
    pub fn handle_open(&mut self, now: Instant, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            return;
        }
        if self.conns.len() >= self.config.max_connections {
            self.send_error(
                conn,
                ErrorCode::ServerBusy,
                format!(
                    "the server has its maximum of {} signaling connections; try again later",
                    self.config.max_connections
                ),
                None,
            );
            self.out.push_back(Output::Close {
                conn,
                reason: CloseReason::Full,
            });
            return;
        }
        let rate = self.config.messages_per_second;
        self.conns.insert(
            conn,
            Conn {
                bucket: TokenBucket::new(now, rate, rate.saturating_mul(2)),
                flood: FloodDetector::default(),
                peer: None,
                last_rate_error: None,
            },
        );
    }

    /// A text frame arrived on `conn`.
    pub fn handle_text(&mut self, now: Instant, conn: ConnId, text: &str) {
        if !self.admit(now, conn) {
            return;
        }
        if text.len() > self.config.max_message_bytes {
            self.send_error(
                conn,
                ErrorCode::TooLarge,
                format!(
                    "the message has {} bytes; the limit is {} (maxMessageBytes); it was discarded",
                    text.len(),
                    self.config.max_message_bytes
                ),
                None,
            );
            return;
        }
        match parse_client_message(text) {
            Ok(msg) => self.dispatch(now, conn, msg),
            Err(e) => self.send_error(conn, e.code, e.message, e.reference.as_deref()),
        }
        self.remove_overflowed();
    }

    /// A binary frame of `len` bytes arrived on `conn`.
    pub fn handle_binary(&mut self, now: Instant, conn: ConnId, len: usize) {
        if !self.admit(now, conn) {
            return;
        }
        self.send_error(
            conn,
            ErrorCode::BadMessage,
            format!("a binary frame ({len} bytes); send JSON objects as text frames"),
            None,
        );
    }

    /// `conn` is gone (the runtime will send nothing more on it).
    pub fn handle_close(&mut self, now: Instant, conn: ConnId, how: Disconnect) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let Some(key) = c.peer else {
            return;
        };
        match how {
            Disconnect::Clean => self.remove_peer(key, LeaveReason::Left),
            Disconnect::Overflow => {
                self.stats.errors[ErrorCode::ServerBusy.index()] += 1;
                self.remove_peer(key, LeaveReason::Kicked);
            }
            Disconnect::Lost if self.config.resume_grace.is_zero() => {
                self.remove_peer(key, LeaveReason::Timeout)
            }
            Disconnect::Lost => {
                let deadline = now + self.config.resume_grace;
                if let Some(p) = self.peers.get_mut(&key) {
                    p.conn = None;
                    p.grace_until = Some(deadline);
                    self.timers.insert((deadline, key));
                    let e = Event::Dropped {
                        peer: p.id.clone(),
                        room: p.room.clone(),
                    };
                    self.push_event(e);
                }
            }
        }
        self.remove_overflowed();
    }

    /// Ends the grace periods that are over.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, key)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, key));
            if self
                .peers
                .get(&key)
                .is_some_and(|p| p.conn.is_none() && p.grace_until == Some(t))
            {
                self.remove_peer(key, LeaveReason::Timeout);
            }
        }
        self.remove_overflowed();
    }

    /// Closes every connection ([`CloseReason::Shutdown`]) and forgets every room.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        let mut in_sfu: Vec<(PeerKey, Arc<str>)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.sfu)
            .map(|(k, p)| (*k, p.id.clone()))
            .collect();
        in_sfu.sort_unstable();
        for (_, peer) in in_sfu {
            self.out.push_back(Output::Sfu(SfuRequest::Leave {
                peer,
                linger: false,
            }));
        }
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.out.push_back(Output::Close {
                conn,
                reason: CloseReason::Shutdown,
            });
        }
        self.stats.leaves[2] += self.peers.len() as u64;
        self.conns.clear();
        self.peers.clear();
        self.peer_ids.clear();
        self.rooms.clear();
        self.sfu_rooms = 0;
        self.resume_tokens.clear();
        self.timers.clear();
        self.overflowed.clear();
        self.events.clear();
    }

    /// A reply of the SFU runtime. Replies about unknown peers or rooms are ignored;
    /// to a peer within its grace period they are queued like other messages. Offers,
    /// answers, errors and stats for a peer that is no longer in the SFU (its room went
    /// back to mesh) are dropped: its client has left the SFU, and docs/sfu.md promises
    /// no `"sfu"` message after `mode: mesh`.
    pub fn handle_sfu(&mut self, _now: Instant, reply: SfuReply) {
        let for_peer = match &reply {
            SfuReply::Offer { peer, .. }
            | SfuReply::Answer { peer, .. }
            | SfuReply::Stats { peer, .. }
            | SfuReply::Error { peer, .. } => Some(peer.as_str()),
            SfuReply::Speaker { .. } | SfuReply::External { .. } => None,
        };
        if let Some(peer) = for_peer {
            let in_sfu = self
                .peer_ids
                .get(peer)
                .and_then(|k| self.peers.get(k))
                .is_some_and(|p| p.sfu);
            if !in_sfu {
                self.stats.sfu_replies_after_leave += 1;
                return;
            }
        }
        match reply {
            SfuReply::Offer { peer, sdp } => {
                let m = ServerMessage::Offer(SdpFrom {
                    from: SFU_PEER.to_owned(),
                    sdp,
                });
                self.deliver_to_id(&peer, &m, true);
            }
            SfuReply::Answer { peer, sdp } => {
                let m = ServerMessage::Answer(SdpFrom {
                    from: SFU_PEER.to_owned(),
                    sdp,
                });
                self.deliver_to_id(&peer, &m, true);
            }
            SfuReply::Speaker { room, peer } => {
                if self.rooms.contains_key(room.as_str()) {
                    let text = ServerMessage::Speaker(Speaker { id: peer })
                        .to_json()
                        .into();
                    self.broadcast(&room, None, &text, false);
                }
            }
            SfuReply::Stats {
                peer,
                bitrate,
                layers,
                rtt,
            } => {
                let m = ServerMessage::SfuStats(SfuStats {
                    bitrate,
                    layers: layers.into_iter().collect(),
                    rtt: rtt.filter(|r| r.is_finite()),
                });
                self.deliver_to_id(&peer, &m, false);
            }
            SfuReply::Error { peer, message } => {
                if let Some(&key) = self.peer_ids.get(peer.as_str()) {
                    self.deliver_error(key, ErrorCode::SfuError, message, None);
                }
            }
            SfuReply::External { room, publishers } => self.external(&room, publishers),
        }
        self.remove_overflowed();
    }

    /// The runtime could not hand `req` to the SFU (its queue was full): the peer is
    /// told with `server-busy` (the session goes on) and [`Stats::sfu_dropped`] counts
    /// it. A dropped `leave` tells nobody: the SFU drops that peer on its own timeouts.
    pub fn handle_sfu_dropped(&mut self, _now: Instant, req: &SfuRequest) {
        self.stats.sfu_dropped += 1;
        let Some(&key) = self.peer_ids.get(&**req.peer()) else {
            return;
        };
        let (message, reference) = match req {
            SfuRequest::Leave { .. } => return,
            SfuRequest::Join { .. } => (
                "the SFU is overloaded and could not add you to it; media through the SFU \
                 will not work: leave and join again"
                    .to_owned(),
                None,
            ),
            other => (
                format!(
                    "the SFU is overloaded: your {} to \"sfu\" was dropped; send it again",
                    other.kind()
                ),
                Some(other.kind()),
            ),
        };
        self.deliver_error(key, ErrorCode::ServerBusy, message, reference);
        self.remove_overflowed();
    }

    // ---- input ----

    /// Counts the frame and applies the rate limit. False: drop the frame.
    fn admit(&mut self, now: Instant, conn: ConnId) -> bool {
        let flood_after = self.config.flood_close_after;
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        self.stats.messages_received += 1;
        if c.bucket.take(now) {
            return true;
        }
        let flooding_for = c.flood.refused(now);
        if flooding_for >= flood_after {
            let peer = c.peer;
            self.close(conn, CloseReason::Flood);
            if let Some(key) = peer {
                self.remove_peer(key, LeaveReason::Kicked);
                self.remove_overflowed();
            }
            return false;
        }
        // One error a second is enough to tell the client; more would only add to
        // the traffic it is already causing.
        let tell = c
            .last_rate_error
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if tell {
            c.last_rate_error = Some(now);
            let message = format!(
                "more than {} messages per second (burst {}); messages are being discarded, and \
                 the connection is closed after {} s of this",
                self.config.messages_per_second,
                self.config.messages_per_second.saturating_mul(2),
                flood_after.as_secs()
            );
            self.send_error(conn, ErrorCode::RateLimited, message, None);
        }
        false
    }

    fn dispatch(&mut self, now: Instant, conn: ConnId, msg: ClientMessage) {
        let session = self.conns.get(&conn).and_then(|c| c.peer);
        let ty = msg.type_name();
        match msg {
            ClientMessage::Ping(p) => {
                self.send(conn, &ServerMessage::Pong(Pong { id: p.id }));
            }
            ClientMessage::Join(j) => match session {
                Some(_) => self.already_joined(conn, ty),
                None => self.join(now, conn, j),
            },
            ClientMessage::Resume(r) => match session {
                Some(_) => self.already_joined(conn, ty),
                None => self.resume(now, conn, &r.token),
            },
            ClientMessage::Leave(_) => {
                self.close(conn, CloseReason::Left);
                if let Some(key) = session {
                    self.remove_peer(key, LeaveReason::Left);
                }
            }
            _ => {
                let Some(from) = session else {
                    self.send_error(
                        conn,
                        ErrorCode::NotJoined,
                        format!("'{ty}' needs a session: send join (or resume) first"),
                        Some(ty),
                    );
                    return;
                };
                self.relay(now, conn, from, msg);
            }
        }
    }

    fn already_joined(&mut self, conn: ConnId, ty: &str) {
        self.send_error(
            conn,
            ErrorCode::AlreadyJoined,
            "this connection already has a session; send leave, then join on a new connection",
            Some(ty),
        );
    }

    fn join(&mut self, now: Instant, conn: ConnId, j: Join) {
        const REF: Option<&str> = Some("join");
        if let Err(why) = validate_room(&j.room) {
            self.send_error(conn, ErrorCode::InvalidRoom, why, REF);
            return;
        }
        let mut can_publish = true;
        let mut name = j.name;
        if let Some(secret) = &self.config.token_secret {
            let Some(tok) = j.token.as_deref() else {
                self.send_error(
                    conn,
                    ErrorCode::InvalidToken,
                    "this server needs an access token: add \"token\" to join",
                    REF,
                );
                return;
            };
            let claims = match token::verify(&secret.0, tok, self.unix_ms(now) / 1000) {
                Ok(c) => c,
                Err(e) => {
                    self.send_error(conn, ErrorCode::InvalidToken, e.to_string(), REF);
                    return;
                }
            };
            if !claims.admits(&j.room) {
                let message = format!(
                    "the access token is for room '{}', not '{}'",
                    claims.room.chars().take(MAX_ROOM_CHARS).collect::<String>(),
                    j.room
                );
                self.send_error(conn, ErrorCode::InvalidToken, message, REF);
                return;
            }
            can_publish = claims.can_publish();
            if name.is_none() {
                name = Some(claims.sub);
            }
        }
        let name = match validate_name(name.as_deref().unwrap_or_default()) {
            Ok(n) => n,
            Err(why) => {
                self.send_error(conn, ErrorCode::InvalidName, why, REF);
                return;
            }
        };
        let room_exists = self.rooms.contains_key(j.room.as_str());
        if !room_exists && self.rooms.len() >= self.config.max_rooms {
            let message = format!(
                "the server has its maximum of {} rooms; join an existing room or try later",
                self.config.max_rooms
            );
            self.send_error(conn, ErrorCode::TooManyRooms, message, REF);
            return;
        }
        if let Some(r) = self.rooms.get(j.room.as_str()) {
            let max = self.limit(r.policy);
            if r.peers.len() >= max as usize {
                let kind = if self.mesh_only(r.policy) {
                    " in a mesh room"
                } else {
                    ""
                };
                let message = format!(
                    "Room '{}' is full ({max} of {max} peers{kind}); try another room.",
                    j.room
                );
                self.send_error(conn, ErrorCode::RoomFull, message, REF);
                return;
            }
        }
        let Some(id) = self.new_peer_id() else {
            self.send_error(
                conn,
                ErrorCode::ServerBusy,
                "could not allocate a peer id; try again",
                REF,
            );
            return;
        };
        let key = self.next_key;
        self.next_key += 1;
        let room: Arc<str> = match self.rooms.get_key_value(j.room.as_str()) {
            Some((k, _)) => k.clone(),
            None => {
                let room: Arc<str> = j.room.as_str().into();
                self.create_room(&room, j.mode.unwrap_or(self.config.default_mode), 0);
                room
            }
        };
        let resume_token = self.new_resume_token();
        self.peers.insert(
            key,
            Peer {
                id: id.clone(),
                name: name.as_str().into(),
                room: room.clone(),
                conn: Some(conn),
                resume_token: resume_token.clone(),
                grace_until: None,
                queue: VecDeque::new(),
                queued_bytes: 0,
                media: MediaState::default(),
                can_publish,
                sfu: false,
            },
        );
        self.peer_ids.insert(id.clone(), key);
        self.resume_tokens.insert(resume_token, key);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.peers.push(key);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(key);
        }
        // A switch makes the SFU peers of everyone (this one included); in an SFU room
        // only this one needs one. Either way before the welcome that tells the client.
        let switched = self.update_mode(&room);
        if !switched {
            self.sfu_join(key);
        }
        self.stats.joins += 1;
        self.push_event(Event::Joined {
            conn,
            peer: id.clone(),
            room: room.clone(),
        });
        let welcome = ServerMessage::Welcome(self.session(now, key, conn));
        self.send(conn, &welcome);
        let joined: Arc<str> = ServerMessage::PeerJoined(PeerJoined {
            id: id.to_string(),
            name,
        })
        .to_json()
        .into();
        self.broadcast(&room, Some(key), &joined, false);
        if switched {
            // The newcomer learnt the mode from its welcome.
            self.announce_mode(&room, Some(key));
        }
    }

    fn resume(&mut self, now: Instant, conn: ConnId, tok: &str) {
        let Some(&key) = self.resume_tokens.get(tok) else {
            self.send_error(
                conn,
                ErrorCode::ResumeFailed,
                "unknown or expired resume token: the session is over; join again",
                Some("resume"),
            );
            return;
        };
        let fresh = self.new_resume_token();
        let Some(p) = self.peers.get_mut(&key) else {
            // Tokens are removed with their peer; a stale entry is dropped.
            self.resume_tokens.remove(tok);
            return;
        };
        let old_conn = p.conn.replace(conn);
        if let Some(t) = p.grace_until.take() {
            self.timers.remove(&(t, key));
        }
        let old_token = std::mem::replace(&mut p.resume_token, fresh.clone());
        let queued: Vec<Arc<str>> = p.queue.drain(..).collect();
        p.queued_bytes = 0;
        self.resume_tokens.remove(&old_token);
        self.resume_tokens.insert(fresh, key);
        if let Some(old) = old_conn {
            // The client saw its socket drop before the server did.
            self.close(old, CloseReason::Replaced);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(key);
        }
        self.stats.resumes += 1;
        if let Some(p) = self.peers.get(&key) {
            self.push_event(Event::Resumed {
                conn,
                peer: p.id.clone(),
                room: p.room.clone(),
            });
        }
        let resumed = ServerMessage::Resumed(self.session(now, key, conn));
        self.send(conn, &resumed);
        for text in queued {
            self.out.push_back(Output::Send { conn, text });
        }
    }

    fn relay(&mut self, now: Instant, conn: ConnId, from: PeerKey, msg: ClientMessage) {
        let Some(sender) = self.peers.get(&from) else {
            return;
        };
        let (id, name, room) = (sender.id.clone(), sender.name.clone(), sender.room.clone());
        let (can_publish, in_sfu) = (sender.can_publish, sender.sfu);
        let ty = msg.type_name();
        let text: Arc<str> = match msg {
            ClientMessage::Offer(SdpTo { to, sdp }) | ClientMessage::Answer(SdpTo { to, sdp }) => {
                let target = if to == SFU_PEER {
                    if !self.sfu_addressee(conn, in_sfu, &room, ty) {
                        return;
                    }
                    None
                } else {
                    let Some(target) = self.addressee(conn, from, &room, &to, ty) else {
                        return;
                    };
                    Some(target)
                };
                if !can_publish && sdp::sends_media(&sdp) {
                    self.send_error(
                        conn,
                        ErrorCode::Forbidden,
                        format!(
                            "your access token does not allow publishing (canPublish: false); \
                             make every audio/video transceiver recvonly or inactive in the {ty}"
                        ),
                        Some(ty),
                    );
                    return;
                }
                let Some(target) = target else {
                    self.stats.messages_relayed += 1;
                    let req = if ty == "offer" {
                        SfuRequest::Offer { peer: id, sdp }
                    } else {
                        SfuRequest::Answer { peer: id, sdp }
                    };
                    self.out.push_back(Output::Sfu(req));
                    return;
                };
                let body = SdpFrom {
                    from: id.to_string(),
                    sdp,
                };
                let m = if ty == "offer" {
                    ServerMessage::Offer(body)
                } else {
                    ServerMessage::Answer(body)
                };
                self.deliver(target, m.to_json().into(), true);
                return;
            }
            ClientMessage::Candidate(CandidateTo { to, candidate }) if to == SFU_PEER => {
                if self.sfu_addressee(conn, in_sfu, &room, ty) {
                    self.stats.messages_relayed += 1;
                    self.out.push_back(Output::Sfu(SfuRequest::Candidate {
                        peer: id,
                        candidate,
                    }));
                }
                return;
            }
            ClientMessage::View(v) => {
                let max = self.config.max_peers.max(self.config.mesh_max_peers) as usize;
                if v.tiles.len() > max {
                    let message = format!(
                        "view: {} tiles; at most {max} (one per publisher in the room)",
                        v.tiles.len()
                    );
                    self.send_error(conn, ErrorCode::BadMessage, message, Some(ty));
                } else if in_sfu {
                    // In a mesh room a view is ignored: a switch may cross it in flight.
                    self.out.push_back(Output::Sfu(SfuRequest::View {
                        peer: id,
                        tiles: v.tiles,
                    }));
                }
                return;
            }
            ClientMessage::Candidate(CandidateTo { to, candidate }) => {
                let Some(target) = self.addressee(conn, from, &room, &to, ty) else {
                    return;
                };
                let m = ServerMessage::Candidate(CandidateFrom {
                    from: id.to_string(),
                    candidate,
                });
                self.deliver(target, m.to_json().into(), true);
                return;
            }
            ClientMessage::Chat(c) => ServerMessage::Chat(ChatFrom {
                from: id.to_string(),
                name: name.to_string(),
                text: c.text,
                ts: self.unix_ms(now),
            })
            .to_json()
            .into(),
            ClientMessage::Media(m) => {
                if let Some(p) = self.peers.get_mut(&from) {
                    p.media = m;
                }
                ServerMessage::Media(MediaFrom {
                    from: id.to_string(),
                    audio: m.audio,
                    video: m.video,
                    screen: m.screen,
                })
                .to_json()
                .into()
            }
            // Join, resume, ping and leave are handled by `dispatch`.
            _ => return,
        };
        self.broadcast(&room, Some(from), &text, true);
    }

    /// Whether a message `to: "sfu"` may go to the SFU: the sender is in it (its room is
    /// in SFU mode); else `unknown-peer`.
    fn sfu_addressee(&mut self, conn: ConnId, in_sfu: bool, room: &str, ty: &'static str) -> bool {
        if !in_sfu {
            let message = if self.config.sfu {
                format!(
                    "room '{room}' is in mesh mode: there is no \"sfu\" peer; address the other \
                     peers by id (a mode message tells you when the room switches to sfu)"
                )
            } else {
                format!(
                    "room '{room}' is in mesh mode (this server runs no SFU): there is no \
                     \"sfu\" peer; address the other peers by id"
                )
            };
            self.send_error(conn, ErrorCode::UnknownPeer, message, Some(ty));
        }
        in_sfu
    }

    /// The peer named `to` in `room`, other than the sender; else `unknown-peer`.
    fn addressee(
        &mut self,
        conn: ConnId,
        from: PeerKey,
        room: &str,
        to: &str,
        ty: &'static str,
    ) -> Option<PeerKey> {
        let found = self
            .peer_ids
            .get(to)
            .copied()
            .filter(|k| *k != from)
            .filter(|k| self.peers.get(k).is_some_and(|p| &*p.room == room));
        if found.is_none() {
            let shown: String = to.chars().take(32).collect();
            self.send_error(
                conn,
                ErrorCode::UnknownPeer,
                format!("no other peer with id {shown:?} in room '{room}'"),
                Some(ty),
            );
        }
        found
    }

    // ---- output ----

    fn session(&mut self, now: Instant, key: PeerKey, conn: ConnId) -> Session {
        let unix_secs = self.unix_ms(now) / 1000;
        let Some(p) = self.peers.get(&key) else {
            return self.empty_session();
        };
        let peers = self
            .rooms
            .get(&p.room)
            .map(|r| {
                r.peers
                    .iter()
                    .filter(|k| **k != key)
                    .filter_map(|k| self.peers.get(k))
                    .map(|o| PeerInfo {
                        id: o.id.to_string(),
                        name: o.name.to_string(),
                        media: o.media,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (id, room, name, resume_token, can_publish) = (
            p.id.to_string(),
            p.room.to_string(),
            p.name.to_string(),
            p.resume_token.to_string(),
            p.can_publish,
        );
        let (mode, max_peers) = match self.rooms.get(&p.room) {
            Some(r) => (r.mode, self.limit(r.policy)),
            None => (Mode::Mesh, self.limit(RoomMode::Mesh)),
        };
        let ice_servers = self.ice.ice_servers(&IceRequest {
            conn,
            peer_id: &id,
            unix_secs,
        });
        Session {
            id,
            room,
            name,
            peers,
            ice_servers,
            resume_token,
            resume_grace_ms: u64::try_from(self.config.resume_grace.as_millis())
                .unwrap_or(u64::MAX),
            mode,
            max_peers,
            can_publish,
            limits: Limits {
                max_message_bytes: u32::try_from(self.config.max_message_bytes).unwrap_or(u32::MAX),
                messages_per_second: self.config.messages_per_second,
            },
        }
    }

    #[cold]
    fn empty_session(&self) -> Session {
        Session {
            id: String::new(),
            room: String::new(),
            name: String::new(),
            peers: Vec::new(),
            ice_servers: Vec::new(),
            resume_token: String::new(),
            resume_grace_ms: 0,
            mode: Mode::Mesh,
            max_peers: self.limit(RoomMode::Mesh),
            can_publish: false,
            limits: Limits {
                max_message_bytes: 0,
                messages_per_second: 0,
            },
        }
    }

    fn send(&mut self, conn: ConnId, msg: &ServerMessage) {
        self.out.push_back(Output::Send {
            conn,
            text: msg.to_json().into(),
        });
    }

    fn send_error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<String>,
        reference: Option<&str>,
    ) {
        self.stats.errors[code.index()] += 1;
        self.send(conn, &ServerMessage::error(code, message, reference));
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if self.conns.remove(&conn).is_some() {
            self.out.push_back(Output::Close { conn, reason });
        }
    }

    /// To a live peer's connection, or into its grace queue.
    fn deliver(&mut self, to: PeerKey, text: Arc<str>, relayed: bool) {
        let (max_messages, max_bytes) = (self.config.queue_messages, self.config.queue_bytes);
        let Some(p) = self.peers.get_mut(&to) else {
            return;
        };
        if relayed {
            self.stats.messages_relayed += 1;
        }
        match p.conn {
            Some(conn) => self.out.push_back(Output::Send { conn, text }),
            None => {
                if p.queue.len() >= max_messages || p.queued_bytes + text.len() > max_bytes {
                    if !self.overflowed.contains(&to) {
                        self.overflowed.push(to);
                    }
                } else {
                    p.queued_bytes += text.len();
                    p.queue.push_back(text);
                }
            }
        }
    }

    /// [`Hub::deliver`] to the peer with public id `id`, if there is one.
    fn deliver_to_id(&mut self, id: &str, msg: &ServerMessage, relayed: bool) {
        if let Some(&key) = self.peer_ids.get(id) {
            self.deliver(key, msg.to_json().into(), relayed);
        }
    }

    /// An `error` to a peer (queued within its grace period).
    fn deliver_error(
        &mut self,
        key: PeerKey,
        code: ErrorCode,
        message: impl Into<String>,
        reference: Option<&str>,
    ) {
        if !self.peers.contains_key(&key) {
            return;
        }
        self.stats.errors[code.index()] += 1;
        let text = ServerMessage::error(code, message, reference)
            .to_json()
            .into();
        self.deliver(key, text, false);
    }

    /// To every peer of `room` but `except`. `relayed`: counts as relayed messages.
    fn broadcast(&mut self, room: &str, except: Option<PeerKey>, text: &Arc<str>, relayed: bool) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let targets: Vec<PeerKey> = r
            .peers
            .iter()
            .copied()
            .filter(|k| Some(*k) != except)
            .collect();
        for k in targets {
            self.deliver(k, text.clone(), relayed);
        }
    }

    /// Removes a peer from its room and tells the others.
    fn remove_peer(&mut self, key: PeerKey, reason: LeaveReason) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        self.peer_ids.remove(&p.id);
        self.resume_tokens.remove(&p.resume_token);
        if let Some(t) = p.grace_until {
            self.timers.remove(&(t, key));
        }
        if let Some(conn) = p.conn {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.peer = None;
            }
        }
        let idx = match reason {
            LeaveReason::Left => 0,
            LeaveReason::Timeout => 1,
            _ => 2,
        };
        self.stats.leaves[idx] += 1;
        self.push_event(Event::Left {
            peer: p.id.clone(),
            room: p.room.clone(),
            reason,
        });
        if p.sfu {
            self.out.push_back(Output::Sfu(SfuRequest::Leave {
                peer: p.id.clone(),
                linger: false,
            }));
        }
        let empty = match self.rooms.get_mut(&p.room) {
            Some(r) => {
                r.peers.retain(|k| *k != key);
                r.peers.is_empty()
            }
            None => false,
        };
        if empty {
            self.remove_room_if_unused(&p.room);
            return;
        }
        let left: Arc<str> = ServerMessage::PeerLeft(PeerLeft {
            id: p.id.to_string(),
            reason,
        })
        .to_json()
        .into();
        self.broadcast(&p.room, Some(key), &left, false);
        if self.update_mode(&p.room) {
            self.announce_mode(&p.room, None);
        }
    }

    // ---- modes ----

    /// Whether rooms of `policy` are mesh whatever their size (no SFU, or pinned).
    fn mesh_only(&self, policy: RoomMode) -> bool {
        !self.config.sfu || policy == RoomMode::Mesh
    }

    /// The most peers a room of `policy` takes (`welcome.maxPeers`).
    fn limit(&self, policy: RoomMode) -> u32 {
        if self.mesh_only(policy) {
            self.config.mesh_max_peers.max(1)
        } else {
            self.config.max_peers.max(1)
        }
    }

    /// The mode a room of `policy` with `peers` browser peers and `whip` WHIP
    /// publishers should be in, now in mode `current` (`docs/sfu.md`, Modes and
    /// switching).
    fn desired_mode(&self, policy: RoomMode, peers: usize, whip: u32, current: Mode) -> Mode {
        if !self.config.sfu {
            return Mode::Mesh;
        }
        if whip > 0 {
            return Mode::Sfu;
        }
        let mesh_max = self.config.mesh_max_peers as usize;
        match policy {
            RoomMode::Mesh => Mode::Mesh,
            RoomMode::Sfu => Mode::Sfu,
            RoomMode::Auto if peers > mesh_max => Mode::Sfu,
            // One peer of hysteresis: back to mesh only at mesh_max - 1 or fewer.
            RoomMode::Auto if peers < mesh_max => Mode::Mesh,
            RoomMode::Auto => current,
        }
    }

    /// A new room without peers, in the mode its policy gives its first peer.
    fn create_room(&mut self, name: &Arc<str>, policy: RoomMode, whip: u32) {
        let r = Room {
            peers: Vec::new(),
            policy,
            mode: self.desired_mode(policy, 1, whip, Mode::Mesh),
            whip,
        };
        if r.mode == Mode::Sfu {
            self.sfu_rooms += 1;
        }
        self.rooms.insert(name.clone(), r);
    }

    /// Forgets `room` if it has neither peers nor WHIP publishers.
    fn remove_room_if_unused(&mut self, room: &str) {
        let unused = self
            .rooms
            .get(room)
            .is_some_and(|r| r.peers.is_empty() && r.whip == 0);
        if unused {
            if let Some(r) = self.rooms.remove(room) {
                if r.mode == Mode::Sfu {
                    self.sfu_rooms = self.sfu_rooms.saturating_sub(1);
                }
            }
        }
    }

    /// Puts `room` in the mode it should be in. On a switch: the SFU requests for
    /// every peer (`Join`, or `Leave` with linger); the caller then announces the mode
    /// ([`Hub::announce_mode`]). Returns whether it switched.
    fn update_mode(&mut self, room: &str) -> bool {
        let Some(r) = self.rooms.get(room) else {
            return false;
        };
        let want = self.desired_mode(r.policy, r.peers.len(), r.whip, r.mode);
        if want == r.mode {
            return false;
        }
        let peers = r.peers.clone();
        if let Some((name, _)) = self.rooms.get_key_value(room) {
            let room = name.clone();
            self.push_event(Event::ModeChanged { room, mode: want });
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.mode = want;
        }
        match want {
            Mode::Sfu => {
                self.sfu_rooms += 1;
                self.stats.switches_to_sfu += 1;
                for k in peers {
                    self.sfu_join(k);
                }
            }
            _ => {
                self.sfu_rooms = self.sfu_rooms.saturating_sub(1);
                self.stats.switches_to_mesh += 1;
                for k in peers {
                    if let Some(p) = self.peers.get_mut(&k) {
                        if std::mem::take(&mut p.sfu) {
                            let peer = p.id.clone();
                            self.out
                                .push_back(Output::Sfu(SfuRequest::Leave { peer, linger: true }));
                        }
                    }
                }
            }
        }
        true
    }

    /// `mode` to every peer of `room` but `except`.
    fn announce_mode(&mut self, room: &str, except: Option<PeerKey>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let text = ServerMessage::Mode(ModeChange { mode: r.mode })
            .to_json()
            .into();
        self.broadcast(room, except, &text, false);
    }

    /// The SFU peer of `key`, if its room is in SFU mode and it has none yet.
    fn sfu_join(&mut self, key: PeerKey) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let in_sfu_room = self.rooms.get(&p.room).is_some_and(|r| r.mode == Mode::Sfu);
        if p.sfu || !in_sfu_room {
            return;
        }
        let req = SfuRequest::Join {
            room: p.room.clone(),
            peer: p.id.clone(),
            can_publish: p.can_publish,
        };
        if let Some(p) = self.peers.get_mut(&key) {
            p.sfu = true;
        }
        self.out.push_back(Output::Sfu(req));
    }

    /// [`SfuReply::External`]: WHIP publishers in `room`.
    fn external(&mut self, room: &str, publishers: u32) {
        if !self.config.sfu || validate_room(room).is_err() {
            return;
        }
        if !self.rooms.contains_key(room) {
            if publishers == 0 || self.rooms.len() >= self.config.max_rooms {
                // Nothing to remember, or no room for it (bounded by max_rooms).
                return;
            }
            self.create_room(&Arc::from(room), self.config.default_mode, publishers);
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.whip = publishers;
        }
        if self.update_mode(room) {
            self.announce_mode(room, None);
        }
        self.remove_room_if_unused(room);
    }

    /// Peers whose grace queue overflowed leave now (`timeout`): they could not be
    /// resumed without losing messages. Removing one may overflow another.
    fn remove_overflowed(&mut self) {
        while let Some(key) = self.overflowed.pop() {
            self.remove_peer(key, LeaveReason::Timeout);
        }
    }

    /// Queues a session event; a runtime that never drains them loses the oldest
    /// beyond [`MAX_EVENTS`] instead of growing the queue.
    fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    // ---- ids and time ----

    fn unix_ms(&self, now: Instant) -> u64 {
        let (t0, ms0) = self.epoch;
        match now.checked_duration_since(t0) {
            Some(d) => ms0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => ms0.saturating_sub(
                u64::try_from(t0.saturating_duration_since(now).as_millis()).unwrap_or(0),
            ),
        }
    }

    /// `p_` and 12 hex digits (48 bits), unique among current peers.
    fn new_peer_id(&mut self) -> Option<Arc<str>> {
        for _ in 0..8 {
            let bytes = self.prf.next();
            let id = format!("p_{}", hex::encode(&bytes[..6]));
            if !self.peer_ids.contains_key(id.as_str()) {
                return Some(id.into());
            }
        }
        None
    }

    /// `r_` and 32 base64url characters (192 bits).
    fn new_resume_token(&mut self) -> Arc<str> {
        let bytes = self.prf.next();
        format!("r_{}", URL_SAFE_NO_PAD.encode(&bytes[..24])).into()
    }
}

/// A room name: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn validate_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > MAX_ROOM_CHARS {
        return Err(format!(
            "a room name has 1 to {MAX_ROOM_CHARS} characters; this one has {}",
            room.chars().count()
        ));
    }
    if let Some(bad) = room
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "a room name may contain only letters A-Z a-z, digits, '_' and '-', not {bad:?}"
        ));
    }
    Ok(())
}

/// A display name: trimmed, 1–64 characters, no control characters. Returns it trimmed.
pub fn validate_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("a display name is needed: add \"name\" to join".to_owned());
    }
    let n = name.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(format!(
            "a display name has at most {MAX_NAME_CHARS} characters; this one has {n}"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a display name may not contain control characters".to_owned());
    }
    Ok(name.to_owned())
}
