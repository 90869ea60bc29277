//! The room state machine: connections, rooms, peers, resume tokens, grace timers and
//! limits. See the crate documentation for how to drive it. This file holds the [`Hub`],
//! its state and inputs and message dispatch; [`types`] its configuration and outputs,
//! [`outbox`] sends and queues, [`ids`] seed-keyed ids and hashing, [`names`] room and
//! display name rules, [`session`] joins, resumes and leaves, [`relay`] carries messages
//! between peers, [`modes`] runs room modes and the SFU link, [`evict`] what a cluster
//! runtime asks of it (its rooms and sessions, and moving a room away).

mod evict;
mod ids;
mod modes;
mod names;
mod outbox;
mod relay;
mod session;
mod types;

use ids::{hasher, map, Map, Prf};
pub use names::{validate_name, validate_room, MAX_NAME_CHARS, MAX_ROOM_CHARS};
pub use types::{
    CloseReason, ConnId, Disconnect, Event, HubConfig, IceRequest, IceServerSource, NoIceServers,
    Output, Stats, TokenSecret,
};

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{
    parse_client_message, CandidateFrom, CandidateTo, ChatFrom, ClientMessage, ErrorCode,
    IceServer, Join, LeaveReason, Limits, MediaFrom, MediaState, Mode, ModeChange, PeerInfo,
    PeerJoined, PeerLeft, Pong, Rejoin, RejoinReason, RoomMode, SdpFrom, SdpTo, ServerMessage,
    Session, SfuStats, Speaker, SFU_PEER,
};
use crate::rate::{FloodDetector, TokenBucket};
use crate::sfu::{SfuReply, SfuRequest};
use crate::{sdp, token};

/// Session events kept for [`Hub::poll_event`].
const MAX_EVENTS: usize = 4096;

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
    /// When its room last switched to mesh while it had an SFU peer (which lingers in
    /// the SFU): an answer or candidate to `"sfu"` sent before the peer read `mode` is
    /// still delivered for [`SFU_LATE_GRACE`] after ([`Hub::relay`]).
    sfu_left: Option<Instant>,
}

/// How long after a switch to mesh a peer's `answer` or `candidate` to `"sfu"` still
/// goes to its lingering SFU session rather than getting `unknown-peer`: messages
/// already on their way when the switch happened (docs/sfu.md, rules 2 and 6). Shorter
/// than the runtime keeps the session.
pub const SFU_LATE_GRACE: Duration = Duration::from_secs(10);

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
        self.remove_overflowed(now);
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
            Disconnect::Clean => self.remove_peer(now, key, LeaveReason::Left),
            Disconnect::Overflow => {
                self.stats.errors[ErrorCode::ServerBusy.index()] += 1;
                self.remove_peer(now, key, LeaveReason::Kicked);
            }
            Disconnect::Lost if self.config.resume_grace.is_zero() => {
                self.remove_peer(now, key, LeaveReason::Timeout)
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
        self.remove_overflowed(now);
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
                self.remove_peer(now, key, LeaveReason::Timeout);
            }
        }
        self.remove_overflowed(now);
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
                self.remove_peer(now, key, LeaveReason::Kicked);
                self.remove_overflowed(now);
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
                    self.remove_peer(now, key, LeaveReason::Left);
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
}
