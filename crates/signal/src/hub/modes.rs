//! Room modes (mesh, SFU, auto) and the link to the SFU: when a room switches and what
//! its peers and the SFU are told.

use super::*;

impl<I: IceServerSource> Hub<I> {
    /// A reply of the SFU runtime. Replies about unknown peers or rooms are ignored;
    /// to a peer within its grace period they are queued like other messages. Offers,
    /// answers, errors and stats for a peer that is no longer in the SFU (its room went
    /// back to mesh) are dropped: its client has left the SFU, and docs/sfu.md promises
    /// no `"sfu"` message after `mode: mesh`.
    pub fn handle_sfu(&mut self, now: Instant, reply: SfuReply) {
        let for_peer = match &reply {
            SfuReply::Offer { peer, .. }
            | SfuReply::Answer { peer, .. }
            | SfuReply::Stats { peer, .. }
            | SfuReply::Error { peer, .. } => Some(peer.as_str()),
            SfuReply::Speaker { .. } | SfuReply::External { .. } => None,
        };
        if let Some(peer) = for_peer {
            let in_sfu = self
                .peer_ids
                .get(peer)
                .and_then(|k| self.peers.get(k))
                .is_some_and(|p| p.sfu);
            if !in_sfu {
                self.stats.sfu_replies_after_leave += 1;
                return;
            }
        }
        match reply {
            SfuReply::Offer { peer, sdp } => {
                let m = ServerMessage::Offer(SdpFrom {
                    from: SFU_PEER.to_owned(),
                    sdp,
                });
                self.deliver_to_id(&peer, &m, true);
            }
            SfuReply::Answer { peer, sdp } => {
                let m = ServerMessage::Answer(SdpFrom {
                    from: SFU_PEER.to_owned(),
                    sdp,
                });
                self.deliver_to_id(&peer, &m, true);
            }
            SfuReply::Speaker { room, peer } => {
                if self.rooms.contains_key(room.as_str()) {
                    let text = ServerMessage::Speaker(Speaker { id: peer })
                        .to_json()
                        .into();
                    self.broadcast(&room, None, &text, false);
                }
            }
            SfuReply::Stats {
                peer,
                bitrate,
                layers,
                rtt,
            } => {
                let m = ServerMessage::SfuStats(SfuStats {
                    bitrate,
                    layers: layers.into_iter().collect(),
                    rtt: rtt.filter(|r| r.is_finite()),
                });
                self.deliver_to_id(&peer, &m, false);
            }
            SfuReply::Error { peer, message } => {
                if let Some(&key) = self.peer_ids.get(peer.as_str()) {
                    self.deliver_error(key, ErrorCode::SfuError, message, None);
                }
            }
            SfuReply::External { room, publishers } => self.external(now, &room, publishers),
        }
        self.remove_overflowed(now);
    }

    /// The runtime could not hand `req` to the SFU (its queue was full): the peer is
    /// told with `server-busy` (the session goes on) and [`Stats::sfu_dropped`] counts
    /// it. A dropped `leave` tells nobody: the SFU drops that peer on its own timeouts.
    pub fn handle_sfu_dropped(&mut self, now: Instant, req: &SfuRequest) {
        self.stats.sfu_dropped += 1;
        let Some(&key) = self.peer_ids.get(&**req.peer()) else {
            return;
        };
        let (message, reference) = match req {
            SfuRequest::Leave { .. } => return,
            SfuRequest::Join { .. } => (
                "the SFU is overloaded and could not add you to it; media through the SFU \
                 will not work: leave and join again"
                    .to_owned(),
                None,
            ),
            other => (
                format!(
                    "the SFU is overloaded: your {} to \"sfu\" was dropped; send it again",
                    other.kind()
                ),
                Some(other.kind()),
            ),
        };
        self.deliver_error(key, ErrorCode::ServerBusy, message, reference);
        self.remove_overflowed(now);
    }

    // ---- modes ----

    /// Whether rooms of `policy` are mesh whatever their size (no SFU, or pinned).
    pub(super) fn mesh_only(&self, policy: RoomMode) -> bool {
        !self.config.sfu || policy == RoomMode::Mesh
    }

    /// The most peers a room of `policy` takes (`welcome.maxPeers`).
    pub(super) fn limit(&self, policy: RoomMode) -> u32 {
        if self.mesh_only(policy) {
            self.config.mesh_max_peers.max(1)
        } else {
            self.config.max_peers.max(1)
        }
    }

