//! Which peer a datagram belongs to, without asking every peer.
//!
//! * STUN Binding requests carry `USERNAME = <our ufrag>:<their ufrag>` (RFC 8445 §7.2.2):
//!   the local ufrag names the peer. The request must also carry a MESSAGE-INTEGRITY that
//!   verifies with that peer's password before its 5-tuple is learned.
//! * Everything else (DTLS, SRTP, SRTCP, later STUN) is looked up by the 5-tuple
//!   `(protocol, remote, local)` learned from an authenticated request.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use ahash::RandomState;
use tsunagi_stun::{attr, Class, IntegrityKey, Message, Method};

use crate::Protocol;

/// 5-tuples remembered per peer (ICE checks from several candidates, a TCP reconnect...).
/// Older ones are forgotten first.
pub const MAX_TUPLES_PER_PEER: usize = 8;

/// A transport address pair as seen by the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// UDP or TCP.
    pub proto: Protocol,
    /// The remote address.
    pub remote: SocketAddr,
    /// Our local address.
    pub local: SocketAddr,
}

/// What [`stun_username`] found in a datagram.
#[derive(Debug, Clone)]
pub struct StunRequest<'a> {
    /// The local (our) ufrag: before the colon.
    pub local_ufrag: &'a str,
    /// The parsed message, to check integrity.
    pub message: Message<'a>,
}

/// Parses a STUN Binding request and returns its local ufrag. `None` for anything else
/// (not STUN, not a Binding request, no USERNAME, malformed).
pub fn stun_request(data: &[u8]) -> Option<StunRequest<'_>> {
    // RFC 7983: STUN starts with 0..=3 in the first byte.
    if data.first().is_none_or(|b| *b > 3) {
        return None;
    }
    let message = Message::parse(data).ok()?;
    if message.class() != Class::Request || message.method() != Method::BINDING {
        return None;
    }
    let username = message.get_str(attr::USERNAME).ok()??;
    let (local_ufrag, _) = username.split_once(':')?;
    Some(StunRequest {
        local_ufrag,
        message,
    })
}

/// Whether `request` carries a MESSAGE-INTEGRITY valid for `password` (short-term, RFC 8489
/// §9.1).
pub fn authenticated(request: &StunRequest<'_>, password: &str) -> bool {
    request
        .message
        .verify_integrity(&IntegrityKey::short_term(password))
        .is_ok()
}

/// The two lookup tables. Keys are chosen by remote parties, hence the keyed hasher.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: HashMap<String, u64, RandomState>,
    by_tuple: HashMap<Tuple, u64, RandomState>,
    tuples_of: HashMap<u64, VecDeque<Tuple>, RandomState>,
}

impl Demux {
    /// Register a peer's local ufrag.
    pub fn insert_ufrag(&mut self, ufrag: &str, peer: u64) {
        self.by_ufrag.insert(ufrag.to_string(), peer);
    }

    /// A peer's local ufrag changed (ICE restart); its learned tuples stay.
    pub fn replace_ufrag(&mut self, old: &str, new: &str, peer: u64) {
        if self.by_ufrag.get(old) == Some(&peer) {
            self.by_ufrag.remove(old);
        }
        self.by_ufrag.insert(new.to_string(), peer);
    }

    /// The peer whose local ufrag this is.
    pub fn by_ufrag(&self, ufrag: &str) -> Option<u64> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// The peer that owns this 5-tuple.
    pub fn by_tuple(&self, tuple: &Tuple) -> Option<u64> {
        self.by_tuple.get(tuple).copied()
    }

    /// Remember that `tuple` belongs to `peer` (after an authenticated request). A tuple
    /// that belonged to another peer moves; a peer keeps at most [`MAX_TUPLES_PER_PEER`].
    pub fn learn(&mut self, tuple: Tuple, peer: u64) {
        match self.by_tuple.insert(tuple, peer) {
            Some(old) if old == peer => return,
            Some(old) => {
                if let Some(list) = self.tuples_of.get_mut(&old) {
                    list.retain(|t| *t != tuple);
                }
            }
            None => {}
        }
        let list = self.tuples_of.entry(peer).or_default();
        list.push_back(tuple);
        while list.len() > MAX_TUPLES_PER_PEER {
            if let Some(oldest) = list.pop_front() {
                self.by_tuple.remove(&oldest);
            }
        }
    }

