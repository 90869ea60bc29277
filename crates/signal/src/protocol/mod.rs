//! The wire format of signaling protocol version 1 (`docs/signaling.md`): one JSON object
//! per WebSocket text frame, internally tagged on `type`, camelCase fields.
//!
//! Parsing is two-step so that the two failure kinds get their own codes: the text is
//! first read as a JSON value and its `type` checked against the known names
//! ([`ErrorCode::UnknownType`]), and only then converted into the typed
//! [`ClientMessage`] ([`ErrorCode::BadMessage`] for a missing or mistyped field).
//! Unknown fields are ignored everywhere (forward compatibility).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest chat text, in characters (Unicode scalar values).
pub const MAX_CHAT_CHARS: usize = 2000;

/// Longest `type` string quoted back in an `unknown-type` error.
const MAX_QUOTED_TYPE: usize = 32;

/// Largest tile width or height in a `view`, in device pixels.
pub const MAX_TILE_PIXELS: u32 = 16_384;

/// Longest `peer` of a `view` tile, in characters (peer ids and WHIP stream ids are
/// much shorter).
pub const MAX_TILE_PEER_CHARS: usize = 128;

/// The pseudo-peer id of the SFU: `to` of client messages for it, `from` of its own.
/// Never a real peer's id (those start with `p_`).
pub const SFU_PEER: &str = "sfu";

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ClientMessage {
    Join(Join),
    Resume(Resume),
    Offer(SdpTo),
    Answer(SdpTo),
    Candidate(CandidateTo),
    Chat(Chat),
    Media(MediaState),
    Ping(Ping),
    Leave(Leave),
    View(View),
}

impl ClientMessage {
    /// The `type` of every client message, as on the wire.
    pub const TYPES: [&'static str; 10] = [
        "join",
        "resume",
        "offer",
        "answer",
        "candidate",
        "chat",
        "media",
        "ping",
        "leave",
        "view",
    ];

    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join(_) => "join",
            ClientMessage::Resume(_) => "resume",
            ClientMessage::Offer(_) => "offer",
            ClientMessage::Answer(_) => "answer",
            ClientMessage::Candidate(_) => "candidate",
            ClientMessage::Chat(_) => "chat",
            ClientMessage::Media(_) => "media",
            ClientMessage::Ping(_) => "ping",
            ClientMessage::Leave(_) => "leave",
            ClientMessage::View(_) => "view",
        }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// `join`: enter a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    pub room: String,
    /// Optional when an access token supplies `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The room's policy; honoured only when this join creates the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RoomMode>,
}

/// A room's policy: which [`Mode`] it runs in (`docs/sfu.md`, Modes and switching).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomMode {
    /// Mesh while small, SFU past the mesh limit (with one peer of hysteresis).
    #[default]
    Auto,
    /// Always mesh; full at the mesh limit.
    Mesh,
    /// Always SFU.
    Sfu,
}

impl RoomMode {
    /// As on the wire and in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Auto => "auto",
            RoomMode::Mesh => "mesh",
            RoomMode::Sfu => "sfu",
        }
    }
}

impl fmt::Display for RoomMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RoomMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(RoomMode::Auto),
            "mesh" => Ok(RoomMode::Mesh),
            "sfu" => Ok(RoomMode::Sfu),
            other => Err(format!(
                "'{}' is not a room mode; use auto, mesh or sfu",
                other.chars().take(32).collect::<String>()
            )),
        }
    }
}

/// `resume`: take over a session whose WebSocket dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resume {
    pub token: String,
}

/// `offer` / `answer` from a client, addressed to one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SdpTo {
    pub to: String,
    pub sdp: String,
}

/// `candidate` from a client. `candidate` is the `RTCIceCandidate.toJSON()` object,
/// passed through unchanged, or `null` for end-of-candidates. The field must be present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateTo {
    pub to: String,
    pub candidate: Value,
}

/// `chat` from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    pub text: String,
}

/// A peer's mute / camera / screen-share state (`media`). A missing flag is `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaState {
    #[serde(default)]
    pub audio: bool,
    #[serde(default)]
    pub video: bool,
    #[serde(default)]
    pub screen: bool,
}

impl Default for MediaState {
    /// What `welcome` reports for a peer that has not sent `media`: microphone and
    /// camera on, no screen share (what a newly joined call client sends).
    fn default() -> Self {
        MediaState {
            audio: true,
            video: true,
            screen: false,
        }
    }
}

/// `ping`: `id` is any JSON value (`null` when absent), echoed in `pong`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ping {
    #[serde(default)]
    pub id: Value,
}

/// `leave`: no fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Leave {}

/// `view`: the size each remote tile is shown at (SFU rooms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub tiles: Vec<Tile>,
}

