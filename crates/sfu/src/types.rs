//! The public vocabulary of the SFU: configuration, roles, events, transmits, errors.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Configuration of an [`Sfu`](crate::Sfu). Every table it keeps is bounded by these numbers
/// or by the constants in [`limits`](crate::limits).
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Host candidates advertised in every SDP (the runtime's one UDP socket per IP).
    pub udp_candidates: Vec<SocketAddr>,
    /// Passive ICE-TCP candidates (RFC 6544; the runtime frames with RFC 4571 2-byte lengths).
    pub tcp_candidates: Vec<SocketAddr>,
    /// Rooms at most (default 1000).
    pub max_rooms: usize,
    /// Peers in one room at most (default 50).
    pub max_peers_per_room: usize,
    /// Peers in the whole SFU at most (default 2000).
    pub max_peers: usize,
    /// Minimum gap between keyframe requests sent to one publisher layer (default 500 ms).
    pub keyframe_request_interval: Duration,
    /// How often [`SfuEvent::Stats`] is produced per peer (default 2 s).
    pub stats_interval: Duration,
    /// Initial send-bandwidth estimate per subscriber in bit/s (default 1 000 000).
    pub initial_bitrate: u64,
    /// Forward RTP packets as they come (str0m's RTP mode; default true); false: whole
    /// frames, each depacketized and packetized again per subscriber (str0m's frame
    /// mode).
    pub rtp_mode: bool,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            udp_candidates: Vec::new(),
            tcp_candidates: Vec::new(),
            max_rooms: 1000,
            max_peers_per_room: 50,
            max_peers: 2000,
            keyframe_request_interval: Duration::from_millis(500),
            stats_interval: Duration::from_secs(2),
            initial_bitrate: 1_000_000,
            rtp_mode: true,
        }
    }
}

/// What a peer does in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A signaling participant: receives every other publisher's tracks, and publishes its
    /// own when `can_publish` (otherwise its offered send directions are answered as
    /// receive-only / inactive and its media is ignored).
    Participant {
        /// Whether the peer may send media into the room.
        can_publish: bool,
    },
    /// A WHIP ingest: publishes only.
    WhipPublisher,
    /// A WHEP player: its receive-only m-lines are bound to the tracks of
    /// [`Sfu::room_publisher`](crate::Sfu::room_publisher). It is never sent an offer.
    WhepViewer,
}

impl Role {
    /// Whether media from this peer is forwarded.
    pub fn can_publish(self) -> bool {
        match self {
            Role::Participant { can_publish } => can_publish,
            Role::WhipPublisher => true,
            Role::WhepViewer => false,
        }
    }
}

/// Transport of a datagram or frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// One UDP datagram.
    Udp,
    /// One RFC 4571 frame of an ICE-TCP connection (without the 2-byte length).
    Tcp,
}

/// One remote tile as a subscriber shows it (device pixels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    /// The publisher shown in this tile.
    pub peer: String,
    /// Width in device pixels (0 = not visible).
    pub width: u32,
    /// Height in device pixels (0 = not visible).
    pub height: u32,
}

/// A datagram (UDP) or a frame to send on a TCP connection (the runtime adds the RFC 4571
/// length prefix and picks the connection by `source`/`destination`).
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// UDP or ICE-TCP.
    pub proto: Protocol,
    /// Our local address (one of the configured candidates).
    pub source: SocketAddr,
    /// The remote address.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("proto", &self.proto)
            .field("source", &self.source)
            .field("destination", &self.destination)
            .field("len", &self.contents.len())
            .finish()
    }
}

/// A simulcast layer as a subscriber receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// rid `h`: full resolution.
    High,
    /// rid `m`: half resolution.
    Medium,
    /// rid `l`: quarter resolution.
    Low,
    /// Not visible: nothing is forwarded.
    Paused,
    /// A publisher without simulcast.
    Single,
}

