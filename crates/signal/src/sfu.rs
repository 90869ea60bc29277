//! The interface between the room rules ([`Hub`](crate::Hub)) and the SFU runtime
//! (`crates/tsunagi/src/sfu_runtime/`), as `docs/sfu.md` describes it.
//!
//! The hub emits [`SfuRequest`]s as [`Output::Sfu`](crate::Output::Sfu), in order with
//! the messages it sends to clients; the runtime answers with [`SfuReply`]s through
//! [`Hub::handle_sfu`](crate::Hub::handle_sfu). Peers are named by their signaling peer
//! id. Invariants the runtime can rely on:
//!
//! * Every peer of a room in SFU mode has had exactly one `Join` since it last left
//!   the SFU (by `Leave`). A peer within its resume grace period stays in the SFU, and a
//!   resumed peer keeps its SFU peer (no new `Join`).
//! * `Leave { linger: true }` follows a switch of the room to mesh; a later switch back
//!   may send `Join` for a peer the runtime still keeps lingering (revive or replace it).
//! * `Leave { linger: false }` is sent once when a peer that is in the SFU leaves the
//!   room (left, timeout, kicked, server shutdown).
//! * `Offer`, `Answer`, `Candidate` and `View` come only from peers in the SFU.
//! * A request the runtime could not queue is lost (the hub tells the peer
//!   `server-busy`, see [`Hub::handle_sfu_dropped`](crate::Hub::handle_sfu_dropped)):
//!   so the runtime ignores a `Leave`, `Offer`, ... for a peer it does not know, and
//!   answers such an `Offer` with [`SfuReply::Error`].

use std::sync::Arc;

use serde_json::Value;

pub use crate::protocol::Tile;

/// From the hub to the SFU runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuRequest {
    /// Create the SFU peer for `peer` in `room` (on a switch to SFU, or a join/resume into an SFU room).
    Join {
        room: Arc<str>,
        peer: Arc<str>,
        can_publish: bool,
    },
    /// Remove the SFU peer. `linger`: true when the room switched to mesh (the runtime keeps it ~10 s so media continues while the mesh comes up); false when the peer left the room.
    Leave { peer: Arc<str>, linger: bool },
    /// The client's SDP offer (`{"type":"offer","to":"sfu",...}`).
    Offer { peer: Arc<str>, sdp: String },
    /// The client's SDP answer to an offer of the SFU.
    Answer { peer: Arc<str>, sdp: String },
    /// The RTCIceCandidate JSON as the client sent it (`null` = end of candidates).
    Candidate { peer: Arc<str>, candidate: Value },
    /// The tile sizes of `peer`'s `view` (at most the room limit of tiles, each side at
    /// most [`MAX_TILE_PIXELS`](crate::protocol::MAX_TILE_PIXELS)).
    View { peer: Arc<str>, tiles: Vec<Tile> },
}

impl SfuRequest {
    /// The peer the request is about.
    pub fn peer(&self) -> &Arc<str> {
        match self {
            SfuRequest::Join { peer, .. }
            | SfuRequest::Leave { peer, .. }
            | SfuRequest::Offer { peer, .. }
            | SfuRequest::Answer { peer, .. }
            | SfuRequest::Candidate { peer, .. }
            | SfuRequest::View { peer, .. } => peer,
        }
    }

    /// A short name for logs and errors: `join`, `leave`, `offer`, `answer`,
    /// `candidate`, `view`.
    pub fn kind(&self) -> &'static str {
        match self {
            SfuRequest::Join { .. } => "join",
            SfuRequest::Leave { .. } => "leave",
            SfuRequest::Offer { .. } => "offer",
            SfuRequest::Answer { .. } => "answer",
            SfuRequest::Candidate { .. } => "candidate",
            SfuRequest::View { .. } => "view",
        }
    }
}

/// From the SFU runtime to the hub ([`Hub::handle_sfu`](crate::Hub::handle_sfu)).
/// Replies about peers the hub does not know (any more) are ignored; replies to a peer
/// within its resume grace period are queued like other messages.
#[derive(Debug, Clone, PartialEq)]
pub enum SfuReply {
    /// → `{"type":"offer","from":"sfu","sdp":..}` to that peer.
    Offer { peer: String, sdp: String },
    /// → `{"type":"answer","from":"sfu","sdp":..}` to that peer.
    Answer { peer: String, sdp: String },
    /// → `{"type":"speaker","id":..}` to every peer of the room.
    Speaker { room: String, peer: String },
    /// → `{"type":"sfu-stats",...}` to that peer. `layers`: publisher id and layer
    /// (`h`, `m`, `l`, `paused`, `single`).
    Stats {
        peer: String,
        bitrate: Option<u64>,
        layers: Vec<(String, String)>,
        rtt: Option<f64>,
    },
    /// The SFU refused or dropped this peer's media session; → `{"type":"error","code":"sfu-error","message":..}`.
    Error { peer: String, message: String },
    /// WHIP publishers and WHEP viewers present in `room` (0 when the last one left). While > 0 the room runs as SFU (auto rooms switch; a room with no browser peers is remembered only while count > 0, bounded by max_rooms).
    External { room: String, publishers: u32 },
}
