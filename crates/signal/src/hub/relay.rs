//! Messages between peers: offers, answers, candidates, chat and media state, to a
//! peer of the room or to the SFU.

use super::*;

impl<I: IceServerSource> Hub<I> {
    pub(super) fn relay(&mut self, now: Instant, conn: ConnId, from: PeerKey, msg: ClientMessage) {
        let Some(sender) = self.peers.get(&from) else {
            return;
        };
        let (id, name, room) = (sender.id.clone(), sender.name.clone(), sender.room.clone());
        let (can_publish, in_sfu) = (sender.can_publish, sender.sfu);
        // Within the grace after a switch to mesh, an answer or candidate to "sfu" was
        // sent before the sender read `mode`: its SFU session lingers and takes it.
        let late_for_sfu = !in_sfu
            && sender
                .sfu_left
                .is_some_and(|t| now.saturating_duration_since(t) < SFU_LATE_GRACE);
        let ty = msg.type_name();
        // Whether "sfu" takes this message: an offer starts a negotiation, so only a
        // peer in the SFU now may send one.
        let sfu_takes = in_sfu || (late_for_sfu && ty != "offer");
        let text: Arc<str> = match msg {
            ClientMessage::Offer(SdpTo { to, sdp }) | ClientMessage::Answer(SdpTo { to, sdp }) => {
                let target = if to == SFU_PEER {
                    if !self.sfu_addressee(conn, sfu_takes, &room, ty) {
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
                if self.sfu_addressee(conn, sfu_takes, &room, ty) {
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
    /// in SFU mode); else `unknown-peer`. (An answer or candidate within
    /// [`SFU_LATE_GRACE`] of a switch to mesh does not ask: [`Hub::relay`].)
    pub(super) fn sfu_addressee(
        &mut self,
        conn: ConnId,
        in_sfu: bool,
        room: &str,
        ty: &'static str,
    ) -> bool {
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
    pub(super) fn addressee(
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
}