impl Layer {
    /// The name used in `sfu-stats` messages: `"h"`, `"m"`, `"l"`, `"paused"`, `"single"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::High => "h",
            Layer::Medium => "m",
            Layer::Low => "l",
            Layer::Paused => "paused",
            Layer::Single => "single",
        }
    }

    /// Order for comparisons: paused < low < medium < high (single sits with medium).
    pub(crate) fn rank(self) -> u8 {
        match self {
            Layer::Paused => 0,
            Layer::Low => 1,
            Layer::Medium | Layer::Single => 2,
            Layer::High => 3,
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the runtime must deliver or log.
#[derive(Debug, Clone, PartialEq)]
pub enum SfuEvent {
    /// An SDP offer from the SFU to `peer` (renegotiation: tracks added or removed).
    /// Deliver over signaling; the peer's answer goes to
    /// [`Sfu::accept_answer`](crate::Sfu::accept_answer).
    Offer {
        /// The receiving peer.
        peer: String,
        /// The offer.
        sdp: String,
    },
    /// The active speaker of `room` changed (at most 2 per second per room).
    Speaker {
        /// The room.
        room: String,
        /// The loudest peer.
        peer: String,
    },
    /// Every `stats_interval` per connected peer.
    Stats {
        /// The subscriber.
        peer: String,
        /// The send-bandwidth estimate towards this peer (bit/s), once there is one.
        bitrate: Option<u64>,
        /// For each video track it receives: the publisher and the layer it gets.
        layers: Vec<(String, Layer)>,
        /// Round-trip time when known.
        rtt_ms: Option<f64>,
    },
    /// ICE and DTLS are up for this peer (first time).
    Connected {
        /// The peer.
        peer: String,
    },
    /// The peer is gone from the SFU (ICE timeout, the remote closed, or a contained fault).
    Closed {
        /// The peer.
        peer: String,
        /// Why, for logs and clients.
        reason: String,
    },
}

/// Counters since start and current gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Rooms now.
    pub rooms: u64,
    /// Peers now.
    pub peers: u64,
    /// Peers that publish at least one track now.
    pub publishers: u64,
    /// Forwarded tracks now (one per subscriber and publisher track).
    pub subscriptions: u64,
    /// Datagrams/frames accepted by a peer.
    pub packets_in: u64,
    /// Datagrams/frames produced.
    pub packets_out: u64,
    /// Bytes accepted by a peer.
    pub bytes_in: u64,
    /// Bytes produced.
    pub bytes_out: u64,
    /// Frames and audio samples written to subscribers.
    pub media_forwarded: u64,
    /// Keyframe requests (PLI/FIR) sent to publishers.
    pub keyframe_requests: u64,
    /// NACKs received from subscribers (str0m resends from its send buffers).
    pub nacks_received: u64,
    /// Simulcast layer changes made at a keyframe.
    pub layer_switches: u64,
    /// RTP mode: gaps in a publisher's video not repaired in time (each asks for a
    /// keyframe, see [`crate::gaps`]).
    pub upstream_gaps: u64,
    /// Peers dropped because str0m panicked or returned an error.
    pub faults: u64,
    /// Datagrams no peer accepted.
    pub demux_misses: u64,
    /// Data-channel messages relayed (counted once per receiver).
    pub messages_relayed: u64,
    /// Transmits, events or internal work dropped because a bounded queue was full.
    pub queue_drops: u64,
}

/// Why an API call failed. `Display` gives a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuError {
    /// No peer with this id is in the SFU.
    UnknownPeer,
    /// A peer with this id is already in the SFU.
    Exists,
    /// A limit was reached (which one is in the message).
    Full(String),
    /// The SDP could not be parsed or was refused.
    BadSdp(String),
    /// The ICE candidate could not be parsed.
    BadCandidate(String),
    /// An answer arrived while the SFU has no offer outstanding to this peer.
    NoPendingOffer,
    /// A peer or room id is empty or too long.
    BadId(String),
    /// The configuration cannot work (e.g. no usable candidate address).
    Config(String),
    /// The peer was dropped while handling the call (str0m panicked or errored).
    Fault(String),
}

impl fmt::Display for SfuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SfuError::UnknownPeer => {
                f.write_str("unknown peer: it never joined the SFU or has left")
            }
            SfuError::Exists => f.write_str("a peer with this id is already in the SFU"),
            SfuError::Full(what) => write!(f, "SFU full: {what}"),
            SfuError::BadSdp(why) => write!(f, "bad SDP: {why}"),
            SfuError::BadCandidate(why) => write!(f, "bad ICE candidate: {why}"),
            SfuError::NoPendingOffer => f.write_str(
                "answer without a pending offer from the SFU (stale or duplicate answer)",
            ),
            SfuError::BadId(why) => write!(f, "bad id: {why}"),
            SfuError::Config(why) => write!(f, "SFU configuration: {why}"),
            SfuError::Fault(why) => write!(f, "peer dropped after an internal fault: {why}"),
        }
    }
}

impl std::error::Error for SfuError {}