/// One tile of a `view`: a publisher (peer id or WHIP stream id) and its size in CSS
/// pixels × devicePixelRatio. Width or height 0: not visible.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tile {
    pub peer: String,
    pub width: u32,
    pub height: u32,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ServerMessage {
    Welcome(Session),
    /// Same fields as `welcome`; queued messages follow it.
    Resumed(Session),
    PeerJoined(PeerJoined),
    PeerLeft(PeerLeft),
    Offer(SdpFrom),
    Answer(SdpFrom),
    Candidate(CandidateFrom),
    Chat(ChatFrom),
    Media(MediaFrom),
    Pong(Pong),
    Error(ErrorMessage),
    /// The room switched mode.
    Mode(ModeChange),
    /// The active speaker changed.
    Speaker(Speaker),
    /// The SFU's view of this subscriber.
    SfuStats(SfuStats),
    /// The session is over on this server node: join the same room again (at `url`
    /// when given). Sent before the server closes the WebSocket (4001).
    Rejoin(Rejoin),
}

/// `rejoin`: why the session ended and where to join again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejoin {
    pub reason: RejoinReason,
    /// A signaling URL to join at instead of the one in use (another node of the
    /// cluster), when the current one is going away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Why a `rejoin` was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RejoinReason {
    /// The cluster node that ran the room stopped answering.
    NodeFailed,
    /// The node that ran the room is draining (an upgrade or a shutdown).
    Drain,
    /// The room is now run by another node.
    Moved,
}

impl RejoinReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejoinReason::NodeFailed => "node-failed",
            RejoinReason::Drain => "drain",
            RejoinReason::Moved => "moved",
        }
    }
}

impl ServerMessage {
    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<&str>) -> Self {
        ServerMessage::Error(ErrorMessage {
            code,
            message: message.into(),
            reference: reference.map(str::to_owned),
        })
    }
}

/// Serializes a protocol type. The types here hold only strings, numbers, booleans and
/// `serde_json::Value`s, which always serialize; the fallback is never taken.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| {
        r#"{"type":"error","code":"server-busy","message":"internal encoding error"}"#.to_owned()
    })
}

/// `welcome` and `resumed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// This peer's id.
    pub id: String,
    pub room: String,
    /// This peer's display name.
    pub name: String,
    /// The other peers in the room (including those within their resume grace period).
    pub peers: Vec<PeerInfo>,
    pub ice_servers: Vec<IceServer>,
    /// Send in `resume` after the WebSocket drops. A new one comes with every
    /// `welcome` and `resumed`; the previous one stops working.
    pub resume_token: String,
    pub resume_grace_ms: u64,
    pub mode: Mode,
    pub max_peers: u32,
    pub can_publish: bool,
    pub limits: Limits,
}

/// One peer in `welcome`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    pub id: String,
    pub name: String,
    pub media: MediaState,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// How media flows in a room now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Mode {
    /// Every peer connects to every other peer.
    Mesh,
    /// Every peer connects to the server's SFU (the pseudo-peer `"sfu"`).
    Sfu,
}

impl Mode {
    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Mesh => "mesh",
            Mode::Sfu => "sfu",
        }
    }
}

/// `mode`: the room switched to `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModeChange {
    pub mode: Mode,
}

/// `speaker`: the active speaker (a peer id, or a WHIP stream id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Speaker {
    pub id: String,
}

/// `sfu-stats`: the server's send-bandwidth estimate for this subscriber (bits/s),
/// the simulcast layer it receives of each publisher (`h`, `m`, `l`, `paused`,
/// `single`), and the RTT in ms. `null` when not known yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SfuStats {
    pub bitrate: Option<u64>,
    pub layers: BTreeMap<String, String>,
    pub rtt: Option<f64>,
}

/// Limits a client should respect (`welcome.limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_message_bytes: u32,
    pub messages_per_second: u32,
}

/// `peer-joined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerJoined {
    pub id: String,
    pub name: String,
}

/// `peer-left`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerLeft {
    pub id: String,
    pub reason: LeaveReason,
}

/// Why a peer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LeaveReason {
    /// Sent `leave`, or closed its WebSocket with code 1000.
    Left,
    /// Dropped and did not resume within the grace period.
    Timeout,
    /// Removed by the server (flooding, a full outbound queue, shutdown).
    Kicked,
}

/// `offer` / `answer` as relayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SdpFrom {
    pub from: String,
    pub sdp: String,
}

/// `candidate` as relayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateFrom {
    pub from: String,
    pub candidate: Value,
}

/// `chat` as relayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatFrom {
    pub from: String,
    pub name: String,
    pub text: String,
    /// Server time, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// `media` as relayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFrom {
    pub from: String,
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
}

/// `pong`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pong {
    pub id: Value,
}

