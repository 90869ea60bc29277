//! Joining, resuming and leaving: admission, sessions and resume tokens, grace timers,
//! and what the other peers are told.

use super::*;

impl<I: IceServerSource> Hub<I> {
    pub(super) fn already_joined(&mut self, conn: ConnId, ty: &str) {
        self.send_error(
            conn,
            ErrorCode::AlreadyJoined,
            "this connection already has a session; send leave, then join on a new connection",
            Some(ty),
        );
    }

    pub(super) fn join(&mut self, now: Instant, conn: ConnId, j: Join) {
        const REF: Option<&str> = Some("join");
        if let Err(why) = validate_room(&j.room) {
            self.send_error(conn, ErrorCode::InvalidRoom, why, REF);
            return;
        }
        let mut can_publish = true;
        let mut name = j.name;
        if let Some(secret) = &self.config.token_secret {
            let Some(tok) = j.token.as_deref() else {
                self.send_error(
                    conn,
                    ErrorCode::InvalidToken,
                    "this server needs an access token: add \"token\" to join",
                    REF,
                );
                return;
            };
            let claims = match token::verify(&secret.0, tok, self.unix_ms(now) / 1000) {
                Ok(c) => c,
                Err(e) => {
                    self.send_error(conn, ErrorCode::InvalidToken, e.to_string(), REF);
                    return;
                }
            };
            if !claims.admits(&j.room) {
                let message = format!(
                    "the access token is for room '{}', not '{}'",
                    claims.room.chars().take(MAX_ROOM_CHARS).collect::<String>(),
                    j.room
                );
                self.send_error(conn, ErrorCode::InvalidToken, message, REF);
                return;
            }
            can_publish = claims.can_publish();
            if name.is_none() {
                name = Some(claims.sub);
            }
        }
        let name = match validate_name(name.as_deref().unwrap_or_default()) {
            Ok(n) => n,
            Err(why) => {
                self.send_error(conn, ErrorCode::InvalidName, why, REF);
                return;
            }
        };
        let room_exists = self.rooms.contains_key(j.room.as_str());
        if !room_exists && self.rooms.len() >= self.config.max_rooms {
            let message = format!(
                "the server has its maximum of {} rooms; join an existing room or try later",
                self.config.max_rooms
            );
            self.send_error(conn, ErrorCode::TooManyRooms, message, REF);
            return;
        }
        if let Some(r) = self.rooms.get(j.room.as_str()) {
            let max = self.limit(r.policy);
            if r.peers.len() >= max as usize {
                let kind = if self.mesh_only(r.policy) {
                    " in a mesh room"
                } else {
                    ""
                };
                let message = format!(
                    "Room '{}' is full ({max} of {max} peers{kind}); try another room.",
                    j.room
                );
                self.send_error(conn, ErrorCode::RoomFull, message, REF);
                return;
            }
        }
        let Some(id) = self.new_peer_id() else {
            self.send_error(
                conn,
                ErrorCode::ServerBusy,
                "could not allocate a peer id; try again",
                REF,
            );
            return;
        };
        let key = self.next_key;
        self.next_key += 1;
        let room: Arc<str> = match self.rooms.get_key_value(j.room.as_str()) {
            Some((k, _)) => k.clone(),
            None => {
                let room: Arc<str> = j.room.as_str().into();
                self.create_room(&room, j.mode.unwrap_or(self.config.default_mode), 0);
                room
            }
        };
        let resume_token = self.new_resume_token();
        self.peers.insert(
            key,
            Peer {
                id: id.clone(),
                name: name.as_str().into(),
                room: room.clone(),
                conn: Some(conn),
                resume_token: resume_token.clone(),
                grace_until: None,
                queue: VecDeque::new(),
                queued_bytes: 0,
                media: MediaState::default(),
                can_publish,
                sfu: false,
                sfu_left: None,
            },
        );
        self.peer_ids.insert(id.clone(), key);
        self.resume_tokens.insert(resume_token, key);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.peers.push(key);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(key);
        }
        // A switch makes the SFU peers of everyone (this one included); in an SFU room
        // only this one needs one. Either way before the welcome that tells the client.
        let switched = self.update_mode(now, &room);
        if !switched {
            self.sfu_join(key);
        }
        self.stats.joins += 1;
        self.push_event(Event::Joined {
            conn,
            peer: id.clone(),
            room: room.clone(),
        });
        let welcome = ServerMessage::Welcome(self.session(now, key, conn));
        self.send(conn, &welcome);
        let joined: Arc<str> = ServerMessage::PeerJoined(PeerJoined {
            id: id.to_string(),
            name,
        })
        .to_json()
        .into();
        self.broadcast(&room, Some(key), &joined, false);
        if switched {
            // The newcomer learnt the mode from its welcome.
            self.announce_mode(&room, Some(key));
        }
    }

    pub(super) fn resume(&mut self, now: Instant, conn: ConnId, tok: &str) {
        let Some(&key) = self.resume_tokens.get(tok) else {
            self.send_error(
                conn,
                ErrorCode::ResumeFailed,
                "unknown or expired resume token: the session is over; join again",
                Some("resume"),
            );
            return;
        };
        let fresh = self.new_resume_token();
        let Some(p) = self.peers.get_mut(&key) else {
            // Tokens are removed with their peer; a stale entry is dropped.
            self.resume_tokens.remove(tok);
            return;
        };
        let old_conn = p.conn.replace(conn);
        if let Some(t) = p.grace_until.take() {
            self.timers.remove(&(t, key));
        }
        let old_token = std::mem::replace(&mut p.resume_token, fresh.clone());
        let queued: Vec<Arc<str>> = p.queue.drain(..).collect();
        p.queued_bytes = 0;
        self.resume_tokens.remove(&old_token);
        self.resume_tokens.insert(fresh, key);
        if let Some(old) = old_conn {
            // The client saw its socket drop before the server did.
            self.close(old, CloseReason::Replaced);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(key);
        }
        self.stats.resumes += 1;
        if let Some(p) = self.peers.get(&key) {
            self.push_event(Event::Resumed {
                conn,
                peer: p.id.clone(),
                room: p.room.clone(),
            });
        }
        let resumed = ServerMessage::Resumed(self.session(now, key, conn));
        self.send(conn, &resumed);
        for text in queued {
            self.out.push_back(Output::Send { conn, text });
        }
    }

    // ---- output ----

    pub(super) fn session(&mut self, now: Instant, key: PeerKey, conn: ConnId) -> Session {
        let unix_secs = self.unix_ms(now) / 1000;
        let Some(p) = self.peers.get(&key) else {
            return self.empty_session();
        };
        let peers = self
            .rooms
            .get(&p.room)
            .map(|r| {
                r.peers
                    .iter()
                    .filter(|k| **k != key)
                    .filter_map(|k| self.peers.get(k))
                    .map(|o| PeerInfo {
                        id: o.id.to_string(),
                        name: o.name.to_string(),
                        media: o.media,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (id, room, name, resume_token, can_publish) = (
            p.id.to_string(),
            p.room.to_string(),
            p.name.to_string(),
            p.resume_token.to_string(),
            p.can_publish,
        );
        let (mode, max_peers) = match self.rooms.get(&p.room) {
            Some(r) => (r.mode, self.limit(r.policy)),
            None => (Mode::Mesh, self.limit(RoomMode::Mesh)),
        };
        let ice_servers = self.ice.ice_servers(&IceRequest {
            conn,
            peer_id: &id,
            unix_secs,
        });
        Session {
            id,
            room,
            name,
            peers,
            ice_servers,
            resume_token,
            resume_grace_ms: u64::try_from(self.config.resume_grace.as_millis())
                .unwrap_or(u64::MAX),
            mode,
            max_peers,
            can_publish,
            limits: Limits {
                max_message_bytes: u32::try_from(self.config.max_message_bytes).unwrap_or(u32::MAX),
                messages_per_second: self.config.messages_per_second,
            },
        }
    }

    #[cold]
    pub(super) fn empty_session(&self) -> Session {
        Session {
            id: String::new(),
            room: String::new(),
            name: String::new(),
            peers: Vec::new(),
            ice_servers: Vec::new(),
            resume_token: String::new(),
            resume_grace_ms: 0,
            mode: Mode::Mesh,
            max_peers: self.limit(RoomMode::Mesh),
            can_publish: false,
            limits: Limits {
                max_message_bytes: 0,
                messages_per_second: 0,
            },
        }
    }

    /// Removes a peer from its room and tells the others.
    pub(super) fn remove_peer(&mut self, now: Instant, key: PeerKey, reason: LeaveReason) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        self.peer_ids.remove(&p.id);
        self.resume_tokens.remove(&p.resume_token);
        if let Some(t) = p.grace_until {
            self.timers.remove(&(t, key));
        }
        if let Some(conn) = p.conn {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.peer = None;
            }
        }
        let idx = match reason {
            LeaveReason::Left => 0,
            LeaveReason::Timeout => 1,
            _ => 2,
        };
        self.stats.leaves[idx] += 1;
        self.push_event(Event::Left {
            peer: p.id.clone(),
            room: p.room.clone(),
            reason,
        });
        if p.sfu {
            self.out.push_back(Output::Sfu(SfuRequest::Leave {
                peer: p.id.clone(),
                linger: false,
            }));
        }
        let empty = match self.rooms.get_mut(&p.room) {
            Some(r) => {
                r.peers.retain(|k| *k != key);
                r.peers.is_empty()
            }
            None => false,
        };
        if empty {
            self.remove_room_if_unused(&p.room);
            return;
        }
        let left: Arc<str> = ServerMessage::PeerLeft(PeerLeft {
            id: p.id.to_string(),
            reason,
        })
        .to_json()
        .into();
        self.broadcast(&p.room, Some(key), &left, false);
        if self.update_mode(now, &p.room) {
            self.announce_mode(&p.room, None);
        }
    }

    /// [`SfuReply::External`]: WHIP publishers in `room`.
    pub(super) fn external(&mut self, now: Instant, room: &str, publishers: u32) {
        if !self.config.sfu || validate_room(room).is_err() {
            return;
        }
        if !self.rooms.contains_key(room) {
            if publishers == 0 || self.rooms.len() >= self.config.max_rooms {
                // Nothing to remember, or no room for it (bounded by max_rooms).
                return;
            }
            self.create_room(&Arc::from(room), self.config.default_mode, publishers);
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.whip = publishers;
        }
        if self.update_mode(now, room) {
            self.announce_mode(room, None);
        }
        self.remove_room_if_unused(room);
    }

    /// Peers whose grace queue overflowed leave now (`timeout`): they could not be
    /// resumed without losing messages. Removing one may overflow another.
    pub(super) fn remove_overflowed(&mut self, now: Instant) {
        while let Some(key) = self.overflowed.pop() {
            self.remove_peer(now, key, LeaveReason::Timeout);
        }
    }
}
