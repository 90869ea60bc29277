//! The hub's public types: its configuration, connection ids, the ICE server source,
//! disconnects and close reasons, outputs, session events and counters.

use super::*;

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
    /// After `rejoin` ([`Hub::evict_room`]): the room is run elsewhere now.
    Rejoin,
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
            CloseReason::Rejoin => 4001,
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
            CloseReason::Rejoin => "join again: the room moved",
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
    /// Every peer of the room was told to join again elsewhere ([`Hub::evict_room`]).
    Evicted {
        room: Arc<str>,
        peers: usize,
        reason: RejoinReason,
    },
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
    /// Peers told to join again on another node ([`Hub::evict_room`]).
    pub evicted: u64,
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
