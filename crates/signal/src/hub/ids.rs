//! Values keyed by the runtime's seed: the hasher of the maps, the generator of peer ids
//! and resume tokens; and the hub's Unix time.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;

pub(super) type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// The hasher of the maps keyed by client-chosen strings: keyed by the runtime's seed
/// (domain-separated from peer ids and tokens), so the hub takes no OS randomness and
/// an attacker cannot predict collisions.
pub(super) fn hasher(seed: &[u8; 32]) -> ahash::RandomState {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(seed)
        .expect("HMAC takes keys of any length (RFC 2104 §2)");
    m.update(b"tsunagi-signal map hasher");
    let k: [u8; 32] = m.finalize().into_bytes().into();
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&k[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    ahash::RandomState::with_seeds(word(0), word(1), word(2), word(3))
}

pub(super) fn map<K, V>(hasher: &ahash::RandomState) -> Map<K, V> {
    HashMap::with_hasher(hasher.clone())
}

/// A pseudo-random function keyed by the runtime's seed: HMAC-SHA256(seed, counter).
/// Peer ids and resume tokens come from it, so they are unpredictable without the seed
/// and the hub needs no OS randomness.
pub(super) struct Prf {
    pub(super) key: [u8; 32],
    pub(super) counter: u64,
}

impl Prf {
    fn next(&mut self) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length (RFC 2104 §2)");
        m.update(&self.counter.to_be_bytes());
        self.counter = self.counter.wrapping_add(1);
        m.finalize().into_bytes().into()
    }
}

impl<I: IceServerSource> Hub<I> {
    pub(super) fn unix_ms(&self, now: Instant) -> u64 {
        let (t0, ms0) = self.epoch;
        match now.checked_duration_since(t0) {
            Some(d) => ms0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => ms0.saturating_sub(
                u64::try_from(t0.saturating_duration_since(now).as_millis()).unwrap_or(0),
            ),
        }
    }

    /// `p_` and 12 hex digits (48 bits), unique among current peers.
    pub(super) fn new_peer_id(&mut self) -> Option<Arc<str>> {
        for _ in 0..8 {
            let bytes = self.prf.next();
            let id = format!("p_{}", hex::encode(&bytes[..6]));
            if !self.peer_ids.contains_key(id.as_str()) {
                return Some(id.into());
            }
        }
        None
    }

    /// `r_` and 32 base64url characters (192 bits).
    pub(super) fn new_resume_token(&mut self) -> Arc<str> {
        let bytes = self.prf.next();
        format!("r_{}", URL_SAFE_NO_PAD.encode(&bytes[..24])).into()
    }
}