    /// The mode a room of `policy` with `peers` browser peers and `whip` WHIP
    /// publishers should be in, now in mode `current` (`docs/sfu.md`, Modes and
    /// switching).
    pub(super) fn desired_mode(
        &self,
        policy: RoomMode,
        peers: usize,
        whip: u32,
        current: Mode,
    ) -> Mode {
        if !self.config.sfu {
            return Mode::Mesh;
        }
        if whip > 0 {
            return Mode::Sfu;
        }
        let mesh_max = self.config.mesh_max_peers as usize;
        match policy {
            RoomMode::Mesh => Mode::Mesh,
            RoomMode::Sfu => Mode::Sfu,
            RoomMode::Auto if peers > mesh_max => Mode::Sfu,
            // One peer of hysteresis: back to mesh only at mesh_max - 1 or fewer.
            RoomMode::Auto if peers < mesh_max => Mode::Mesh,
            RoomMode::Auto => current,
        }
    }

    /// A new room without peers, in the mode its policy gives its first peer.
    pub(super) fn create_room(&mut self, name: &Arc<str>, policy: RoomMode, whip: u32) {
        let r = Room {
            peers: Vec::new(),
            policy,
            mode: self.desired_mode(policy, 1, whip, Mode::Mesh),
            whip,
        };
        if r.mode == Mode::Sfu {
            self.sfu_rooms += 1;
        }
        self.rooms.insert(name.clone(), r);
    }

    /// Forgets `room` if it has neither peers nor WHIP publishers.
    pub(super) fn remove_room_if_unused(&mut self, room: &str) {
        let unused = self
            .rooms
            .get(room)
            .is_some_and(|r| r.peers.is_empty() && r.whip == 0);
        if unused {
            if let Some(r) = self.rooms.remove(room) {
                if r.mode == Mode::Sfu {
                    self.sfu_rooms = self.sfu_rooms.saturating_sub(1);
                }
            }
        }
    }

    /// Puts `room` in the mode it should be in. On a switch: the SFU requests for
    /// every peer (`Join`, or `Leave` with linger); the caller then announces the mode
    /// ([`Hub::announce_mode`]). Returns whether it switched.
    pub(super) fn update_mode(&mut self, now: Instant, room: &str) -> bool {
        let Some(r) = self.rooms.get(room) else {
            return false;
        };
        let want = self.desired_mode(r.policy, r.peers.len(), r.whip, r.mode);
        if want == r.mode {
            return false;
        }
        let peers = r.peers.clone();
        if let Some((name, _)) = self.rooms.get_key_value(room) {
            let room = name.clone();
            self.push_event(Event::ModeChanged { room, mode: want });
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.mode = want;
        }
        match want {
            Mode::Sfu => {
                self.sfu_rooms += 1;
                self.stats.switches_to_sfu += 1;
                for k in peers {
                    self.sfu_join(k);
                }
            }
            _ => {
                self.sfu_rooms = self.sfu_rooms.saturating_sub(1);
                self.stats.switches_to_mesh += 1;
                for k in peers {
                    if let Some(p) = self.peers.get_mut(&k) {
                        if std::mem::take(&mut p.sfu) {
                            p.sfu_left = Some(now);
                            let peer = p.id.clone();
                            self.out
                                .push_back(Output::Sfu(SfuRequest::Leave { peer, linger: true }));
                        }
                    }
                }
            }
        }
        true
    }

    /// `mode` to every peer of `room` but `except`.
    pub(super) fn announce_mode(&mut self, room: &str, except: Option<PeerKey>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let text = ServerMessage::Mode(ModeChange { mode: r.mode })
            .to_json()
            .into();
        self.broadcast(room, except, &text, false);
    }

    /// The SFU peer of `key`, if its room is in SFU mode and it has none yet.
    pub(super) fn sfu_join(&mut self, key: PeerKey) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let in_sfu_room = self.rooms.get(&p.room).is_some_and(|r| r.mode == Mode::Sfu);
        if p.sfu || !in_sfu_room {
            return;
        }
        let req = SfuRequest::Join {
            room: p.room.clone(),
            peer: p.id.clone(),
            can_publish: p.can_publish,
        };
        if let Some(p) = self.peers.get_mut(&key) {
            p.sfu = true;
            p.sfu_left = None;
        }
        self.out.push_back(Output::Sfu(req));
    }
}