    /// Moves a peer's ufrag and learned tuples to another key (a retired PeerConnection).
    pub fn rekey(&mut self, ufrag: &str, old: u64, new: u64) {
        if self.by_ufrag.get(ufrag) == Some(&old) {
            self.by_ufrag.insert(ufrag.to_string(), new);
        }
        if let Some(list) = self.tuples_of.remove(&old) {
            for t in &list {
                if self.by_tuple.get(t) == Some(&old) {
                    self.by_tuple.insert(*t, new);
                }
            }
            self.tuples_of.insert(new, list);
        }
    }

    /// Forget everything about a peer.
    pub fn remove_peer(&mut self, ufrag: &str, peer: u64) {
        if self.by_ufrag.get(ufrag) == Some(&peer) {
            self.by_ufrag.remove(ufrag);
        }
        for t in self.tuples_of.remove(&peer).unwrap_or_default() {
            if self.by_tuple.get(&t) == Some(&peer) {
                self.by_tuple.remove(&t);
            }
        }
    }

    /// Number of learned tuples (for tests and gauges).
    pub fn tuple_count(&self) -> usize {
        self.by_tuple.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsunagi_stun::{MessageEncoder, TransactionId};

    fn tuple(port: u16) -> Tuple {
        Tuple {
            proto: Protocol::Udp,
            remote: ([192, 0, 2, 1], port).into(),
            local: ([198, 51, 100, 1], 3478).into(),
        }
    }

    fn binding(username: &str, password: &str) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let mut enc = MessageEncoder::new(
            &mut buf,
            Class::Request,
            Method::BINDING,
            TransactionId::new([1; 12]),
        )
        .unwrap();
        enc.string(attr::USERNAME, username).unwrap();
        enc.message_integrity(&IntegrityKey::short_term(password))
            .unwrap();
        enc.fingerprint().unwrap();
        let n = enc.finish();
        buf[..n].to_vec()
    }

    #[test]
    fn ufrag_from_username_and_integrity() {
        let req = binding("sfuufrag:browser", "secretpassword");
        let r = stun_request(&req).unwrap();
        assert_eq!(r.local_ufrag, "sfuufrag");
        assert!(authenticated(&r, "secretpassword"));
        assert!(!authenticated(&r, "wrong"));
    }

    #[test]
    fn non_stun_and_garbage_are_none() {
        assert!(stun_request(&[]).is_none());
        assert!(stun_request(&[0x80, 0x60, 0, 1]).is_none()); // RTP
        assert!(stun_request(&[22, 254, 253]).is_none()); // DTLS
        assert!(stun_request(&[0, 1, 0, 0]).is_none()); // truncated STUN
        let no_colon = binding("nocolon", "x");
        assert!(stun_request(&no_colon).is_none());
    }

    #[test]
    fn tuples_are_learned_moved_bounded_and_removed() {
        let mut d = Demux::default();
        d.insert_ufrag("a", 1);
        d.insert_ufrag("b", 2);
        assert_eq!(d.by_ufrag("a"), Some(1));
        d.learn(tuple(1), 1);
        d.learn(tuple(1), 1);
        assert_eq!(d.tuple_count(), 1);
        assert_eq!(d.by_tuple(&tuple(1)), Some(1));
        // The same address reused by another peer moves to it.
        d.learn(tuple(1), 2);
        assert_eq!(d.by_tuple(&tuple(1)), Some(2));
        for p in 100..100 + MAX_TUPLES_PER_PEER as u16 + 5 {
            d.learn(tuple(p), 1);
        }
        assert_eq!(d.tuple_count(), MAX_TUPLES_PER_PEER + 1);
        assert_eq!(d.by_tuple(&tuple(100)), None, "oldest forgotten");
        d.remove_peer("a", 1);
        assert_eq!(d.by_ufrag("a"), None);
        assert_eq!(d.tuple_count(), 1);
        assert_eq!(d.by_tuple(&tuple(1)), Some(2));
    }
}
