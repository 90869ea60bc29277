//! Sans-IO signaling for tsunagi: the protocol of `docs/signaling.md` (version 1) and
//! the room state machine behind it.
//!
//! * [`protocol`]: serde types for every client and server message, and
//!   [`parse_client_message`], which tells `bad-message` from `unknown-type`.
//! * [`Hub`]: connections, rooms, peers, resume tokens and grace periods, queues and
//!   limits, and each room's mode (mesh or SFU, `docs/sfu.md`). No sockets, no tokio,
//!   no clock, no OS randomness: time comes in as `now`, randomness as a seed, ICE
//!   servers from an [`IceServerSource`] the runtime supplies.
//! * [`sfu`]: what the hub asks of the SFU runtime ([`SfuRequest`]) and what it
//!   answers ([`SfuReply`]).
//! * [`token`]: HS256 access tokens (sign and verify).
//! * [`sdp::sends_media`]: whether an offer or answer would send audio or video (for
//!   `canPublish: false`).
//!
//! # Driving a [`Hub`]
//!
//! Feed it every event with the current time, then drain [`Hub::poll_output`] until it
//! returns `None`, then sleep until [`Hub::poll_timeout`] (or the next event) and call
//! [`Hub::handle_timeout`]. The runtime numbers connections with [`ConnId`]s it never
//! reuses, calls [`Hub::handle_open`] when a WebSocket is accepted, and calls
//! [`Hub::handle_close`] exactly once when it ends, also after the hub asked for the
//! close. With an SFU ([`HubConfig::sfu`]) it hands every [`Output::Sfu`] to the SFU
//! runtime (in order; [`Hub::handle_sfu_dropped`] when its queue is full) and feeds
//! each [`SfuReply`] to [`Hub::handle_sfu`].
//!
//! ```no_run
//! use std::time::{Instant, SystemTime, UNIX_EPOCH};
//! use tsunagi_signal::{ConnId, Disconnect, Hub, HubConfig, NoIceServers, Output, SfuReply, SfuRequest};
//!
//! enum Event { Open(ConnId), Text(ConnId, String), Closed(ConnId, Disconnect), Sfu(SfuReply), Tick }
//! # fn next_event(_deadline: Option<Instant>) -> Event { Event::Tick }
//! # fn send_text(_c: ConnId, _t: &str) {}
//! # fn close_socket(_c: ConnId, _code: u16, _reason: &str) {}
//! # fn to_sfu(_r: &SfuRequest) -> bool { true }
//!
//! let seed = [7u8; 32]; // 32 bytes from the OS in a real runtime
//! let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
//! let mut hub = Hub::new(HubConfig::default(), NoIceServers, seed, Instant::now(), unix_ms);
//! loop {
//!     let now = Instant::now();
//!     match next_event(hub.poll_timeout()) {
//!         Event::Open(c) => hub.handle_open(now, c),
//!         Event::Text(c, text) => hub.handle_text(now, c, &text),
//!         Event::Closed(c, how) => hub.handle_close(now, c, how),
//!         Event::Sfu(reply) => hub.handle_sfu(now, reply),
//!         Event::Tick => hub.handle_timeout(now),
//!     }
//!     while let Some(out) = hub.poll_output() {
//!         match out {
//!             Output::Send { conn, text } => send_text(conn, &text),
//!             Output::Close { conn, reason } => close_socket(conn, reason.code(), reason.text()),
//!             // A bounded queue to the SFU runtime; when it is full:
//!             Output::Sfu(req) => {
//!                 if !to_sfu(&req) {
//!                     hub.handle_sfu_dropped(now, &req);
//!                 }
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! # Panic policy
//!
//! No input panics: every frame, of any size or content, ends in a message, an error or
//! nothing. The only `expect`s are on HMAC key setup, which accepts keys of any length.
//!
//! # Bounds
//!
//! Connections ([`HubConfig::max_connections`]), rooms, peers per room, the grace queue
//! of each peer (messages and bytes) and frame sizes are bounded; the output queue
//! holds only what the last input produced (at most one message per peer of a room,
//! plus a grace queue on resume, plus one SFU request per peer of a room on a switch). Maps keyed by client-chosen strings (peer ids,
//! resume tokens, rooms) use a hasher keyed by the seed.
#![forbid(unsafe_code)]

mod hub;
pub mod protocol;
mod rate;
pub mod sdp;
pub mod sfu;
pub mod token;

pub use hub::{
    validate_name, validate_room, CloseReason, ConnId, Disconnect, Event, Hub, HubConfig,
    IceRequest, IceServerSource, NoIceServers, Output, Stats, TokenSecret, MAX_NAME_CHARS,
    MAX_ROOM_CHARS,
};
pub use protocol::{
    parse_client_message, ClientMessage, ErrorCode, IceServer, LeaveReason, MediaState, Mode,
    ParseError, Rejoin, RejoinReason, RoomMode, ServerMessage, Tile, PROTOCOL_VERSION, SFU_PEER,
};
pub use rate::{FloodDetector, TokenBucket};
pub use sfu::{SfuReply, SfuRequest};

#[cfg(test)]
mod tests;
