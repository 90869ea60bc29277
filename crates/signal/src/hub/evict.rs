//! What a cluster runtime asks of the hub: which rooms and sessions it holds (to claim
//! the rooms and publish the resume tokens in a shared directory), and moving a room
//! away (`rejoin`) when another node runs it now or this one is draining.

use super::*;

impl<I: IceServerSource> Hub<I> {
    /// The rooms this hub holds now (with a peer, or with a WHIP publisher).
    pub fn rooms(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.rooms.keys()
    }

    /// Every session: its room and its current resume token (those in their grace
    /// period included).
    pub fn sessions(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> + '_ {
        self.peers.values().map(|p| (&p.room, &p.resume_token))
    }

    /// Tells every peer of `room` to join again (`rejoin`, with `url` when given) and
    /// closes its connection ([`CloseReason::Rejoin`]); peers in their grace period
    /// are dropped. The room is forgotten, with its SFU peers. The others are not
    /// sent `peer-left`: they are all leaving. Returns how many peers there were.
    pub fn evict_room(
        &mut self,
        _now: Instant,
        room: &str,
        reason: RejoinReason,
        url: Option<&str>,
    ) -> usize {
        let Some(r) = self.rooms.remove(room) else {
            return 0;
        };
        if r.mode == Mode::Sfu {
            self.sfu_rooms = self.sfu_rooms.saturating_sub(1);
        }
        let text: Arc<str> = ServerMessage::Rejoin(Rejoin {
            reason,
            url: url.map(str::to_owned),
        })
        .to_json()
        .into();
        let mut room_name = None;
        for key in &r.peers {
            let Some(p) = self.peers.remove(key) else {
                continue;
            };
            self.peer_ids.remove(&p.id);
            self.resume_tokens.remove(&p.resume_token);
            if let Some(t) = p.grace_until {
                self.timers.remove(&(t, *key));
            }
            if p.sfu {
                self.out.push_back(Output::Sfu(SfuRequest::Leave {
                    peer: p.id.clone(),
                    linger: false,
                }));
            }
            if let Some(conn) = p.conn {
                self.out.push_back(Output::Send {
                    conn,
                    text: text.clone(),
                });
                self.close(conn, CloseReason::Rejoin);
            }
            room_name.get_or_insert(p.room);
        }
        let n = r.peers.len();
        self.overflowed.retain(|k| !r.peers.contains(k));
        self.stats.evicted += n as u64;
        self.push_event(Event::Evicted {
            room: room_name.unwrap_or_else(|| Arc::from(room)),
            peers: n,
            reason,
        });
        n
    }
}
