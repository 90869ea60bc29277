//! What the SFU core does with its input other than datagrams: signaling's requests
//! (join, leave, offers, answers, candidates, tile sizes), WHIP/WHEP commands and
//! ICE-TCP connections; the `Sfu`'s events; replies to signaling kept in order; and
//! sessions of rooms that went back to mesh, lingering a while.

use serde_json::Value;
use tracing::{debug, info, warn};
use tsunagi_sfu::{Layer, Role, SfuError, SfuEvent};

use super::core::Core;
use super::*;

/// A WHIP/WHEP session known to the runtime.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) kind: SessionKind,
    pub(super) room: String,
}

pub(super) fn random_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Core {
    pub(super) fn request(&mut self, now: Instant, req: SfuRequest) {
        match req {
            SfuRequest::Join {
                room,
                peer,
                can_publish,
            } => {
                self.unlinger(&peer);
                if self.sfu.contains(&peer) {
                    // A new SFU session for a peer whose last one is still here (a
                    // quick mesh → sfu → mesh → sfu): the client makes a new
                    // PeerConnection, so the old one goes.
                    self.sfu.leave(&peer, now);
                }
                if let Err(e) = self
                    .sfu
                    .join(&room, &peer, Role::Participant { can_publish }, now)
                {
                    let (count, last) = &mut self.join_refusals;
                    *count += 1;
                    if last
                        .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
                    {
                        warn!(%peer, %room, refused = *count, "SFU join refused: {e} (one warning per 10 s; `refused` counts since the last)");
                        *count = 0;
                        *last = Some(now);
                    } else {
                        debug!(%peer, %room, "SFU join refused: {e}");
                    }
                    self.reply(SfuReply::Error {
                        peer: peer.to_string(),
                        message: e.to_string(),
                    });
                }
            }
            SfuRequest::Leave { peer, linger } => {
                if linger && !self.options.linger.is_zero() {
                    self.sfu.linger(&peer);
                    self.lingering
                        .entry(now + self.options.linger)
                        .or_default()
                        .push(peer.to_string());
                } else {
                    self.unlinger(&peer);
                    self.sfu.leave(&peer, now);
                }
            }
            SfuRequest::Offer { peer, sdp } => {
                if !self.sfu.contains(&peer) {
                    self.reply(SfuReply::Error {
                        peer: peer.to_string(),
                        message: "this peer has no SFU session (the room is in mesh mode)"
                            .to_owned(),
                    });
                    return;
                }
                match self.sfu.accept_offer(&peer, &sdp, now) {
                    Ok(answer) => self.reply(SfuReply::Answer {
                        peer: peer.to_string(),
                        sdp: answer,
                    }),
                    Err(e) => {
                        debug!(%peer, "SFU refused an offer: {e}");
                        self.reply(SfuReply::Error {
                            peer: peer.to_string(),
                            message: format!("offer refused: {e}"),
                        });
                    }
                }
            }
            SfuRequest::Answer { peer, sdp } => {
                if let Err(e) = self.sfu.accept_answer(&peer, &sdp, now) {
                    debug!(%peer, "SFU refused an answer: {e}");
                    if !matches!(e, SfuError::UnknownPeer) {
                        self.reply(SfuReply::Error {
                            peer: peer.to_string(),
                            message: format!("answer refused: {e}"),
                        });
                    }
                }
            }
            SfuRequest::Candidate { peer, candidate } => {
                let text = match &candidate {
                    Value::Null => String::new(),
                    Value::Object(o) => match o.get("candidate") {
                        Some(Value::String(s)) => s.clone(),
                        _ => String::new(),
                    },
                    Value::String(s) => s.clone(),
                    _ => return,
                };
                if let Err(e) = self.sfu.add_remote_candidate(&peer, &text) {
                    debug!(%peer, "SFU ignored a candidate: {e}");
                }
            }
            SfuRequest::View { peer, tiles } => {
                let tiles: Vec<tsunagi_sfu::Tile> = tiles
                    .into_iter()
                    .map(|t| tsunagi_sfu::Tile {
                        peer: t.peer,
                        width: t.width,
                        height: t.height,
                    })
                    .collect();
                self.sfu.set_view(&peer, &tiles, now);
            }
        }
    }

    pub(super) fn is_lingering(&self, peer: &str) -> bool {
        self.lingering
            .values()
            .any(|peers| peers.iter().any(|p| p == peer))
    }

    pub(super) fn unlinger(&mut self, peer: &str) {
        self.lingering.retain(|_, peers| {
            peers.retain(|p| p != peer);
            !peers.is_empty()
        });
    }

    pub(super) fn expire_lingering(&mut self, now: Instant) {
        while let Some(entry) = self.lingering.first_entry() {
            if *entry.key() > now {
                break;
            }
            for peer in entry.remove() {
                debug!(%peer, "SFU session ended after the switch to mesh");
                self.sfu.leave(&peer, now);
            }
        }
    }

    pub(super) fn command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Create {
                kind,
                room,
                offer,
                room_has_peers,
                reply,
            } => {
                let _ = reply.send(self.create(now, kind, &room, &offer, room_has_peers));
            }
            Command::Candidates {
                kind,
                room,
                id,
                candidates,
                reply,
            } => {
                let r = self.session(kind, &room, &id).map(|()| {
                    for c in &candidates {
                        if let Err(e) = self.sfu.add_remote_candidate(&id, c) {
                            debug!(%id, "WHIP/WHEP candidate ignored: {e}");
                        }
                    }
                });
                let _ = reply.send(r);
            }
            Command::Delete {
                kind,
                room,
                id,
                reply,
            } => {
                let r = self.session(kind, &room, &id).map(|()| {
                    self.sfu.leave(&id, now);
                    self.end_session(&id);
                });
                let _ = reply.send(r);
            }
            Command::RoomState { room, reply } => {
                let r = self.sfu.room_state(&room, now).ok_or_else(|| {
                    HttpFailure::new(
                        404,
                        format!("the SFU has no room {room} (it is in mesh mode, or empty)"),
                    )
                });
                let _ = reply.send(r);
            }
            Command::Tcp { remote, writer } => match writer {
                Some(w) => {
                    self.tcp.insert(remote, w);
                    self.counters.tcp_connections = self.tcp.len() as u64;
                }
                None => {
                    self.tcp.remove(&remote);
                    self.counters.tcp_connections = self.tcp.len() as u64;
                }
            },
        }
    }

    pub(super) fn session(
        &self,
        kind: SessionKind,
        room: &str,
        id: &str,
    ) -> Result<(), HttpFailure> {
        match self.sessions.get(id) {
            Some(s) if s.kind == kind && s.room == room => Ok(()),
            _ => Err(HttpFailure::new(
                404,
                format!("no {} session {id} in room {room}", kind.as_str()),
            )),
        }
    }

    pub(super) fn create(
        &mut self,
        now: Instant,
        kind: SessionKind,
        room: &str,
        offer: &str,
        room_has_peers: bool,
    ) -> Result<Created, HttpFailure> {
        if self.sessions.len() >= self.options.max_http_sessions {
            return Err(HttpFailure::new(
                503,
                "too many WHIP/WHEP sessions on this server; retry later",
            ));
        }
        let role = match kind {
            SessionKind::Whip => Role::WhipPublisher,
            SessionKind::Whep => {
                if !self.sfu.room_has_publisher(room) && !room_has_peers {
                    return Err(HttpFailure::new(
                        404,
                        format!("nobody is publishing in room {room} yet"),
                    ));
                }
                Role::WhepViewer
            }
        };
        let id = format!("{}-{}", kind.as_str(), random_id());
        self.sfu
            .join(room, &id, role, now)
            .map_err(|e| HttpFailure::new(503, e.to_string()))?;
        match self.sfu.accept_offer(&id, offer, now) {
            Ok(answer) => {
                self.sessions.insert(
                    id.clone(),
                    Session {
                        kind,
                        room: room.to_owned(),
                    },
                );
                self.count_sessions();
                self.publish_external(room);
                info!(%id, %room, "{} session started", kind.as_str());
                Ok(Created { id, answer })
            }
            Err(e) => {
                self.sfu.leave(&id, now);
                Err(HttpFailure::new(
                    400,
                    format!("the SDP offer was refused: {e}"),
                ))
            }
        }
    }

    pub(super) fn end_session(&mut self, id: &str) {
        if let Some(s) = self.sessions.remove(id) {
            info!(%id, room = %s.room, "{} session ended", s.kind.as_str());
            self.count_sessions();
            self.publish_external(&s.room);
        }
    }

    pub(super) fn count_sessions(&mut self) {
        let whip = self
            .sessions
            .values()
            .filter(|s| s.kind == SessionKind::Whip)
            .count();
        self.counters.whip_sessions = whip as u64;
        self.counters.whep_sessions = (self.sessions.len() - whip) as u64;
    }

    /// Tells signaling how many WHIP/WHEP sessions `room` has: while it has any, the
    /// room runs as SFU (its browser publishers must reach the SFU to be played).
    pub(super) fn publish_external(&mut self, room: &str) {
        let publishers = self.sessions.values().filter(|s| s.room == room).count() as u32;
        self.reply(SfuReply::External {
            room: room.to_owned(),
            publishers,
        });
    }

    /// Hands a reply to signaling. Offers, answers and errors are part of a peer's
    /// offer/answer exchange: losing one would leave the two sides waiting on each other,
    /// so when the queue is full they wait in `backlog` (in order; bounded by the peers
    /// present: an exchange has at most an offer and an answer in flight). What cannot
    /// even be kept there: an offer is taken back ([`Sfu::offer_undelivered`]), the rest
    /// is dropped and counted. Stats and speaker updates are dropped when the queue is
    /// full (the next ones follow).
    pub(super) fn reply(&mut self, reply: SfuReply) {
        let exchange = matches!(
            reply,
            SfuReply::Offer { .. } | SfuReply::Answer { .. } | SfuReply::Error { .. }
        );
        if exchange {
            self.flush_backlog();
            if self.backlog.is_empty() {
                match self.replies.try_send(reply) {
                    Ok(()) => return,
                    Err(
                        mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r),
                    ) => {
                        self.keep(r);
                    }
                }
            } else {
                self.keep(reply);
            }
            return;
        }
        if self.replies.try_send(reply).is_err() {
            self.counters.replies_dropped += 1;
            let now = Instant::now();
            if self
                .reply_warned
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
            {
                self.reply_warned = Some(now);
                warn!(
                    dropped = self.counters.replies_dropped,
                    "SFU replies to signaling are backing up; dropping"
                );
            }
        }
    }

    pub(super) fn keep(&mut self, reply: SfuReply) {
        let limit = self.options.core.max_peers.saturating_mul(4).max(64);
        if self.backlog.len() < limit {
            self.backlog.push_back(reply);
            return;
        }
        self.counters.replies_dropped += 1;
        if let SfuReply::Offer { peer, .. } = reply {
            self.sfu.offer_undelivered(&peer, Instant::now());
        }
    }

    pub(super) fn flush_backlog(&mut self) {
        while let Some(r) = self.backlog.pop_front() {
            match self.replies.try_send(r) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(r)) => {
                    self.backlog.push_front(r);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    pub(super) fn event(&mut self, e: SfuEvent) {
        match e {
            SfuEvent::Offer { peer, sdp } => {
                if self.sessions.contains_key(&peer) {
                    // WHIP/WHEP sessions are never renegotiated by the server.
                    debug!(%peer, "no renegotiation channel for a WHIP/WHEP session");
                } else {
                    self.reply(SfuReply::Offer { peer, sdp });
                }
            }
            SfuEvent::Speaker { room, peer } => self.reply(SfuReply::Speaker { room, peer }),
            SfuEvent::Stats {
                peer,
                bitrate,
                layers,
                rtt_ms,
            } => {
                if !self.sessions.contains_key(&peer) {
                    self.reply(SfuReply::Stats {
                        peer,
                        bitrate,
                        layers: layers
                            .into_iter()
                            .map(|(p, l): (String, Layer)| (p, l.as_str().to_owned()))
                            .collect(),
                        rtt: rtt_ms,
                    });
                }
            }
            SfuEvent::Connected { peer } => debug!(%peer, "SFU peer connected"),
            SfuEvent::Closed { peer, reason } => {
                if self.sessions.contains_key(&peer) {
                    info!(%peer, %reason, "SFU peer closed");
                    self.end_session(&peer);
                } else if self.is_lingering(&peer) {
                    // Its room went back to mesh and the client closed this connection,
                    // as docs/sfu.md asks: the expected end, not an error.
                    debug!(%peer, %reason, "SFU peer closed after the switch to mesh");
                    self.unlinger(&peer);
                } else {
                    info!(%peer, %reason, "SFU peer closed");
                    self.reply(SfuReply::Error {
                        peer,
                        message: format!("the SFU connection closed: {reason}"),
                    });
                }
            }
        }
    }
}
