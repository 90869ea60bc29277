//! The signaling side of a generated participant: its WebSocket, the messages it reads,
//! and the SFU's room state (`/api/sfu/rooms`).

use super::*;

/// One participant's signaling.
pub(crate) struct Signal {
    pub(crate) ws: WebSocket<TcpStream>,
    /// Our offer to the SFU, sent when `welcome` arrives.
    pub(crate) offer: Option<String>,
    /// Our offer to the SFU, until its answer.
    pub(crate) pending: Option<SdpPendingOffer>,
    /// When the WebSocket connect started.
    pub(crate) start: Instant,
    pub(crate) welcomed: bool,
    pub(crate) join_ms: f64,
    pub(crate) sfu_offers: u64,
    /// SFU offers ignored because our own offer was out.
    pub(crate) ignored_offers: u64,
    pub(crate) closed: bool,
}

impl Signal {
    pub(crate) fn send(&mut self, v: &Value) -> Result<(), String> {
        match self.ws.send(Message::text(v.to_string())) {
            Ok(()) => Ok(()),
            // Queued; flushed on a later turn.
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(format!("signaling: {e}")),
        }
    }
}

/// Reads the WebSockets of participants who left until the server closes them (or
/// their deadline passes), so that the `leave` is not lost to a reset.
pub(crate) fn read_closing(closing: &mut Vec<(WebSocket<TcpStream>, Instant)>) {
    let now = Instant::now();
    closing.retain_mut(|(ws, deadline)| {
        if now >= *deadline {
            return false;
        }
        loop {
            match ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        match ws.flush() {
            Ok(()) => true,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        }
    });
}

/// From the SFU's `GET /api/rooms/{room}/sfu`: the subscriber's connection and its
/// subscriptions to the publisher.
pub(crate) fn sfu_state(
    room: Option<&Value>,
    publisher: Option<String>,
    subscriber: Option<String>,
) -> Value {
    let Some(room) = room else {
        return Value::Null;
    };
    if room.get("error").is_some() {
        return room.clone();
    }
    let Some(sub) = room["peers"].as_array().and_then(|peers| {
        peers
            .iter()
            .find(|p| p["peer"].as_str() == subscriber.as_deref())
    }) else {
        return json!({"error": "the subscriber is not in the SFU's room"});
    };
    let mut state = serde_json::Map::new();
    for k in [
        "connection",
        "connected",
        "consentLost",
        "freeMlines",
        "bitrate",
        "negotiation",
    ] {
        state.insert(k.to_owned(), sub[k].clone());
    }
    let subs: Vec<Value> = sub["subscriptions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["publisher"].as_str() == publisher.as_deref())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    state.insert("subscriptions".to_owned(), Value::Array(subs));
    let publishing = room["peers"].as_array().is_some_and(|peers| {
        peers
            .iter()
            .any(|p| p["peer"].as_str() == publisher.as_deref())
    });
    state.insert("publisherInRoom".to_owned(), Value::Bool(publishing));
    Value::Object(state)
}