/// `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMessage {
    pub code: ErrorCode,
    /// For people: what went wrong and what to do.
    pub message: String,
    /// The `type` of the message that caused the error, when known.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// The `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    BadMessage,
    UnknownType,
    TooLarge,
    RateLimited,
    NotJoined,
    AlreadyJoined,
    InvalidRoom,
    InvalidName,
    InvalidToken,
    Forbidden,
    RoomFull,
    TooManyRooms,
    UnknownPeer,
    ResumeFailed,
    ServerBusy,
    SfuError,
    Unavailable,
}

impl ErrorCode {
    /// Every code, in the order of `docs/signaling.md`.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidName,
        ErrorCode::InvalidToken,
        ErrorCode::Forbidden,
        ErrorCode::RoomFull,
        ErrorCode::TooManyRooms,
        ErrorCode::UnknownPeer,
        ErrorCode::ResumeFailed,
        ErrorCode::ServerBusy,
        ErrorCode::SfuError,
        ErrorCode::Unavailable,
    ];

    /// The code as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad-message",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::InvalidRoom => "invalid-room",
            ErrorCode::InvalidName => "invalid-name",
            ErrorCode::InvalidToken => "invalid-token",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::TooManyRooms => "too-many-rooms",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::ResumeFailed => "resume-failed",
            ErrorCode::ServerBusy => "server-busy",
            ErrorCode::SfuError => "sfu-error",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// Position in [`ErrorCode::ALL`].
    pub fn index(self) -> usize {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == self)
            .unwrap_or_default()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client message that could not be parsed: the `error` to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// [`ErrorCode::BadMessage`] or [`ErrorCode::UnknownType`].
    pub code: ErrorCode,
    pub message: String,
    /// The message's `type`, when it had a known one.
    pub reference: Option<String>,
}

impl ParseError {
    fn bad(message: impl Into<String>, reference: Option<&str>) -> Self {
        ParseError {
            code: ErrorCode::BadMessage,
            message: message.into(),
            reference: reference.map(str::to_owned),
        }
    }

    /// The `error` message to send back.
    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::error(self.code, self.message.clone(), self.reference.as_deref())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses one text frame. Checks shapes only (fields present, of the right JSON type,
/// chat length, non-empty SDP, candidate an object or `null`); the meaning (room names,
/// peer ids, tokens) is the [`Hub`](crate::Hub)'s business.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ParseError::bad(
            format!("not a JSON text ({e}); send one JSON object per text frame"),
            None,
        )
    })?;
    let Value::Object(map) = &value else {
        return Err(ParseError::bad(
            "not a JSON object; send one object with a string field \"type\"",
            None,
        ));
    };
    let ty = match map.get("type") {
        Some(Value::String(t)) => t,
        Some(_) => {
            return Err(ParseError::bad("the field \"type\" must be a string", None));
        }
        None => {
            return Err(ParseError::bad(
                "missing the field \"type\" (e.g. {\"type\": \"join\", ...})",
                None,
            ));
        }
    };
    let Some(ty) = ClientMessage::TYPES.iter().find(|t| **t == ty.as_str()) else {
        let quoted: String = ty.chars().take(MAX_QUOTED_TYPE).collect();
        return Err(ParseError {
            code: ErrorCode::UnknownType,
            message: format!(
                "unknown message type {quoted:?}; protocol version {PROTOCOL_VERSION} knows {}",
                ClientMessage::TYPES.join(", ")
            ),
            reference: None,
        });
    };
    let msg: ClientMessage = serde_json::from_value(value)
        .map_err(|e| ParseError::bad(format!("{ty}: {e}"), Some(ty)))?;
    check_shape(&msg).map_err(|m| ParseError::bad(format!("{ty}: {m}"), Some(ty)))?;
    Ok(msg)
}

fn check_shape(msg: &ClientMessage) -> Result<(), &'static str> {
    match msg {
        ClientMessage::Offer(m) | ClientMessage::Answer(m) if m.sdp.is_empty() => {
            Err("the field \"sdp\" is empty")
        }
        ClientMessage::Candidate(c) if !(c.candidate.is_object() || c.candidate.is_null()) => {
            Err("the field \"candidate\" must be an object (RTCIceCandidate.toJSON()) or null")
        }
        ClientMessage::Chat(c) if c.text.is_empty() => Err("the field \"text\" is empty"),
        ClientMessage::Chat(c) if c.text.chars().count() > MAX_CHAT_CHARS => {
            Err("the field \"text\" is longer than 2000 characters")
        }
        ClientMessage::View(v) => {
            for t in &v.tiles {
                if t.width > MAX_TILE_PIXELS || t.height > MAX_TILE_PIXELS {
                    return Err("a tile's width or height is over 16384");
                }
                if t.peer.is_empty() || t.peer.chars().count() > MAX_TILE_PEER_CHARS {
                    return Err("a tile's \"peer\" must be a peer id (1 to 128 characters)");
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
