//! Output: frames to a connection, messages to a peer (or its grace queue) and to a
//! room, closes, and session events.

use super::*;

impl<I: IceServerSource> Hub<I> {
    pub(super) fn send(&mut self, conn: ConnId, msg: &ServerMessage) {
        self.out.push_back(Output::Send {
            conn,
            text: msg.to_json().into(),
        });
    }

    pub(super) fn send_error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<String>,
        reference: Option<&str>,
    ) {
        self.stats.errors[code.index()] += 1;
        self.send(conn, &ServerMessage::error(code, message, reference));
    }

    pub(super) fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if self.conns.remove(&conn).is_some() {
            self.out.push_back(Output::Close { conn, reason });
        }
    }

    /// To a live peer's connection, or into its grace queue.
    pub(super) fn deliver(&mut self, to: PeerKey, text: Arc<str>, relayed: bool) {
        let (max_messages, max_bytes) = (self.config.queue_messages, self.config.queue_bytes);
        let Some(p) = self.peers.get_mut(&to) else {
            return;
        };
        if relayed {
            self.stats.messages_relayed += 1;
        }
        match p.conn {
            Some(conn) => self.out.push_back(Output::Send { conn, text }),
            None => {
                if p.queue.len() >= max_messages || p.queued_bytes + text.len() > max_bytes {
                    if !self.overflowed.contains(&to) {
                        self.overflowed.push(to);
                    }
                } else {
                    p.queued_bytes += text.len();
                    p.queue.push_back(text);
                }
            }
        }
    }

    /// [`Hub::deliver`] to the peer with public id `id`, if there is one.
    pub(super) fn deliver_to_id(&mut self, id: &str, msg: &ServerMessage, relayed: bool) {
        if let Some(&key) = self.peer_ids.get(id) {
            self.deliver(key, msg.to_json().into(), relayed);
        }
    }

    /// An `error` to a peer (queued within its grace period).
    pub(super) fn deliver_error(
        &mut self,
        key: PeerKey,
        code: ErrorCode,
        message: impl Into<String>,
        reference: Option<&str>,
    ) {
        if !self.peers.contains_key(&key) {
            return;
        }
        self.stats.errors[code.index()] += 1;
        let text = ServerMessage::error(code, message, reference)
            .to_json()
            .into();
        self.deliver(key, text, false);
    }

    /// To every peer of `room` but `except`. `relayed`: counts as relayed messages.
    pub(super) fn broadcast(
        &mut self,
        room: &str,
        except: Option<PeerKey>,
        text: &Arc<str>,
        relayed: bool,
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let targets: Vec<PeerKey> = r
            .peers
            .iter()
            .copied()
            .filter(|k| Some(*k) != except)
            .collect();
        for k in targets {
            self.deliver(k, text.clone(), relayed);
        }
    }

    /// Queues a session event; a runtime that never drains them loses the oldest
    /// beyond [`MAX_EVENTS`] instead of growing the queue.
    pub(super) fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}
