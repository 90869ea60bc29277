//! The room state machine: connections, rooms, peers, resume tokens, grace timers and
//! limits. See the crate documentation for how to drive it. This file holds the [`Hub`],
//! its inputs and outputs and message dispatch; [`session`] joins, resumes and leaves,
//! [`relay`] carries messages between peers, [`modes`] runs room modes and the SFU link.

mod modes;
mod relay;
mod session;

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

/// The hasher of the maps keyed by client-chosen strings: keyed by the runtime's seed
/// (domain-separated from peer ids and tokens), so the hub takes no OS randomness and
/// an attacker cannot predict collisions.
fn hasher(seed: &[u8; 32]) -> ahash::RandomState {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(seed)
        .expect("HMAC takes keys of any length (RFC 2104 §2)");
    m.update(b"tsunagi-signal map hasher");
    let k: [u8; 32] = m.finalize().into_bytes().into();
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&k[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    ahash::RandomState::with_seeds(word(0), word(1), word(2), word(3))
}

fn map<K, V>(hasher: &ahash::RandomState) -> Map<K, V> {
    HashMap::with_hasher(hasher.clone())
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
        let h = hasher(&seed);
        Hub {
            config,
            ice,
            prf: Prf {
                key: seed,
                counter: 0,
            },
            epoch: (now, unix_ms),
            conns: map(&h),
            peers: map(&h),
            peer_ids: map(&h),
            rooms: map(&h),
            resume_tokens: map(&h),
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
                bucket: TokenBucket::new(now, u64::from(rate), u64::from(rate).saturating_mul(2)),
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
